"""The `call_llm` activity: one chat completion through an alias's fallback chain, behind circuit breakers.

`LLMActivities` is built once per worker from `LLMConfig`. It owns one
`AsyncOpenAI(max_retries=0)` per provider, each on its own `httpx2` connection
pool, so connections are reused and Temporal alone owns retries: one request
per provider per activity attempt.

How a call walks the chain of its alias (`provider:model`, in order):

* a provider whose breaker is open is skipped without a request;
* a provider failure (5xx, 408, timeout, connection error) is recorded on that
  provider's breaker and the call falls over to the next provider in the same
  attempt, so a chain survives a dead primary; when the last provider fails
  the activity raises the retryable `LLMUnavailable`;
* any other answer ends the walk: a completion is returned, a 429 raises
  `LLMRateLimited` (its `next_retry_delay` honours `Retry-After`), another 4xx
  raises the non-retryable `LLMBadRequest` / `LLMContextTooLong`; the provider
  is up, so these count as successes for its breaker;
* when every provider was skipped, the activity raises a retryable `CircuitOpen`
  whose `next_retry_delay` is the time until the first breaker half-opens.

API keys are read from the environment when the clients are built, never put
in a request, result, log line or error.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletion
from temporalio import activity
from temporalio.exceptions import ApplicationError

from agentkeel import errors
from agentkeel.activities.breakers import PROCESS_BREAKERS, BreakerRegistry, ProviderBreaker
from agentkeel.activities.heartbeat import HEARTBEAT_EVERY_S, heartbeating
from agentkeel.activities.llm_config import ChainLink, LLMConfig, ProviderConfig, UnknownAliasError
from agentkeel.activities.llm_errors import is_provider_failure, to_application_error
from agentkeel.contracts import ChatMessage, LLMRequest, LLMResult, ToolCall
from agentkeel.logs import get_logger
from agentkeel.names import AGENT_HEADER, CALL_LLM_ACTIVITY, CORRELATION_HEADER, IDEMPOTENCY_HEADER

log = get_logger(__name__)

MAX_RESULT_BYTES = 1_500_000
"""Temporal refuses payloads over 2 MB: a bigger answer fails for good instead of retrying forever."""
MIN_CIRCUIT_WAIT_S = 0.5
"""Least `next_retry_delay` of `CircuitOpen` (a half-open breaker whose probe is in flight has 0 left)."""
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]")


def wire_message(message: ChatMessage) -> dict[str, Any]:
    """A `ChatMessage` as chat-completions JSON."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name and message.role in ("system", "user", "assistant"):
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    return out


def completion_params(request: LLMRequest, model: str) -> dict[str, Any]:
    """The `chat.completions.create` arguments of `request` for `model` (headers aside)."""
    params: dict[str, Any] = {"model": model, "messages": [wire_message(m) for m in request.messages]}
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in request.tools
        ]
    if request.response_schema is not None:
        title = str(request.response_schema.get("title") or "response")
        params["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": _SCHEMA_NAME.sub("_", title)[:64], "schema": request.response_schema},
        }
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.max_tokens is not None:
        params["max_tokens"] = request.max_tokens
    return params


def request_headers(request: LLMRequest) -> dict[str, str]:
    """Correlation, idempotency and agent headers of `request`."""
    headers = {CORRELATION_HEADER: request.correlation_id, IDEMPOTENCY_HEADER: request.idempotency_key}
    if request.agent:
        headers[AGENT_HEADER] = request.agent
    return headers


class LLMActivities:
    """The LLM activities of one worker: provider clients and circuit breakers, built once.

    Args:
        config: Providers and model aliases (`LLMConfig.load(settings)`).
        breakers: Breaker registry; default the process-wide one, shared by every activity in the process.
        env: Where API keys are read from (default `os.environ`), here and only here.

    Raises:
        LLMConfigError: a provider's `api_key_env` names an unset variable.
    """

    def __init__(
        self,
        config: LLMConfig,
        breakers: BreakerRegistry | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.config = config
        self.breakers = PROCESS_BREAKERS if breakers is None else breakers
        self._clients: dict[str, openai.AsyncOpenAI] = {}
        for name, provider in config.providers.items():
            try:
                key = provider.api_key(env)
            except ValueError:
                if not self._used(name):
                    continue  # a provider no alias uses may lack its key
                raise
            pool = httpx2.AsyncClient(
                limits=httpx2.Limits(
                    max_connections=provider.max_connections,
                    max_keepalive_connections=provider.max_connections,
                ),
                timeout=provider.timeout_s,
            )
            self._clients[name] = openai.AsyncOpenAI(
                base_url=provider.base_url,
                api_key=key.get_secret_value(),
                max_retries=0,  # Temporal owns retries
                timeout=provider.timeout_s,
                http_client=pool,
            )

    def _used(self, provider: str) -> bool:
        return any(link.provider == provider for alias in self.config.models.values() for link in alias.chain)

    async def aclose(self) -> None:
        """Close every provider's connection pool."""
        for client in self._clients.values():
            await client.close()

    def breaker(self, provider: ProviderConfig) -> ProviderBreaker:
        """The breaker of `provider` (created on first use)."""
        return self.breakers.get(provider.name, provider.fail_max, provider.reset_timeout_s)

    @activity.defn(name=CALL_LLM_ACTIVITY)
    async def call_llm(self, request: LLMRequest) -> LLMResult:
        """One chat completion for the alias `request.model`, failing over along its chain.

        Raises:
            ApplicationError: `LLMRateLimited`, `LLMUnavailable`, `CircuitOpen` (retryable);
                `LLMBadRequest`, `LLMContextTooLong`, `LLMResponseTooLarge`, `UnknownModelAlias` (not).
        """
        if request.conversation is not None:
            # Only the new messages came: without the store layer the model would see a fragment.
            raise ApplicationError(
                "this request's conversation is in the conversation store, and this worker has no store "
                "layer: build the worker with AgentkeelPlugin (Worker(..., plugins=[AgentkeelPlugin()]))",
                type=errors.CONVERSATION_STORE,
                non_retryable=True,
            )
        try:
            chain = self.config.resolve(request.model)
        except UnknownAliasError as exc:
            raise ApplicationError(str(exc), type=errors.UNKNOWN_MODEL_ALIAS, non_retryable=True) from None
        attempt = activity.info().attempt
        skipped: list[ProviderBreaker] = []
        failures: list[ApplicationError] = []
        for link in chain:
            provider = self.config.providers[link.provider]
            breaker = self.breaker(provider)
            if not breaker.admit():
                skipped.append(breaker)
                log.info("llm provider skipped: circuit open", provider=provider.name, model=link.model)
                continue
            try:
                return await self._complete(request, provider, link, breaker, attempt)
            except _ProviderDown as down:
                failures.append(down.error)
                log.warning(
                    "llm provider failed; trying the next one in the chain"
                    if link != chain[-1]
                    else "llm provider failed",
                    provider=provider.name,
                    model=link.model,
                    error=down.error.message,
                    correlation_id=request.correlation_id,
                )
        if failures:
            last = failures[-1]
            tried = len(failures) + len(skipped)
            if tried > 1:
                raise ApplicationError(
                    f"every provider of {request.model!r} failed or is open: "
                    + "; ".join(f.message for f in failures),
                    *last.details,
                    type=errors.LLM_UNAVAILABLE,
                )
            raise last
        wait = max(min(b.seconds_until_half_open() for b in skipped), MIN_CIRCUIT_WAIT_S)
        raise ApplicationError(
            f"every provider of {request.model!r} has an open circuit breaker "
            f"({', '.join(b.provider for b in skipped)}); next probe in {wait:.1f}s",
            {"providers": [b.provider for b in skipped], "retry_in_s": round(wait, 3)},
            type=errors.CIRCUIT_OPEN,
            next_retry_delay=timedelta(seconds=wait),
        )

    async def _complete(
        self,
        request: LLMRequest,
        provider: ProviderConfig,
        link: ChainLink,
        breaker: ProviderBreaker,
        attempt: int,
    ) -> LLMResult:
        client = self._clients.get(provider.name)
        if client is None:
            raise ApplicationError(
                f"provider {provider.name!r} has no API key ({provider.api_key_env} is unset)",
                type=errors.LLM_BAD_REQUEST,
                non_retryable=True,
            )
        started = time.monotonic()
        # One heartbeat loop per activity (see activities/heartbeat.py): it says what the call waits for.
        async with heartbeating(HEARTBEAT_EVERY_S, detail=f"waiting for {link}"):
            try:
                # `chat.completions.create` would first walk the whole request through the SDK's
                # TypedDict transform, which grows with the conversation and cost about a quarter
                # of the activity's CPU in `make bench`; our parameters are plain JSON already, so
                # the same endpoint is posted directly and parsed into the same `ChatCompletion`.
                response = await client.post(
                    "/chat/completions",
                    cast_to=ChatCompletion,
                    body=completion_params(request, link.model),
                    options={"headers": request_headers(request)},
                )
            except openai.OpenAIError as exc:
                error = to_application_error(exc, provider.name, link.model)
                if is_provider_failure(exc):
                    breaker.record_failure()
                    raise _ProviderDown(error) from None
                breaker.record_success()  # the provider answered: it is up
                log.warning(
                    "llm call refused",
                    provider=provider.name,
                    model=link.model,
                    error_type=error.type,
                    error=error.message,
                    correlation_id=request.correlation_id,
                )
                raise error from None
            except BaseException:
                breaker.release()  # cancelled mid-request: no verdict on the provider
                raise
        latency_ms = (time.monotonic() - started) * 1000
        try:
            result = _result(response, provider, link, attempt, latency_ms)
        except (IndexError, AttributeError, TypeError) as exc:  # no choices, or not a completion
            breaker.record_failure()
            raise _ProviderDown(
                ApplicationError(
                    f"{link} answered something that is not a chat completion: {exc}",
                    {"provider": provider.name, "model": link.model, "status": 200},
                    type=errors.LLM_UNAVAILABLE,
                )
            ) from None
        breaker.record_success()
        size = len(result.model_dump_json())
        if size > MAX_RESULT_BYTES:
            raise ApplicationError(
                f"the answer of {link} is {size} bytes, over the {MAX_RESULT_BYTES}-byte limit",
                {"provider": provider.name, "model": link.model, "bytes": size},
                type=errors.LLM_RESPONSE_TOO_LARGE,
                non_retryable=True,
            )
        log.info(
            "llm call",
            provider=provider.name,
            model=result.model,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost_usd=result.cost_usd,
            latency_ms=result.latency_ms,
            finish_reason=result.finish_reason,
            tool_calls=len(result.tool_calls),
            attempt=attempt,
            correlation_id=request.correlation_id,
        )
        return result


class _ProviderDown(Exception):
    """A provider failure: the chain falls over to its next provider."""

    def __init__(self, error: ApplicationError) -> None:
        super().__init__(error.message)
        self.error = error


def _result(
    response: Any, provider: ProviderConfig, link: ChainLink, attempt: int, latency_ms: float
) -> LLMResult:
    choice = response.choices[0]
    message = choice.message
    usage = response.usage
    input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    calls: list[ToolCall] = []
    for call in message.tool_calls or []:
        function = getattr(call, "function", None)
        if function is None:  # a non-function (custom) tool call: not offered by agentkeel
            continue
        calls.append(ToolCall(id=call.id, name=function.name, arguments=function.arguments or "{}"))
    return LLMResult(
        content=message.content,
        tool_calls=calls,
        finish_reason=choice.finish_reason or ("tool_calls" if calls else "stop"),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=round(provider.cost(link.model, input_tokens, output_tokens), 10),
        provider=provider.name,
        model=link.model,
        attempt=attempt,
        latency_ms=round(latency_ms, 2),
    )
