"""The offline OpenAI-compatible LLM provider: scripted chat completions, fault injection, a journal.

Endpoints on the API port (`base_url` ends in `/v1`):

* `POST /v1/chat/completions`: messages (with assistant `tool_calls` and `tool`
  messages), function `tools`, `response_format` `json_schema` / `json_object`.
  Answers come from scenario files (see `agentkeel.dev.offline.scenarios`). Every
  answer carries `usage`. `stream: true` is refused (400).
* `GET /v1/models`, `GET /v1/models/{id}`.

Control endpoints, on the API port (while it is up) and on the optional
control port (always):

* `GET /_control/health`
* `GET /_control/faults`, `PUT /_control/faults` (replace), `PATCH /_control/faults` (merge)
  with a `FaultConfig` JSON (see `agentkeel.dev.offline.faults`)
* `POST /_control/reset`: no faults, empty journal
* `GET /_control/journal[?since=SEQ]`, `DELETE /_control/journal` (see `agentkeel.dev.offline.journal`)
* `GET /_control/scenarios`: the loaded scenarios

Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}`:
type `server_error` for 5xx, `rate_limit_exceeded` for 429 (with `Retry-After`,
`retry-after-ms` and `x-ratelimit-reset-requests`), `invalid_request_error`
otherwise; an over-long conversation answers 400 `context_length_exceeded`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from agentkeel.dev.offline.faults import FaultConfig, FaultState
from agentkeel.dev.offline.http11 import DROP, HANG, Action, Connection, Listener, Request, Response
from agentkeel.dev.offline.journal import Journal, JournalEntry, Outcome
from agentkeel.dev.offline.scenarios import ChatContext, Scenario, answer, load_scenarios, prompt_text
from agentkeel.logs import get_logger
from agentkeel.names import AGENT_HEADER, OFFLINE_LLM_PORT
from agentkeel.validation import format_validation_error

log = get_logger(__name__)

DEFAULT_MODELS = ("scripted",)
"""Models listed by `GET /v1/models`; any model name is accepted and echoed."""
OWNER = "agentkeel-offline"
_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def error_payload(status: int, message: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON for `status`."""
    if status == 429:
        kind, default_code = "rate_limit_exceeded", "rate_limit_exceeded"
        default = "Rate limit reached (offline provider, injected)."
    elif status >= 500:
        kind, default_code = "server_error", "server_error"
        default = f"The server had an error while processing your request (offline provider, {status})."
    else:
        kind, default_code = "invalid_request_error", None
        default = f"Invalid request ({status})."
    return {
        "error": {"message": message or default, "type": kind, "param": None, "code": code or default_code}
    }


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class OfflineProvider:
    """The provider, in process: `async with OfflineProvider(port=0) as p: ... p.base_url ...`.

    Args:
        host: Address to bind.
        port: API port (0 picks a free one; `port` holds the real one after `start`).
        control_port: Optional second port serving only `/_control/*`, which stays up while the
            API port refuses connections (0 picks a free one; None: no control port).
        scenario_paths: Scenario files or folders, matched in order (an app's `scenarios`).
        faults: Initial faults (a `FaultConfig` or its fields as a dict).
        journal_bodies: Keep each request's body in the journal (False: counts and sizes only).

    Raises:
        ScenarioError: a scenario file is missing or invalid (at construction, so startup fails).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = OFFLINE_LLM_PORT,
        *,
        control_port: int | None = None,
        scenario_paths: Iterable[Path | str] = (),
        faults: FaultConfig | Mapping[str, Any] | None = None,
        journal_bodies: bool = True,
    ) -> None:
        self.host = host
        self.scenarios: list[Scenario] = load_scenarios(scenario_paths)
        config = faults if isinstance(faults, FaultConfig) else FaultConfig.model_validate(dict(faults or {}))
        self.faults = FaultState(config)
        self.journal_store = Journal(keep_bodies=journal_bodies)
        self._api = Listener(self._handle_api_port, host, port)
        self._control: Listener | None = (
            Listener(self._handle_control_port, host, control_port) if control_port is not None else None
        )
        self._faults_lock = asyncio.Lock()
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The API port."""
        return self._api.port

    @property
    def control_port(self) -> int | None:
        """The control port, if any."""
        return self._control.port if self._control else None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in `/v1`."""
        return f"http://{_url_host(self.host)}:{self.port}/v1"

    @property
    def control_url(self) -> str:
        """Base URL of the control API: the control port when there is one, else the API port."""
        port = self.control_port if self.control_port is not None else self.port
        return f"http://{_url_host(self.host)}:{port}"

    async def start(self) -> None:
        """Bind the ports and serve (returns at once; serving happens on the running loop)."""
        if self._started:
            return
        await self._api.start()
        try:
            if self._control is not None:
                await self._control.start()
        except BaseException:
            await self._api.stop()
            raise
        self._started = True
        if self._refusing_config(self.faults.config):
            await self._api.stop_accepting()
        log.info(
            "offline LLM provider listening",
            base_url=self.base_url,
            control_url=self.control_url,
            scenarios=[s.name for s in self.scenarios],
        )

    async def stop(self) -> None:
        """Close every socket and connection, hanging requests included."""
        await self._api.stop()
        if self._control is not None:
            await self._control.stop()
        self._started = False

    async def __aenter__(self) -> OfflineProvider:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ in-process control

    async def set_faults(self, **fields: Any) -> dict[str, Any]:
        """Replace the fault configuration (like `PUT /_control/faults`) and return it."""
        await self.apply_faults(FaultConfig.model_validate(fields))
        return self.faults.public()

    async def apply_faults(self, config: FaultConfig) -> None:
        """Install `config`, closing or reopening the API socket when `refuse` starts or ends."""
        async with self._faults_lock:
            was = self._refusing_config(self.faults.config)
            self.faults.replace(config)
            now = self._refusing_config(config)
            if self._started and now and not was:
                await self._api.stop_accepting()
                log.info("offline LLM provider down: refusing connections", port=self.port)
            elif self._started and was and not now:
                await self._api.start()
                log.info("offline LLM provider accepting connections again", port=self.port)

    async def reset(self) -> None:
        """No faults, empty journal."""
        await self.apply_faults(FaultConfig())
        self.journal_store.clear()

    async def journal(self, since: int = 0) -> list[JournalEntry]:
        """The journal entries after `since`."""
        return self.journal_store.entries(since)

    async def clear_journal(self) -> None:
        """Empty the journal."""
        self.journal_store.clear()

    @staticmethod
    def _refusing_config(config: FaultConfig) -> bool:
        return config.down and config.down_mode == "refuse"

    # ------------------------------------------------------------------ routing

    async def _handle_api_port(self, request: Request, conn: Connection) -> Response | Action:
        path = request.path
        if path.startswith("/_control/"):
            return await self._handle_control(request)
        if path == "/v1" or path.startswith("/v1/"):
            return await self._handle_v1(request)
        return Response.json(404, error_payload(404, f"Unknown path {path}", "not_found"))

    async def _handle_control_port(self, request: Request, conn: Connection) -> Response | Action:
        if request.path.startswith("/_control/"):
            return await self._handle_control(request)
        return Response.json(404, error_payload(404, "The control port serves /_control/* only", "not_found"))

    async def _handle_control(self, request: Request) -> Response:
        method, path = request.method, request.path.rstrip("/")
        try:
            if path == "/_control/health" and method == "GET":
                return Response.json(
                    200,
                    {"status": "ok", "base_url": self.base_url, "accepting": self._api.accepting},
                )
            if path == "/_control/faults":
                if method == "GET":
                    return Response.json(200, self.faults.public())
                if method in ("PUT", "PATCH"):
                    fields = _json_object(request.body)
                    if method == "PATCH":
                        fields = {**self.faults.public(), **fields}
                    await self.apply_faults(FaultConfig.model_validate(fields))
                    return Response.json(200, self.faults.public())
            if path == "/_control/reset" and method == "POST":
                await self.reset()
                return Response.json(200, self.faults.public())
            if path == "/_control/journal":
                if method == "GET":
                    since = int(request.query.get("since", "0") or 0)
                    return Response.json(200, self.journal_store.entries(since))
                if method == "DELETE":
                    cleared = len(self.journal_store)
                    self.journal_store.clear()
                    return Response.json(200, {"cleared": cleared})
            if path == "/_control/scenarios" and method == "GET":
                return Response.json(
                    200,
                    [{"name": s.name, "source": s.source, "rules": len(s.rules)} for s in self.scenarios],
                )
        except (ValidationError, ValueError) as exc:
            message = (
                format_validation_error(exc, top="(body)") if isinstance(exc, ValidationError) else str(exc)
            )
            return Response.json(400, error_payload(400, message, "invalid_faults"))
        return Response.json(404, error_payload(404, f"No control endpoint {method} {path}", "not_found"))

    async def _handle_v1(self, request: Request) -> Response | Action:
        started, ts = time.monotonic(), time.time()
        body = _parse_body(request.body)
        agent = _agent_of(request.headers, body)

        def record(status: int | None, outcome: Outcome) -> None:
            self.journal_store.record(
                ts=ts,
                method=request.method,
                path=request.path,
                headers=request.headers,
                body=body,
                status=status,
                latency_ms=(time.monotonic() - started) * 1000,
                outcome=outcome,
                agent=agent,
                body_bytes=len(request.body),
            )

        decision = self.faults.decide()
        if decision.action in ("drop", "refuse"):
            # `refuse` reaching here means a request on a connection opened before the socket closed.
            record(None, "dropped")
            return DROP
        if decision.action == "hang":
            record(None, "hang")
            return HANG
        if decision.latency_s > 0:
            await asyncio.sleep(decision.latency_s)
        if decision.action == "error":
            assert decision.status is not None
            response = self._error(decision.status)
        else:
            response = self._route_v1(request, body, agent)
        record(response.status, "ok" if response.status < 400 else "error")
        log.debug(
            "offline LLM request",
            path=request.path,
            agent=agent,
            status=response.status,
            outcome=decision.action,
        )
        return response

    def _error(self, status: int, message: str | None = None, code: str | None = None) -> Response:
        headers: list[tuple[str, str]] = [("x-request-id", f"req_{uuid.uuid4().hex[:24]}")]
        if status == 429:
            wait = self.faults.config.retry_after_s
            headers += [
                ("retry-after", _seconds(max(wait, 0))),
                ("retry-after-ms", str(int(wait * 1000))),
                ("x-ratelimit-reset-requests", f"{_seconds(wait)}s"),
                ("x-ratelimit-remaining-requests", "0"),
            ]
        return Response.json(status, error_payload(status, message, code), headers)

    def _route_v1(self, request: Request, body: Any, agent: str | None) -> Response:
        path, method = request.path.rstrip("/"), request.method
        if path == "/v1/chat/completions":
            if method != "POST":
                return Response.json(405, error_payload(405, "Use POST", "method_not_allowed"))
            return self._chat(request, body)
        if path == "/v1/models" and method == "GET":
            return Response.json(200, {"object": "list", "data": [_model(m) for m in DEFAULT_MODELS]})
        if path.startswith("/v1/models/") and method == "GET":
            return Response.json(200, _model(path.removeprefix("/v1/models/")))
        return Response.json(404, error_payload(404, f"Unknown path {method} {path}", "not_found"))

    def _chat(self, request: Request, body: Any) -> Response:
        problem = _validate_chat(body)
        if problem is not None:
            return self._error(400, problem[1], problem[0])
        limit = self.faults.config.context_limit_chars
        size = len(prompt_text(body))
        if size > limit:
            return self._error(
                400,
                f"This model's maximum context length is {limit} characters; the messages have {size}.",
                "context_length_exceeded",
            )
        result = answer(self.scenarios, body, request.headers.get(AGENT_HEADER.lower()))
        if result.status is not None:
            return self._error(result.status, result.error_message)
        message: dict[str, Any] = {"role": "assistant", "content": result.content, "refusal": None}
        if result.tool_calls:
            message["tool_calls"] = result.tool_calls
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_offline",
            "choices": [
                {"index": 0, "message": message, "finish_reason": result.finish_reason, "logprobs": None}
            ],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }
        headers = [
            ("x-request-id", f"req_{uuid.uuid4().hex[:24]}"),
            ("x-keel-rule", result.rule or "default"),
        ]
        return Response.json(200, payload, headers)


# --------------------------------------------------------------------------- helpers


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNER}


def _parse_body(raw: bytes) -> Any:
    """The JSON body, or the raw text when it is not JSON (journaled as is), or None when empty."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


def _json_object(raw: bytes) -> dict[str, Any]:
    body = _parse_body(raw)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


def _agent_of(headers: Mapping[str, str], body: Any) -> str | None:
    header = headers.get(AGENT_HEADER.lower())
    if header:
        return header
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        return ChatContext.from_request(body).agent
    return None


def _validate_chat(body: Any) -> tuple[str, str] | None:
    """`(code, message)` of the first problem of a chat-completions body, or None."""
    if not isinstance(body, dict):
        return "invalid_json", "The body must be a JSON object."
    if body.get("stream"):
        return "unsupported_parameter", "Streaming is not supported by the offline provider (stream: true)."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "missing_model", "You must provide a model parameter."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "invalid_messages", "'messages' must be a non-empty array."
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return "invalid_messages", f"messages[{i}]: expected an object with a valid role."
        if m["role"] == "tool" and not m.get("tool_call_id"):
            return "invalid_messages", f"messages[{i}]: a tool message needs tool_call_id."
        for j, call in enumerate(m.get("tool_calls") or []):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                return "invalid_messages", f"messages[{i}].tool_calls[{j}]: expected a function call."
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "invalid_tools", "'tools' must be an array."
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or tool.get("type") != "function" or not fn.get("name"):
                return "invalid_tools", f"tools[{i}]: expected a function tool with a name."
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            return "invalid_response_format", "response_format.type must be text, json_object or json_schema."
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not spec.get("name"):
                return "invalid_response_format", "response_format.json_schema needs a name."
            if "schema" in spec and not isinstance(spec["schema"], dict):
                return "invalid_response_format", "response_format.json_schema.schema must be an object."
    return None
