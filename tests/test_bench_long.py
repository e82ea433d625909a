"""The long-conversation benchmark's pieces: its scripted model, its tool's text, its figures and report."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from agentkeel.dev.offline.scenarios import answer, load_scenario
from agentkeel.settings import Settings
from agentkeel.store import open_store
from benchmarks import long_app
from benchmarks.bench_long import _model_figures, _store_delta
from benchmarks.bench_long_report import latest_baseline, long_table, summarise, target_rows
from benchmarks.bench_store import store_figures

pytestmark = pytest.mark.unit

SYSTEM = {"role": "system", "content": "You are a benchmark agent."}


def _turn(call: int, of: int, *, done: bool = False) -> list[dict[str, Any]]:
    """One tool turn as the workflow sends it: the assistant's call and the tool's JSON result."""
    call_id = f"call_{call}"
    result = {"call": call, "of": of, "done": done, "text": long_app.random_text(call_id)}
    return [
        {
            "role": "assistant",
            "name": long_app.AGENT,
            "content": "Still working",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": long_app.PAYLOAD_TOOL, "arguments": json.dumps({"call": call})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result, sort_keys=True)},
    ]


def _ask(messages: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any] | None]:
    scenario = load_scenario(long_app.SCENARIO_FILE)
    got = answer([scenario], {"model": "scripted", "messages": messages}, long_app.AGENT)
    call = got.tool_calls[0]["function"] if got.tool_calls else None
    return got.content, json.loads(call["arguments"]) if call else None


def test_scripted_model_counts_in_the_conversation() -> None:
    goal = {"role": "user", "content": long_app.goal(3)}
    assert _ask([SYSTEM, goal])[1] == {"call": 1, "of": 3}
    assert _ask([SYSTEM, goal, *_turn(1, 3), *_turn(2, 3)])[1] == {"call": 3, "of": 3}
    content, call = _ask([SYSTEM, goal, *_turn(1, 3), *_turn(2, 3), *_turn(3, 3, done=True)])
    assert call is None and content == "All 3 tool turns are done."


def test_scripted_model_says_when_it_cannot_read_the_result() -> None:
    goal = {"role": "user", "content": long_app.goal(3)}
    preview = {"role": "tool", "tool_call_id": "call_1", "content": '{"call": 1, "done": false, "of": 3, "te'}
    content, call = _ask([SYSTEM, goal, *_turn(1, 3)[:1], preview])
    assert call is None and content is not None and content.startswith("BENCH ERROR")


def test_scripted_model_keeps_counting_when_old_messages_are_dropped() -> None:
    # A compacted conversation (the goal, a marker, the last turns): the count goes on from the
    # last result, so the run still makes exactly N tool calls.
    goal = {"role": "user", "content": long_app.goal(1000)}
    marker = {"role": "user", "content": "[1200 earlier messages were compacted; the work goes on.]"}
    assert _ask([SYSTEM, goal, marker, *_turn(601, 1000), *_turn(602, 1000)])[1] == {"call": 603, "of": 1000}


def test_payload_is_2_kb_of_incompressible_text_per_key() -> None:
    text = long_app.random_text("wf-1/step-2")
    assert len(text) == long_app.PAYLOAD_CHARS
    assert text == long_app.random_text("wf-1/step-2") != long_app.random_text("wf-1/step-4")
    assert len(zlib.compress(text.encode(), 9)) > 0.7 * len(text)


def test_model_figures_expect_two_messages_per_tool_turn() -> None:
    entries = [{"messages": 2, "body_bytes": 10}, {"messages": None}, {"messages": 22, "body_bytes": 900}]
    figures = _model_figures(entries, 10)
    assert (figures["requests"], figures["expected_last_request_messages"], figures["every_message"]) == (
        2,
        22,
        True,
    )
    assert not _model_figures([{"messages": 2}, {"messages": 61}], 1000)["every_message"]


def _row(n: int, *, history: int, last: int, turn10: int, ms: float, got: int) -> dict[str, Any]:
    return {
        "status": "Completed",
        "turns": n,
        "tool_calls": n,
        "ms_per_turn": ms,
        "history_bytes_reported": history,
        "last_tool_turn_bytes": last,
        "at_turn": {"10": {"bytes": turn10}},
        "runs_in_chain": 1,
        "model": {
            "last_request_messages": got,
            "expected_last_request_messages": 2 + 2 * n,
            "every_message": got == 2 + 2 * n,
        },
    }


def test_targets_against_a_baseline() -> None:
    commit = {"code": "c9e8f9e" + "0" * 33, "head": "c9e8f9e" + "0" * 33}
    today = {
        "file": "long-baseline-x.json",
        "commit": commit,
        "sources": {n: {"file": "long-baseline-x.json", "commit": commit} for n in ("10", "100")},
        "summary": {
            "10": summarise([_row(10, history=150_000, last=19_600, turn10=19_600, ms=40.0, got=22)]),
            "100": summarise([_row(100, history=6_400_000, last=83_000, turn10=19_600, ms=47.0, got=103)]),
        },
    }
    now = {
        "commit": {"code": "abcdef0", "head": "abcdef0"},
        "summary": {
            "10": summarise([_row(10, history=20_000, last=1_500, turn10=1_500, ms=43.0, got=22)]),
            "100": summarise([_row(100, history=160_000, last=1_500, turn10=1_500, ms=45.0, got=202)]),
            "1000": summarise([_row(1000, history=1_600_000, last=1_560, turn10=1_500, ms=50.0, got=2002)]),
        },
    }
    verdicts = [verdict for _, _, verdict in target_rows(now, today)]
    assert verdicts == ["met", "met", "met", "met"]
    slow = {
        **now,
        "summary": {
            **now["summary"],
            "10": summarise([_row(10, history=20_000, last=1_500, turn10=1_500, ms=45.0, got=22)]),
        },
    }
    assert [v for _, _, v in target_rows(slow, today)][2] == "**MISSED**"
    # Slower on the wall clock for the same CPU: the machine was busier; the verdict says so.
    for summary, ms in ((today["summary"]["10"], 40.0), (slow["summary"]["10"], 45.0)):
        summary["cpu_ms_per_turn"] = {"median": 30.0, "min": 30.0, "max": 30.0}
        assert summary["ms_per_turn"]["median"] == ms
    assert "CPU within" in target_rows(slow, today)[2][2]
    table = long_table(now, today)
    assert "c9e8f9e" in table and "2002 of 2002 messages" in table


async def test_store_figures(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert await store_figures(home) is None  # no store file: the code under test keeps none
    store = open_store(Settings(home=home), cache_bytes=0)
    try:
        await store.put_many([b"one message", b"another message", b"one message"])
    finally:
        await store.aclose()
    figures = await store_figures(home)
    assert figures is not None
    assert (figures["objects"], figures["plain_bytes"]) == (2, len(b"one message") + len(b"another message"))
    delta = _store_delta({"objects": 1, "stored_bytes": 5, "plain_bytes": 5, "file_bytes": 0}, figures)
    assert delta is not None and delta["objects"] == 1


def test_baseline_takes_each_n_from_the_newest_file_that_measured_it(tmp_path: Path) -> None:
    def write(name: str, started: str, head: str, summaries: dict[str, Any]) -> None:
        long = {"commit": {"head": head, "code": head}, "summary": summaries}
        (tmp_path / name).write_text(json.dumps({"started_at": started, "results": {"long": long}}))

    assert latest_baseline(tmp_path) is None
    write("long-baseline-1.json", "2026-12-01T10:00:00+00:00", "a" * 40, {"10": {"x": 1}, "100": {"x": 2}})
    write("long-baseline-2.json", "2026-12-01T11:00:00+00:00", "b" * 40, {"10": {"x": 3}})
    (tmp_path / "long-baseline-broken.json").write_text("{")
    baseline = latest_baseline(tmp_path)
    assert baseline is not None
    assert baseline["summary"] == {"10": {"x": 3}, "100": {"x": 2}}
    assert baseline["sources"]["100"]["file"] == "long-baseline-1.json"
    assert baseline["commit"]["head"] == "b" * 40


def test_turn_breakdown_names_activity_events() -> None:
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.history.v1 import HistoryEvent

    from benchmarks.bench_history import turn_breakdown

    def scheduled(event_id: int, name: str) -> HistoryEvent:
        event = HistoryEvent(event_id=event_id, event_type=EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
        event.activity_task_scheduled_event_attributes.activity_type.name = name
        return event

    def completed(event_id: int, scheduled_id: int) -> HistoryEvent:
        event = HistoryEvent(event_id=event_id, event_type=EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
        event.activity_task_completed_event_attributes.scheduled_event_id = scheduled_id
        return event

    events = [
        scheduled(1, "call_llm"),
        completed(2, 1),
        scheduled(3, "bench_payload"),
        completed(4, 3),
        scheduled(5, "call_llm"),
        completed(6, 5),
    ]
    first = turn_breakdown(events, 1)
    assert set(first) == {
        "ACTIVITY_TASK_SCHEDULED call_llm",
        "ACTIVITY_TASK_COMPLETED call_llm",
        "ACTIVITY_TASK_SCHEDULED bench_payload",
        "ACTIVITY_TASK_COMPLETED bench_payload",
    }
    assert sum(first.values()) == sum(e.ByteSize() for e in events[:4])
    assert set(turn_breakdown(events, 2)) == {
        "ACTIVITY_TASK_SCHEDULED call_llm",
        "ACTIVITY_TASK_COMPLETED call_llm",
    }
    assert turn_breakdown(events, 3) == {}
