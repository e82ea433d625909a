"""The offline provider over real HTTP, through the real `openai` client, and its pure parts."""

from __future__ import annotations

import asyncio
import errno
import json
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from agentkeel.dev.offline import FaultConfig, OfflineProvider, ProviderControlError, ScenarioError
from agentkeel.dev.offline.faults import FaultState
from agentkeel.dev.offline.scenarios import (
    Answer,
    ChatContext,
    answer,
    load_scenario,
    load_scenarios,
    minimal_instance,
)
from agentkeel.examples.travel import SCENARIO_FILE as TRAVEL_SCENARIO
from agentkeel.examples.travel import team as travel_team
from agentkeel.starters.cmd_demo import DEMO_GOAL
from tests.fixtures.llm import OfflineLLM, start_offline_llm, stop_offline_llm

SYSTEM = {"role": "system", "content": "You are a helpful agent."}


def client(base_url: str, timeout: float = 5.0, **kwargs: Any) -> openai.AsyncOpenAI:
    """The real client, strict about the response shape, never retrying."""
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key="sk-secret",
        max_retries=0,
        timeout=timeout,
        _strict_response_validation=True,
        **kwargs,
    )


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# --------------------------------------------------------------------------- answers


@pytest.mark.integration
async def test_default_text_answer_through_openai_client(llm: OfflineLLM) -> None:
    async with client(llm.base_url) as ai:
        models = await ai.models.list()
        completion = await ai.chat.completions.create(
            model="my-model", messages=[SYSTEM, user("Please summarise the plan for the Lisbon trip")]
        )
    assert "scripted" in [m.id for m in models.data]
    assert completion.model == "my-model"
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert choice.message.content == "Done: Please summarise the plan for the Lisbon trip"
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens >= 1 and usage.completion_tokens >= 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.integration
async def test_travel_scenario_matches_agent_header_and_turn(llm: OfflineLLM) -> None:
    tools = [
        {"type": "function", "function": {"name": "transfer_to_flights", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "charge_card", "parameters": {"type": "object"}}},
    ]
    goal = user("Trip to Lisbon, Dec 10, 3 nights")
    async with client(llm.base_url, default_headers={"X-Keel-Agent": "planner"}) as ai:
        first = await ai.chat.completions.create(model="scripted", messages=[SYSTEM, goal], tools=tools)
        call = first.choices[0].message.tool_calls[0]
        assert first.choices[0].finish_reason == "tool_calls"
        assert call.type == "function" and call.function.name == "transfer_to_flights"
        assert "Lisbon" in json.loads(call.function.arguments)["note"]

        # Turn 2 of the planner: one earlier planner answer (named), the others' answers do not count.
        history = [
            SYSTEM,
            goal,
            {
                "role": "assistant",
                "name": "planner",
                "content": None,
                "tool_calls": [{"id": call.id, "type": "function", "function": call.function.model_dump()}],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "handed over"},
            *_tool_turn("flights", "book_flight", {"booking_ref": "FL-1", "price_usd": 250.5}),
            *_tool_turn("hotels", "book_hotel", {"booking_ref": "HT-1", "price_usd": 873.0}),
        ]
        second = await ai.chat.completions.create(model="scripted", messages=history, tools=tools)
        again = await ai.chat.completions.create(model="scripted", messages=history, tools=tools)
        as_hotels = await ai.chat.completions.create(
            model="scripted", messages=history, extra_headers={"X-Keel-Agent": "hotels"}
        )
    charge = second.choices[0].message.tool_calls[0]
    assert charge.function.name == "charge_card"
    # The card is charged what the two tools priced, read from their results in the conversation.
    assert json.loads(charge.function.arguments)["amount_usd"] == 250.5 + 873.0
    # Deterministic: the same conversation gets the same answer, tool-call ids included.
    assert again.choices[0].message.model_dump() == second.choices[0].message.model_dump()
    # hotels, turn 2 (one named hotels answer): the scripted handoff back to the planner.
    assert as_hotels.choices[0].message.tool_calls[0].function.name == "transfer_to_planner"


@pytest.mark.integration
async def test_json_schema_default_fits_the_schema(llm: OfflineLLM) -> None:
    schema = {
        "type": "object",
        "properties": {
            "verdict": {"enum": ["approve", "reject"]},
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
            "reasons": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "detail": {"$ref": "#/$defs/detail"},
            "optional": {"type": "string"},
        },
        "required": ["verdict", "score", "reasons", "detail"],
        "additionalProperties": False,
        "$defs": {
            "detail": {
                "type": "object",
                "properties": {
                    "note": {"type": ["string", "null"], "minLength": 2},
                    "ok": {"type": "boolean"},
                },
                "required": ["note", "ok"],
            }
        },
    }
    async with client(llm.base_url) as ai:
        completion = await ai.chat.completions.create(
            model="scripted",
            messages=[user("Judge this.")],
            response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
        )
        plain = await ai.chat.completions.create(
            model="scripted", messages=[user("Any JSON")], response_format={"type": "json_object"}
        )
    document = json.loads(completion.choices[0].message.content or "")
    jsonschema.validate(document, schema)
    assert document["verdict"] == "approve" and document["score"] == 1 and "optional" not in document
    assert json.loads(plain.choices[0].message.content or "") == {}


@pytest.mark.unit
@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "email"},
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "integer", "minimum": -10, "maximum": -3},
        {
            "anyOf": [
                {"type": "null"},
                {"type": "object", "properties": {"a": {"const": 3}}, "required": ["a"]},
            ]
        },
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"required": ["b"]},
            ]
        },
        {"type": "array", "prefixItems": [{"type": "boolean"}], "minItems": 2, "items": {"type": "integer"}},
        {
            "type": "object",
            "properties": {"n": {"type": "object", "properties": {"x": {"enum": [7]}}, "required": ["x"]}},
            "required": ["n"],
        },
    ],
)
def test_minimal_instance_is_valid(schema: dict[str, Any]) -> None:
    jsonschema.validate(minimal_instance(schema), schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.integration
async def test_in_process_provider_with_scenario_file(tmp_path: Path) -> None:
    scenario = tmp_path / "review.yaml"
    scenario.write_text(
        """
name: review
rules:
  - agent: reviewer
    last_role: tool
    last_contains: REFUND
    respond:
      json: {decision: refund}
      usage: {prompt_tokens: 120, completion_tokens: 30}
  - agent: reviewer
    turn: 1
    respond:
      content: first look
  - last_contains: explode
    respond: {status: 503, message: scripted outage}
"""
    )
    async with OfflineProvider(port=0, scenario_paths=[scenario]) as provider:
        system = {"role": "system", "content": "You review claims. agent: reviewer"}
        async with client(provider.base_url) as ai:
            first = await ai.chat.completions.create(model="scripted", messages=[system, user("claim 1")])
            refund = await ai.chat.completions.create(
                model="scripted",
                messages=[
                    system,
                    user("claim 1"),
                    {"role": "assistant", "name": "reviewer", "content": "first look"},
                    {"role": "tool", "tool_call_id": "call_1", "content": "customer asks for a refund"},
                ],
            )
            with pytest.raises(openai.InternalServerError) as outage:
                await ai.chat.completions.create(model="scripted", messages=[user("please explode")])
            # Keep-alive: every request above went over one connection.
            assert provider._api.connection_count == 1
        journal = await provider.journal()
    assert first.choices[0].message.content == "first look"
    assert json.loads(refund.choices[0].message.content or "") == {"decision": "refund"}
    assert refund.usage is not None and (refund.usage.prompt_tokens, refund.usage.total_tokens) == (120, 150)
    assert outage.value.status_code == 503 and "scripted outage" in str(outage.value)
    assert [e["agent"] for e in journal] == ["reviewer", "reviewer", None]
    assert [e["outcome"] for e in journal] == ["ok", "ok", "error"]


def _tool_turn(
    agent: str, tool: str, result: dict[str, Any], call_id: str | None = None
) -> list[dict[str, Any]]:
    """An agent's tool call and its result, as the workflow puts them in the conversation (no tool name)."""
    call_id = call_id or f"call-{tool}"
    return [
        {
            "role": "assistant",
            "name": agent,
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": tool, "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)},
    ]


def _travel_answer(agent: str, goal: str, *turns: dict[str, Any]) -> Answer:
    body = {"model": "scripted", "messages": [SYSTEM, user(goal), *turns]}
    return answer(load_scenarios([TRAVEL_SCENARIO]), body, header_agent=agent)


def _call(reply: Answer) -> tuple[str, dict[str, Any]]:
    function = reply.tool_calls[0]["function"]
    return function["name"], json.loads(function["arguments"])


@pytest.mark.unit
@pytest.mark.parametrize(
    ("goal", "flight", "hotel"),
    [
        (
            DEMO_GOAL,
            {"origin": "Paris", "destination": "Lisbon", "date": "2026-12-10", "passengers": 1},
            {"city": "Lisbon", "check_in": "2026-12-10", "nights": 3},
        ),
        (
            "Fly from New York to Rome on 2027-03-01 for two travellers, 5 nights at a hotel",
            {"origin": "New York", "destination": "Rome", "date": "2027-03-01", "passengers": 2},
            {"city": "Rome", "check_in": "2027-03-01", "nights": 5},
        ),
        (
            "Book me something nice",  # says nothing: the default trip
            {"origin": "Paris", "destination": "Lisbon", "date": "2026-12-10", "passengers": 1},
            {"city": "Lisbon", "check_in": "2026-12-10", "nights": 3},
        ),
        (
            "From Berlin to Oslo, 2026-01-31, seven nights, 3 passengers",
            {"origin": "Berlin", "destination": "Oslo", "date": "2026-01-31", "passengers": 3},
            {"city": "Oslo", "check_in": "2026-01-31", "nights": 7},
        ),
    ],
)
def test_travel_scenario_books_what_the_goal_asks(
    goal: str, flight: dict[str, Any], hotel: dict[str, Any]
) -> None:
    assert _call(_travel_answer("flights", goal)) == ("book_flight", flight)
    assert _call(_travel_answer("hotels", goal)) == ("book_hotel", hotel)
    # The booked tools' own schemas accept what was read from the goal.
    schemas = {t.name: t.parameters for t in travel_team().tools}
    jsonschema.validate(flight, schemas["book_flight"])
    jsonschema.validate(hotel, schemas["book_hotel"])


@pytest.mark.unit
def test_travel_scenario_charges_the_booked_prices_and_reports_the_charged_amount() -> None:
    booked = [
        *_tool_turn("flights", "book_flight", {"booking_ref": "FL-A", "price_usd": 250.1}),
        *_tool_turn("hotels", "book_hotel", {"booking_ref": "HT-B", "price_usd": 873.2}),
        {"role": "assistant", "name": "planner", "content": "handing over"},
    ]
    charge = _travel_answer("planner", DEMO_GOAL, *booked)
    name, arguments = _call(charge)
    assert name == "charge_card"
    assert arguments["amount_usd"] == 1123.3  # rounded: 250.1 + 873.2 is 1123.3000000000002 in floats
    assert "$250.10" in (charge.content or "") and "$873.20" in (charge.content or "")
    # A reviewer edited the amount: the final answer states what charge_card charged, not the plan.
    charged = _tool_turn("planner", "charge_card", {"charge_id": "CH-C", "amount_usd": 900.0})
    final = _travel_answer("planner", DEMO_GOAL, *booked, *charged)
    assert final.tool_calls == []
    assert "The card was charged $900.00 (CH-C)" in (final.content or "")
    assert "FL-A" in (final.content or "") and "HT-B" in (final.content or "")


@pytest.mark.unit
def test_rule_with_unfilled_placeholder_does_not_match() -> None:
    # The planner's second turn without any booking result: no charge of a made-up amount.
    reply = _travel_answer("planner", DEMO_GOAL, {"role": "assistant", "name": "planner", "content": "x"})
    assert reply.tool_calls == [] and (reply.content or "").startswith("Done:")
    # A failed booking ("error: ...") holds no price either.
    failed = [
        *_tool_turn("flights", "book_flight", {"booking_ref": "FL-A", "price_usd": 250.5}),
        *_tool_turn("hotels", "book_hotel", "error: nights must be between 1 and 60"),
        {"role": "assistant", "name": "planner", "content": "x"},
    ]
    assert _travel_answer("planner", DEMO_GOAL, *failed).tool_calls == []


@pytest.mark.unit
def test_scenario_placeholders_are_checked_at_load(tmp_path: Path) -> None:
    unknown_goal = tmp_path / "goal.yaml"
    unknown_goal.write_text("rules:\n  - respond: {content: 'to {{goal.city}}'}\n")
    bad_term = tmp_path / "term.yaml"
    bad_term.write_text("rules:\n  - respond: {content: '{{price * 2}}'}\n")
    no_group = tmp_path / "group.yaml"
    no_group.write_text("extract: {city: {pattern: 'to \\w+', default: x}}\nrules: []\n")
    bad_default = tmp_path / "default.yaml"
    bad_default.write_text("extract: {n: {pattern: '(\\d+)', type: integer, default: many}}\nrules: []\n")
    for path, needle in [
        (unknown_goal, "goal.city"),
        (bad_term, "'price * 2'"),
        (no_group, "needs a group"),
        (bad_default, "not a integer"),
    ]:
        with pytest.raises(ScenarioError, match=re.escape(needle)):
            load_scenario(path)


@pytest.mark.unit
def test_whole_placeholder_keeps_its_type_and_text_placeholders_format(tmp_path: Path) -> None:
    path = tmp_path / "typed.yaml"
    path.write_text(
        "extract: {n: {pattern: '(\\d+) items', type: integer, default: 1}}\n"
        "rules:\n"
        "  - respond:\n"
        "      json: {count: '{{goal.n}}', total: '{{goal.n + 0.5}}', text: 'n={{goal.n:03d}}'}\n"
    )
    scenario = load_scenario(path)
    body = {"model": "m", "messages": [user("send 12 items")], "response_format": {"type": "json_object"}}
    reply = answer([scenario], body)
    assert json.loads(reply.content or "") == {"count": 12, "total": 12.5, "text": "n=012"}


@pytest.mark.unit
def test_invalid_scenarios_fail_with_one_line(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\nrules: [\n")
    wrong_shape = tmp_path / "shape.json"
    wrong_shape.write_text(json.dumps({"name": "x", "rules": [{"agent": "a", "respond": {}}]}))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("rules:\n  - agnet: planner\n    respond: {content: hi}\n")
    for path, needle in [(bad_yaml, "not valid YAML"), (wrong_shape, "respond needs"), (unknown, "agnet")]:
        with pytest.raises(ScenarioError) as err:
            load_scenario(path)
        assert needle in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ScenarioError, match="missing.yaml"):
        OfflineProvider(port=0, scenario_paths=[tmp_path / "missing.yaml"])


@pytest.mark.unit
def test_agent_resolution_without_header() -> None:
    prompt = {"role": "system", "content": "Team travel. agent: hotels. You book hotels after the flights."}
    body = {
        "model": "m",
        "messages": [prompt, {"role": "assistant", "name": "hotels"}, {"role": "assistant"}],
    }
    ctx = ChatContext.from_request(body)
    assert ctx.agent == "hotels" and ctx.turn("hotels") == 2 and ctx.turn(None) == 3
    assert ChatContext.from_request(body, header_agent="planner").agent == "planner"
    named = {"model": "m", "messages": [{"role": "system", "content": "hi", "name": "flights"}]}
    assert ChatContext.from_request(named).agent == "flights"


# --------------------------------------------------------------------------- faults


async def _statuses(base_url: str, count: int) -> list[int]:
    """Send `count` sequential requests; their HTTP statuses."""
    statuses = []
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        for i in range(count):
            body = {"model": "scripted", "messages": [user(f"request {i}")]}
            statuses.append((await http.post("/chat/completions", json=body)).status_code)
    return statuses


@pytest.mark.integration
async def test_fail_next_then_seeded_error_rates(llm: OfflineLLM) -> None:
    await llm.control.set_faults(fail_next=[500, 500, 429])
    assert llm.control.faults()["fail_next"] == [500, 500, 429]
    assert await _statuses(llm.base_url, 4) == [500, 500, 429, 200]
    assert llm.control.faults()["fail_next"] == []

    rates = {"500": 0.2, "429": 0.1}
    llm.control.set_faults(error_rates=rates, seed=7)
    first = await _statuses(llm.base_url, 200)
    llm.control.set_faults(error_rates=rates, seed=7)
    second = await _statuses(llm.base_url, 200)
    llm.control.set_faults(error_rates=rates, seed=8)
    other = await _statuses(llm.base_url, 200)
    assert first == second != other
    # The documented draw: one uniform number per request against the cumulative rates, in status order.
    rng = random.Random(7)
    expected = [(429 if (d := rng.random()) < 0.1 else 500 if d < 0.3 else 200) for _ in range(200)]
    assert first == expected
    assert 25 <= first.count(500) <= 60 and 8 <= first.count(429) <= 35


@pytest.mark.integration
async def test_429_carries_retry_after_and_error_shape(llm: OfflineLLM) -> None:
    llm.control.set_faults(fail_next=[429, 503], retry_after_s=2)
    async with client(llm.base_url) as ai:
        with pytest.raises(openai.RateLimitError) as limited:
            await ai.chat.completions.create(model="scripted", messages=[user("hi")])
        with pytest.raises(openai.InternalServerError) as unavailable:
            await ai.chat.completions.create(model="scripted", messages=[user("hi")])
        with pytest.raises(openai.BadRequestError) as streaming:
            await ai.chat.completions.create(model="scripted", messages=[user("hi")], stream=True)
    headers = limited.value.response.headers
    assert headers["retry-after"] == "2" and headers["x-ratelimit-reset-requests"] == "2s"
    assert limited.value.body["type"] == "rate_limit_exceeded"  # type: ignore[index]
    assert unavailable.value.status_code == 503 and unavailable.value.body["type"] == "server_error"  # type: ignore[index]
    assert streaming.value.body["type"] == "invalid_request_error"  # type: ignore[index]


@pytest.mark.integration
async def test_context_length_exceeded(llm: OfflineLLM) -> None:
    llm.control.set_faults(context_limit_chars=1000)
    async with client(llm.base_url) as ai:
        await ai.chat.completions.create(model="scripted", messages=[user("x" * 900)])
        with pytest.raises(openai.BadRequestError) as too_long:
            await ai.chat.completions.create(model="scripted", messages=[user("x" * 600), user("y" * 600)])
    assert too_long.value.code == "context_length_exceeded"


@pytest.mark.integration
async def test_hang_times_out_and_drop_fails_the_connection(llm: OfflineLLM) -> None:
    llm.control.set_faults(hang=True)
    async with client(llm.base_url, timeout=0.5) as ai:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await ai.chat.completions.create(model="scripted", messages=[user("hi")])
        assert 0.4 < time.monotonic() - started < 3
        llm.control.set_faults(down=True, down_mode="drop")
        with pytest.raises(openai.APIConnectionError) as dropped:
            await ai.chat.completions.create(model="scripted", messages=[user("hi")])
        assert not isinstance(dropped.value, openai.APITimeoutError)
        # Drop mode keeps the control API on the API port working.
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://{llm.host}:{llm.port}/_control/health")).status_code == 200
        llm.control.set_faults()
        ok = await ai.chat.completions.create(model="scripted", messages=[user("back")])
    assert ok.choices[0].message.content == "Done: back"
    assert [e["outcome"] for e in llm.control.journal()] == ["hang", "dropped", "ok"]


def _connect(host: str, port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port))


@pytest.mark.integration
async def test_refuse_then_recover(llm: OfflineLLM) -> None:
    async with client(llm.base_url) as ai:
        await ai.chat.completions.create(model="scripted", messages=[user("warm up a keep-alive connection")])
        llm.control.set_faults(down=True, down_mode="refuse")
        assert _connect(llm.host, llm.port) == errno.ECONNREFUSED
        with pytest.raises(openai.APIConnectionError):
            await ai.chat.completions.create(model="scripted", messages=[user("hi")])
        assert llm.control.health()["accepting"] is False
        llm.control.set_faults(down=False)
        assert _connect(llm.host, llm.port) == 0
        ok = await ai.chat.completions.create(model="scripted", messages=[user("recovered")])
    assert ok.choices[0].message.content == "Done: recovered"


@pytest.mark.integration
async def test_in_process_provider_can_start_refusing() -> None:
    faults = {"down": True, "down_mode": "refuse"}
    async with (
        OfflineProvider(port=0, control_port=0, faults=faults) as provider,
        httpx.AsyncClient(base_url=provider.control_url) as control,
    ):
        assert provider.control_url.endswith(f":{provider.control_port}")
        assert _connect(provider.host, provider.port) == errno.ECONNREFUSED
        assert (await control.get("/_control/health")).json()["accepting"] is False
        put = await control.put("/_control/faults", json={"latency_ms": 5})
        assert put.json()["down"] is False and put.json()["latency_ms"] == 5
        async with client(provider.base_url) as ai:
            ok = await ai.chat.completions.create(model="scripted", messages=[user("up")])
        assert ok.choices[0].message.content == "Done: up"
        # The control port serves the control API only.
        assert (await control.get("/v1/models")).status_code == 404


@pytest.mark.integration
async def test_journal_records_headers_redacted(llm: OfflineLLM) -> None:
    async with client(llm.base_url) as ai:
        await ai.chat.completions.create(
            model="scripted",
            messages=[user("hello")],
            extra_headers={
                "X-Correlation-ID": "corr-123",
                "Idempotency-Key": "wf-1/step-2",
                "X-Keel-Agent": "a1",
            },
        )
    entries = await llm.control.journal()
    assert len(entries) == 1
    entry = entries[0]
    assert entry["headers"]["x-correlation-id"] == "corr-123"
    assert entry["headers"]["idempotency-key"] == "wf-1/step-2"
    assert entry["headers"]["authorization"] == "Bearer ***"
    assert "sk-secret" not in json.dumps(entries)
    assert (entry["method"], entry["path"], entry["status"], entry["outcome"]) == (
        "POST",
        "/v1/chat/completions",
        200,
        "ok",
    )
    assert (
        entry["agent"] == "a1"
        and entry["model"] == "scripted"
        and entry["body"]["messages"] == [user("hello")]
    )
    assert (entry["correlation_id"], entry["messages"]) == ("corr-123", 1)
    assert entry["body_bytes"] > len("hello")
    assert abs(entry["ts"] - time.time()) < 30
    assert llm.control.journal(since=entry["seq"]) == []
    llm.control.clear_journal()
    assert llm.control.journal() == []


async def test_journal_without_bodies_keeps_counts_per_correlation_id() -> None:
    """`journal_bodies=False`: what a benchmark needs (messages per request, by run), not the bodies."""
    async with OfflineProvider(port=0, journal_bodies=False) as provider, client(provider.base_url) as ai:
        for corr, count in (("run-a", 1), ("run-b", 3), ("run-a", 5)):
            await ai.chat.completions.create(
                model="scripted",
                messages=[user(f"message {i}") for i in range(count)],
                extra_headers={"X-Correlation-ID": corr},
            )
        await ai.models.list()
        journal = await provider.journal()
    assert [(e["correlation_id"], e["messages"]) for e in journal] == [
        ("run-a", 1),
        ("run-b", 3),
        ("run-a", 5),
        (None, None),
    ]
    assert all(e["body"] is None for e in journal)
    assert journal[2]["body_bytes"] > journal[1]["body_bytes"] > journal[0]["body_bytes"] > 0
    assert journal[3]["body_bytes"] == 0


@pytest.mark.integration
def test_cli_no_journal_bodies() -> None:
    llm = start_offline_llm("--no-journal-bodies")
    try:
        with httpx.Client() as http:
            response = http.post(
                f"{llm.base_url}/chat/completions",
                json={"model": "scripted", "messages": [user("hello"), user("again")]},
            )
            assert response.status_code == 200
        (entry,) = llm.control.journal()
        assert (entry["messages"], entry["body"]) == (2, None)
    finally:
        stop_offline_llm(llm)


@pytest.mark.integration
def test_bad_fault_config_is_refused(llm: OfflineLLM) -> None:
    for fields in ({"error_rates": {"500": 0.8, "429": 0.5}}, {"latency": 5}, {"fail_next": [200]}):
        with pytest.raises(ProviderControlError):
            llm.control.set_faults(**fields)
    assert llm.control.faults() == FaultConfig().public()


@pytest.mark.integration
async def test_concurrent_requests_are_served_concurrently(llm: OfflineLLM) -> None:
    llm.control.set_faults(latency_ms=200)
    async with client(llm.base_url, timeout=10) as ai:

        async def one(i: int) -> str | None:
            completion = await ai.chat.completions.create(model="scripted", messages=[user(f"n{i}")])
            return completion.choices[0].message.content

        started = time.monotonic()
        answers = await asyncio.gather(*(one(i) for i in range(200)))
        elapsed = time.monotonic() - started
    assert sorted(answers) == sorted(f"Done: n{i}" for i in range(200))
    assert elapsed < 1.9, f"200 requests of 200 ms took {elapsed:.2f}s"
    assert all(e["latency_ms"] >= 199 for e in llm.control.journal())


# --------------------------------------------------------------------------- the CLI


@pytest.mark.integration
def test_cli_fault_flags_and_clean_sigterm() -> None:
    handle = start_offline_llm("--fail-next", "503", "--latency-ms", "50", "--error-rate", "429=1")
    try:
        statuses = asyncio.run(_statuses(handle.base_url, 2))
        journal = handle.control.journal()
        log = handle.log()
    finally:
        code = stop_offline_llm(handle)
    assert statuses == [503, 429]
    assert all(e["latency_ms"] >= 49 for e in journal)
    assert handle.base_url in log
    assert code == 0


@pytest.mark.integration
def test_cli_rejects_invalid_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrules:\n  - respond: {status: 200}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from agentkeel.starters.cli import main; main()",
            "llm",
            "--port",
            "0",
            "--scenario",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keel: scenario") and "status" in lines[0]


@pytest.mark.unit
def test_fault_state_order() -> None:
    state = FaultState(FaultConfig(fail_next=[500], latency_ms=10, error_rates={503: 1.0}))
    first, second = state.decide(), state.decide()
    assert (first.action, first.status, first.latency_s) == ("error", 500, 0.01)
    assert (second.action, second.status) == ("error", 503)
    state.replace(FaultConfig(hang=True, down=True, down_mode="refuse"))
    assert state.decide().action == "refuse"
