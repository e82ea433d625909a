"""The `call_llm` activity over real HTTP against the offline provider.

Unit tests drive the activity with `ActivityEnvironment` (breakers, failover, error mapping);
integration tests run it the way production does, inside a real worker on the dev server,
with the platform's retry policy and timeouts, and read what reached the provider from its journal.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import httpx2
import openai
import pybreaker
import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import agentkeel.activities.llm as llm_module
from agentkeel import errors
from agentkeel.activities.breakers import BreakerRegistry, ProviderBreaker
from agentkeel.activities.llm import LLMActivities
from agentkeel.activities.llm_config import LLMConfig
from agentkeel.activities.llm_errors import (
    MAX_RETRY_AFTER_S,
    is_provider_failure,
    parse_duration,
    retry_after_seconds,
    to_application_error,
)
from agentkeel.contracts import ChatMessage, LLMRequest, LLMResult, ToolSchema
from agentkeel.names import CALL_LLM_ACTIVITY
from agentkeel.settings import Settings
from agentkeel.temporal import connect
from agentkeel.workflows.policies import LLM_HEARTBEAT, LLM_RETRY, LLM_START_TO_CLOSE
from benchmarks.llm_faults import run_fault_benchmark
from tests.fixtures.llm import OfflineLLM, free_port

CHAT_PATH = "/v1/chat/completions"


# --------------------------------------------------------------------------- helpers


@workflow.defn(name="TestCallLLMWorkflow")
class CallLLMWorkflow:
    """Runs one `call_llm` with the platform's retry policy and timeouts."""

    @workflow.run
    async def run(self, request: LLMRequest) -> LLMResult:
        return await workflow.execute_activity(
            CALL_LLM_ACTIVITY,
            request,
            result_type=LLMResult,
            start_to_close_timeout=LLM_START_TO_CLOSE,
            heartbeat_timeout=LLM_HEARTBEAT,
            retry_policy=LLM_RETRY,
        )


def make_config(
    providers: dict[str, dict[str, Any]], models: dict[str, list[str]] | None = None
) -> LLMConfig:
    raw = {"providers": providers, "models": {k: {"chain": v} for k, v in (models or {}).items()}}
    return LLMConfig.from_dict(raw, Settings(), env={})


def single(llm: OfflineLLM, **provider: Any) -> LLMConfig:
    """One provider `p` at the offline provider, alias `default` -> `p:scripted`."""
    return make_config(
        {"p": {"base_url": llm.base_url, **provider}},
        {"default": ["p:scripted"]},
    )


def request(text: str = "hello", **fields: Any) -> LLMRequest:
    unique = uuid.uuid4().hex[:8]
    return LLMRequest(
        messages=[
            ChatMessage(role="system", content="You are a test."),
            ChatMessage(role="user", content=text),
        ],
        correlation_id=fields.pop("correlation_id", f"corr-{unique}"),
        idempotency_key=fields.pop("idempotency_key", f"wf-{unique}:1"),
        **fields,
    )


def chats(llm: OfflineLLM) -> list[dict[str, Any]]:
    return [e for e in llm.control.journal() if e["path"] == CHAT_PATH]


class Recorder:
    """Collects heartbeats of an `ActivityEnvironment`."""

    def __init__(self) -> None:
        self.beats: list[tuple[float, tuple[Any, ...]]] = []

    def __call__(self, *details: Any) -> None:
        self.beats.append((time.monotonic(), details))


async def run_activity(
    acts: LLMActivities, req: LLMRequest, env: ActivityEnvironment | None = None
) -> LLMResult:
    return await (env or ActivityEnvironment()).run(acts.call_llm, req)


async def expect_error(acts: LLMActivities, req: LLMRequest) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await run_activity(acts, req)
    return info.value


@pytest.fixture
async def activities_for() -> AsyncIterator[Callable[[LLMConfig], LLMActivities]]:
    """Builds `LLMActivities` with a fresh breaker registry each; closes them afterwards."""
    made: list[LLMActivities] = []

    def build(config: LLMConfig) -> LLMActivities:
        acts = LLMActivities(config, BreakerRegistry(meter=lambda: None), env={})
        made.append(acts)
        return acts

    yield build
    for acts in made:
        await acts.aclose()


async def run_workflow(client: Client, task_queue: str, acts: LLMActivities, req: LLMRequest) -> LLMResult:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[CallLLMWorkflow],
        activities=[acts.call_llm],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        return await client.execute_workflow(
            CallLLMWorkflow.run,
            req,
            id=f"test-llm-{uuid.uuid4().hex[:12]}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=60),
        )


def application_cause(exc: WorkflowFailureError) -> ApplicationError:
    activity_error = exc.cause
    assert isinstance(activity_error, ActivityError), activity_error
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


# --------------------------------------------------------------------------- unit: error mapping


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2", 2.0),
        ("1.5", 1.5),
        ("2s", 2.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("1h2m3s", 3723.0),
        ("6m0s", 360.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.unit
@pytest.mark.parametrize("text", ["", "soon", "2 s", "-1", "1x", "nan"])
def test_parse_duration_refuses(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.unit
def test_retry_after_headers() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    http_date = format_datetime(
        __import__("datetime").datetime.fromtimestamp(now + 30, __import__("datetime").UTC), usegmt=True
    )
    assert retry_after_seconds({"retry-after": http_date}, now=now) == pytest.approx(30.0)
    assert retry_after_seconds({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}) == (
        MAX_RETRY_AFTER_S
    )
    assert retry_after_seconds({"x-ratelimit-reset-tokens": "250ms"}) == 0.25
    assert retry_after_seconds({"retry-after": "whenever", "x-ratelimit-reset-requests": "3s"}) == 3.0
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"content-type": "application/json"}) is None


def status_error(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> openai.APIStatusError:
    req = httpx2.Request("POST", "http://x/v1/chat/completions")
    response = httpx2.Response(status, headers=headers or {}, json={"error": body}, request=req)
    return openai.AsyncOpenAI(api_key="k", base_url="http://x/v1")._make_status_error_from_response(response)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retryable", "breaker", "delay"),
    [
        (
            429,
            {"message": "slow down", "code": "rate_limit_exceeded"},
            {"retry-after": "2"},
            "LLMRateLimited",
            True,
            False,
            2.0,
        ),
        (
            429,
            {"message": "slow down"},
            {"x-ratelimit-reset-requests": "1m30s"},
            "LLMRateLimited",
            True,
            False,
            90.0,
        ),
        (429, {"message": "slow down"}, {}, "LLMRateLimited", True, False, None),
        (500, {"message": "boom"}, {}, "LLMUnavailable", True, True, None),
        (503, {"message": "overloaded"}, {}, "LLMUnavailable", True, True, None),
        (408, {"message": "timeout"}, {}, "LLMUnavailable", True, True, None),
        (400, {"message": "bad"}, {}, "LLMBadRequest", False, False, None),
        (401, {"message": "who are you"}, {}, "LLMBadRequest", False, False, None),
        (403, {"message": "no"}, {}, "LLMBadRequest", False, False, None),
        (404, {"message": "no such model"}, {}, "LLMBadRequest", False, False, None),
        (422, {"message": "unprocessable"}, {}, "LLMBadRequest", False, False, None),
        (
            400,
            {"message": "too long", "code": "context_length_exceeded"},
            {},
            "LLMContextTooLong",
            False,
            False,
            None,
        ),
        (
            400,
            {"message": "This model's maximum context length is 8192 tokens"},
            {},
            "LLMContextTooLong",
            False,
            False,
            None,
        ),
    ],
)
def test_status_errors_map_to_stable_types(
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    kind: str,
    retryable: bool,
    breaker: bool,
    delay: float | None,
) -> None:
    exc = status_error(status, body, headers)
    mapped = to_application_error(exc, "prov", "m1")
    assert mapped.type == kind
    assert mapped.non_retryable is (not retryable)
    assert is_provider_failure(exc) is breaker
    assert mapped.next_retry_delay == (timedelta(seconds=delay) if delay is not None else None)
    assert mapped.details[0]["status"] == status
    assert body["message"] in mapped.message
    assert kind not in errors.LLM_NON_RETRYABLE or not retryable


@pytest.mark.unit
def test_transport_errors_are_provider_failures() -> None:
    req = httpx2.Request("POST", "http://x/v1/chat/completions")
    for exc in (openai.APITimeoutError(request=req), openai.APIConnectionError(request=req)):
        mapped = to_application_error(exc, "prov", "m1")
        assert mapped.type == errors.LLM_UNAVAILABLE
        assert not mapped.non_retryable
        assert is_provider_failure(exc)


# --------------------------------------------------------------------------- unit: breaker state machine


class FakeMeter:
    """Records gauge sets and counter adds (the `MetricMeter` methods the breakers use)."""

    def __init__(self) -> None:
        self.gauges: list[tuple[str, float, dict[str, Any]]] = []
        self.counters: list[tuple[str, int, dict[str, Any]]] = []

    def create_gauge_float(self, name: str, *_: Any) -> Any:
        meter = self

        class Gauge:
            def set(self, value: float, attrs: dict[str, Any]) -> None:
                meter.gauges.append((name, value, dict(attrs)))

        return Gauge()

    def create_counter(self, name: str, *_: Any) -> Any:
        meter = self

        class Counter:
            def add(self, value: int, attrs: dict[str, Any]) -> None:
                meter.counters.append((name, value, dict(attrs)))

        return Counter()


@pytest.mark.unit
async def test_breaker_state_machine_listener_and_metrics() -> None:
    meter = FakeMeter()
    breaker = ProviderBreaker("prov", fail_max=2, reset_timeout_s=0.3, meter=lambda: meter)  # type: ignore[arg-type,return-value]
    assert breaker.state == pybreaker.STATE_CLOSED and breaker.admit()
    breaker.record_failure()
    breaker.record_success()  # a success (or a 4xx) resets the count of failures in a row
    breaker.record_failure()
    assert breaker.state == pybreaker.STATE_CLOSED
    breaker.record_failure()
    assert breaker.state == pybreaker.STATE_OPEN
    assert 0.2 < breaker.seconds_until_half_open() <= 0.3
    assert not breaker.admit()
    await asyncio.sleep(0.35)
    assert breaker.seconds_until_half_open() == 0.0
    assert breaker.admit()  # the probe
    assert breaker.state == pybreaker.STATE_HALF_OPEN
    assert not breaker.admit()  # one probe at a time
    breaker.record_failure()  # the probe failed: open again for a full reset timeout
    assert breaker.state == pybreaker.STATE_OPEN and breaker.seconds_until_half_open() > 0.2
    await asyncio.sleep(0.35)
    assert breaker.admit()
    breaker.record_success()
    assert breaker.state == pybreaker.STATE_CLOSED and breaker.admit()
    assert breaker.listener.changes == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]
    assert [v for name, v, _ in meter.gauges if name == "keel_llm_breaker_state"] == [0, 2, 1, 2, 1, 0]
    assert all(attrs["provider"] == "prov" for _, _, attrs in meter.gauges)
    assert [(a["from"], a["to"]) for _, _, a in meter.counters] == breaker.listener.changes


@pytest.mark.unit
def test_registry_shares_one_breaker_per_provider() -> None:
    registry = BreakerRegistry(meter=lambda: None)
    first = registry.get("a", 5, 30)
    assert registry.get("a", 5, 30) is first
    assert registry.get("a", 3, 10) is first and (first.fail_max, first.reset_timeout_s) == (3, 10)
    assert registry.get("b", 5, 30) is not first
    assert registry.states() == {"a": "closed", "b": "closed"}


# --------------------------------------------------------------------------- unit: the activity over HTTP


@pytest.mark.unit
async def test_call_sends_tools_schema_headers_and_prices_the_usage(llm: OfflineLLM, activities_for) -> None:  # noqa: ANN001
    config = single(llm, prices={"scripted": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}})
    acts = activities_for(config)
    schema = {"title": "Answer", "type": "object", "properties": {"ok": {"type": "boolean"}}}
    req = request(
        "plan a trip",
        tools=[ToolSchema(name="search_flights", description="find flights")],
        response_schema=schema,
        temperature=0.2,
        max_tokens=64,
        agent="tester",
        correlation_id="corr-42",
        idempotency_key="keel-x:7",
    )
    result = await run_activity(acts, req)
    [entry] = chats(llm)
    assert entry["headers"]["x-correlation-id"] == "corr-42"
    assert entry["headers"]["idempotency-key"] == "keel-x:7"
    assert entry["headers"]["x-keel-agent"] == "tester"
    assert entry["headers"]["x-stainless-retry-count"] == "0"
    assert "offline" not in json.dumps(entry["headers"]).lower().replace("agentkeel-offline", "")
    body = entry["body"]
    assert body["model"] == "scripted"
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "search_flights",
                "description": "find flights",
                "parameters": req.tools[0].parameters,
            },
        }
    ]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": schema},
    }
    assert (body["temperature"], body["max_tokens"]) == (0.2, 64)
    assert result.provider == "p" and result.model == "scripted" and result.attempt == 1
    assert result.input_tokens > 0 and result.output_tokens > 0
    assert result.cost_usd == pytest.approx((result.input_tokens * 3.0 + result.output_tokens * 15.0) / 1e6)
    assert json.loads(result.content or "null") is not None  # a JSON answer for a JSON schema
    assert result.latency_ms > 0


@pytest.mark.unit
async def test_tool_calls_come_back_with_raw_json_arguments(llm: OfflineLLM, activities_for) -> None:  # noqa: ANN001
    acts = activities_for(single(llm))
    tool = ToolSchema(
        name="book_flight", parameters={"type": "object", "properties": {"origin": {"type": "string"}}}
    )
    result = await run_activity(
        acts, request("book it", tools=[tool], agent="flights")
    )  # travel scenario rule
    assert result.finish_reason == "tool_calls"
    [call] = result.tool_calls
    assert call.name == "book_flight" and call.id
    assert isinstance(call.arguments, str)
    assert json.loads(call.arguments)["destination"] == "Lisbon"


@pytest.mark.unit
async def test_breaker_opens_after_fail_max_then_sends_nothing_then_probes(
    llm: OfflineLLM,
    activities_for,  # noqa: ANN001
) -> None:
    acts = activities_for(single(llm, fail_max=2, reset_timeout_s=1.0))
    llm.control.set_faults(fail_next=[500, 502])
    for _ in range(2):
        assert (await expect_error(acts, request())).type == errors.LLM_UNAVAILABLE
    assert acts.breakers["p"].state == "open"
    assert len(chats(llm)) == 2

    blocked = await expect_error(acts, request())
    assert blocked.type == errors.CIRCUIT_OPEN and not blocked.non_retryable
    assert blocked.next_retry_delay is not None
    assert 0.5 <= blocked.next_retry_delay.total_seconds() <= 1.0
    assert len(chats(llm)) == 2  # an open breaker sends nothing

    await asyncio.sleep(blocked.next_retry_delay.total_seconds() + 0.05)
    result = await run_activity(acts, request())  # the half-open probe succeeds
    assert result.provider == "p"
    assert acts.breakers["p"].state == "closed"
    assert acts.breakers["p"].listener.changes == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]
    assert len(chats(llm)) == 3


@pytest.mark.unit
async def test_4xx_and_429_do_not_count_towards_the_breaker(llm: OfflineLLM, activities_for) -> None:  # noqa: ANN001
    acts = activities_for(single(llm, fail_max=2))
    llm.control.set_faults(fail_next=[400, 429, 404, 429, 422])
    kinds = [(await expect_error(acts, request())).type for _ in range(5)]
    assert kinds == ["LLMBadRequest", "LLMRateLimited", "LLMBadRequest", "LLMRateLimited", "LLMBadRequest"]
    assert acts.breakers["p"].state == "closed"
    assert acts.breakers["p"].cb.fail_counter == 0


@pytest.mark.unit
async def test_fallback_serves_while_the_primary_is_open(llm: OfflineLLM, activities_for) -> None:  # noqa: ANN001
    config = make_config(
        {
            "primary": {"base_url": llm.base_url, "fail_max": 1, "reset_timeout_s": 30},
            "backup": {
                "base_url": llm.base_url,
                "prices": {"*": {"input_per_mtok": 1, "output_per_mtok": 1}},
            },
        },
        {"default": ["primary:big-model", "backup:small-model"]},
    )
    acts = activities_for(config)
    llm.control.set_faults(fail_next=[503])
    first = await run_activity(acts, request())  # primary fails, the same attempt falls over
    assert (first.provider, first.model) == ("backup", "small-model")
    assert first.cost_usd == pytest.approx((first.input_tokens + first.output_tokens) / 1e6)
    assert [e["model"] for e in chats(llm)] == ["big-model", "small-model"]
    assert acts.breakers["primary"].state == "open"

    llm.control.clear_journal()
    second = await run_activity(acts, request())
    assert second.provider == "backup"
    assert [e["model"] for e in chats(llm)] == ["small-model"]  # nothing sent to the open primary


@pytest.mark.unit
async def test_dead_primary_at_an_unreachable_port_falls_over(llm: OfflineLLM, activities_for) -> None:  # noqa: ANN001
    config = make_config(
        {
            "dead": {"base_url": f"http://127.0.0.1:{free_port()}/v1", "fail_max": 1, "reset_timeout_s": 1},
            "live": {"base_url": llm.base_url},
        },
        {"default": ["dead:m", "live:scripted"]},
    )
    acts = activities_for(config)
    result = await run_activity(acts, request())
    assert result.provider == "live"
    assert acts.breakers["dead"].state == "open"


@pytest.mark.unit
async def test_every_provider_failing_or_open(llm: OfflineLLM, activities_for) -> None:  # noqa: ANN001
    config = make_config(
        {
            "a": {"base_url": llm.base_url, "fail_max": 1, "reset_timeout_s": 1.5},
            "b": {"base_url": llm.base_url, "fail_max": 1, "reset_timeout_s": 3},
        },
        {"default": ["a:m", "b:m"]},
    )
    acts = activities_for(config)
    llm.control.set_faults(fail_next=[500, 500])
    failed = await expect_error(acts, request())
    assert failed.type == errors.LLM_UNAVAILABLE and not failed.non_retryable
    assert "every provider" in failed.message
    opened = await expect_error(acts, request())
    assert opened.type == errors.CIRCUIT_OPEN
    assert opened.next_retry_delay is not None
    assert 1.0 < opened.next_retry_delay.total_seconds() <= 1.5  # the first breaker to half-open
    assert len(chats(llm)) == 2


@pytest.mark.unit
async def test_unknown_alias_context_too_long_and_oversized_answers(
    llm: OfflineLLM,
    activities_for,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    acts = activities_for(single(llm))
    unknown = await expect_error(acts, request(model="nope"))
    assert (unknown.type, unknown.non_retryable) == (errors.UNKNOWN_MODEL_ALIAS, True)

    llm.control.set_faults(context_limit_chars=50)
    too_long = await expect_error(acts, request("x" * 200))
    assert (too_long.type, too_long.non_retryable) == (errors.LLM_CONTEXT_TOO_LONG, True)

    llm.control.reset()
    monkeypatch.setattr(llm_module, "MAX_RESULT_BYTES", 100)
    too_large = await expect_error(acts, request())
    assert (too_large.type, too_large.non_retryable) == (errors.LLM_RESPONSE_TOO_LARGE, True)
    assert len(chats(llm)) == 1
    assert acts.breakers["p"].state == "closed"


@pytest.mark.unit
async def test_heartbeats_while_the_provider_thinks(llm: OfflineLLM, activities_for) -> None:  # noqa: ANN001
    acts = activities_for(single(llm))
    llm.control.set_faults(latency_ms=4300)
    env = ActivityEnvironment()
    beats = Recorder()
    env.on_heartbeat = beats
    started = time.monotonic()
    result = await run_activity(acts, request(), env)
    assert result.latency_ms >= 4300
    # Every 2 s while the request is in flight, the first after 2 s: a quick answer sends none.
    assert len(beats.beats) == 2
    assert beats.beats[0][0] - started == pytest.approx(2.0, abs=0.3)
    assert beats.beats[1][0] - beats.beats[0][0] == pytest.approx(2.0, abs=0.3)
    assert "p:scripted" in beats.beats[0][1][0]
    quick = Recorder()
    env.on_heartbeat = quick
    llm.control.set_faults(latency_ms=0)
    await run_activity(acts, request(), env)
    assert quick.beats == []


@pytest.mark.unit
async def test_api_key_from_the_environment_reaches_the_provider_only_as_authorization(
    llm: OfflineLLM,  # noqa: ARG001
) -> None:
    config = make_config(
        {"k": {"base_url": llm.base_url, "api_key_env": "K_KEY"}}, {"default": ["k:scripted"]}
    )
    acts = LLMActivities(config, BreakerRegistry(meter=lambda: None), env={"K_KEY": "sk-very-secret"})
    try:
        result = await run_activity(acts, request())
        assert "sk-very-secret" not in result.model_dump_json()
        [entry] = chats(llm)
        assert entry["headers"]["authorization"] == "Bearer ***"  # redacted by the journal, but sent
    finally:
        await acts.aclose()
    with pytest.raises(ValueError, match="K_KEY"):
        LLMActivities(config, BreakerRegistry(meter=lambda: None), env={})


# --------------------------------------------------------------------------- integration: in a real worker


@pytest.mark.integration
async def test_429_is_retried_after_retry_after(
    dev_server, task_queue: str, llm: OfflineLLM, activities_for
) -> None:  # noqa: ANN001
    acts = activities_for(single(llm))
    llm.control.set_faults(fail_next=[429], retry_after_s=2)
    result = await run_workflow(dev_server.client, task_queue, acts, request())
    assert result.attempt == 2
    first, second = chats(llm)
    assert (first["status"], second["status"]) == (429, 200)
    assert 1.8 <= second["ts"] - first["ts"] < 3.0
    assert first["headers"]["idempotency-key"] == second["headers"]["idempotency-key"]


@pytest.mark.integration
async def test_500s_are_retried_then_succeed_one_request_per_attempt(
    dev_server,
    task_queue: str,
    llm: OfflineLLM,
    activities_for,  # noqa: ANN001
) -> None:
    acts = activities_for(single(llm, fail_max=5))
    llm.control.set_faults(fail_next=[500, 503])
    result = await run_workflow(dev_server.client, task_queue, acts, request())
    assert result.attempt == 3
    entries = chats(llm)
    assert [e["status"] for e in entries] == [500, 503, 200]  # the openai client never retried by itself
    assert {e["headers"]["x-stainless-retry-count"] for e in entries} == {"0"}
    assert len({e["headers"]["idempotency-key"] for e in entries}) == 1
    assert len({e["headers"]["x-correlation-id"] for e in entries}) == 1


@pytest.mark.integration
async def test_400_fails_at_once_as_non_retryable(
    dev_server, task_queue: str, llm: OfflineLLM, activities_for
) -> None:  # noqa: ANN001
    acts = activities_for(single(llm))
    llm.control.set_faults(fail_next=[400])
    started = time.monotonic()
    with pytest.raises(WorkflowFailureError) as info:
        await run_workflow(dev_server.client, task_queue, acts, request())
    cause = application_cause(info.value)
    assert (cause.type, cause.non_retryable) == (errors.LLM_BAD_REQUEST, True)
    assert len(chats(llm)) == 1
    assert time.monotonic() - started < 1.5


@pytest.mark.integration
async def test_circuit_open_waits_for_the_half_open_probe(
    dev_server,
    task_queue: str,
    llm: OfflineLLM,
    activities_for,  # noqa: ANN001
) -> None:
    acts = activities_for(single(llm, fail_max=1, reset_timeout_s=0.6))
    llm.control.set_faults(down=True, down_mode="refuse")
    assert (await expect_error(acts, request())).type == errors.LLM_UNAVAILABLE
    assert acts.breakers["p"].state == "open"
    llm.control.reset()  # the provider is back; the breaker does not know yet
    started = time.monotonic()
    result = await run_workflow(dev_server.client, task_queue, acts, request())
    elapsed = time.monotonic() - started
    # Attempt 1 met the open breaker (no request); attempt 2 came when it half-opened (<= 0.6 s),
    # not after the retry policy's 2 s backoff.
    assert result.attempt == 2
    assert len(chats(llm)) == 1
    assert elapsed < 1.7
    assert acts.breakers["p"].state == "closed"


@pytest.mark.integration
async def test_breaker_state_is_exported_through_the_worker_runtime(
    dev_server,
    task_queue: str,
    llm: OfflineLLM,  # noqa: ANN001
) -> None:
    port = free_port()
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}")))
    client = await connect(address=dev_server.address, namespace=dev_server.namespace, runtime=runtime)
    # The default meter source: the runtime of the worker running the activity.
    acts = LLMActivities(single(llm, fail_max=1, reset_timeout_s=1.0), BreakerRegistry(), env={})
    llm.control.set_faults(fail_next=[500])
    try:
        result = await run_workflow(client, task_queue, acts, request())
    finally:
        await acts.aclose()
    assert result.attempt == 2  # 500 opened the breaker; the retry 2 s later was its half-open probe
    assert acts.breakers["p"].listener.changes == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    state = re.search(r'^keel_llm_breaker_state\{[^}]*provider="p"[^}]*\} (\S+)$', text, re.M)
    assert state is not None, text
    assert float(state.group(1)) == 0
    transitions = re.findall(r"^keel_llm_breaker_transitions\S*\{([^}]*)\} (\S+)$", text, re.M)
    pairs = {
        (re.search(r'from="([^"]+)"', a).group(1), re.search(r'to="([^"]+)"', a).group(1))
        for a, _ in transitions
    }  # type: ignore[union-attr]
    assert pairs == {("closed", "open"), ("open", "half-open"), ("half-open", "closed")}


@pytest.mark.integration
async def test_fault_benchmark_small(dev_server, task_queue: str, llm: OfflineLLM) -> None:  # noqa: ANN001
    """The benchmark's fast version: 10 calls, 20% 500s and 10% 429s (Retry-After 1 s), fixed seed."""
    llm.control.set_faults(error_rates={"500": 0.2, "429": 0.1}, retry_after_s=1, seed=7)
    report = await run_fault_benchmark(dev_server.client, task_queue, llm.base_url, calls=10)
    assert report.succeeded == 10
    entries = chats(llm)
    statuses = [e["status"] for e in entries]
    assert statuses.count(200) == 10
    assert {e["headers"]["x-stainless-retry-count"] for e in entries} == {"0"}  # Temporal alone retries
    assert 500 in statuses and 429 in statuses
    by_key: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_key.setdefault(e["headers"]["idempotency-key"], []).append(e)
    attempts = {f"{c.index}": c.attempts for c in report.calls}
    for key, calls in by_key.items():
        tried = attempts[key.rsplit("-", 1)[1].split(":")[0]]
        # An attempt sends one request, or two when a 500 from the primary falls over to the backup.
        assert tried <= len(calls) <= 2 * tried
        for before, after in zip(calls, calls[1:], strict=False):
            if before["status"] == 429:
                # The next attempt came after Retry-After (1 s), not after the policy's 2 s backoff.
                assert 0.8 <= after["ts"] - before["ts"] < 1.8
