"""Reading a run's history for the benchmarks: the continue-as-new chain, and what each LLM turn added.

A run that continued as new is a chain of executions under one workflow id; every
figure here covers the whole chain, walked forward from its first execution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from agentkeel.names import CALL_LLM_ACTIVITY


@dataclass
class RunHistory:
    """One execution of a continue-as-new chain."""

    run_id: str
    events: list[HistoryEvent] = field(default_factory=list)
    reported_bytes: int | None = None
    """`history_size_bytes` as the server reports it for this execution (None when it would not say)."""

    @property
    def event_bytes(self) -> int:
        """Sum of the events' protobuf sizes (payloads as stored: after the codec)."""
        return sum(e.ByteSize() for e in self.events)


async def _events(client: Client, workflow_id: str, run_id: str) -> list[HistoryEvent]:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    return [event async for event in handle.fetch_history_events()]


async def chain_runs(client: Client, workflow_id: str, *, sizes: bool = False) -> list[RunHistory]:
    """Every execution of the workflow's continue-as-new chain, first to last.

    Args:
        sizes: Also ask the server for each execution's history size (one describe each).
    """
    latest = await client.get_workflow_handle(workflow_id).describe()
    events = await _events(client, workflow_id, latest.run_id)
    first = events[0].workflow_execution_started_event_attributes.first_execution_run_id or latest.run_id
    runs = [
        RunHistory(first, events if first == latest.run_id else await _events(client, workflow_id, first))
    ]
    # Walk forward from the first run: the latest run's handle would skip earlier generations.
    while runs[-1].events and runs[-1].events[-1].event_type == (
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    ):
        nxt = runs[-1].events[-1].workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        runs.append(RunHistory(nxt, await _events(client, workflow_id, nxt)))
    if sizes:
        for run in runs:
            described = await client.get_workflow_handle(workflow_id, run_id=run.run_id).describe()
            info = described.raw_description.workflow_execution_info
            run.reported_bytes = int(info.history_size_bytes) or None
    return runs


async def _raw_size(client: Client, payloads: Any) -> int:
    """Bytes of payloads before the platform's codec (compression) encoded them."""
    codec = client.data_converter.payload_codec
    decoded = await codec.decode(list(payloads)) if codec is not None else list(payloads)
    return sum(p.ByteSize() for p in decoded)


async def turns_of(client: Client, events: list[HistoryEvent], *, raw: bool = True) -> list[dict[str, Any]]:
    """Per LLM turn of a chain's events: history bytes from its `call_llm` scheduling to the next
    one's (`bytes`), where it starts in the chain (`start_offset`), when it was scheduled (`ts`,
    seconds) and, with `raw`, the bytes of its LLM request and answer payloads as JSON before the
    codec compressed them (`llm_payload_bytes`: what a bare-SDK workflow without a codec would store).
    """
    turns: list[dict[str, Any]] = []
    llm_scheduled: set[int] = set()
    offset = 0
    for event in events:
        size = event.ByteSize()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == CALL_LLM_ACTIVITY:
                llm_scheduled.add(event.event_id)
                payload = await _raw_size(client, attrs.input.payloads) if raw else 0
                ts = event.event_time.ToMicroseconds() / 1e6
                turns.append({"start_offset": offset, "bytes": 0, "llm_payload_bytes": payload, "ts": ts})
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED and turns and raw:
            attrs = event.activity_task_completed_event_attributes
            if attrs.scheduled_event_id in llm_scheduled:
                turns[-1]["llm_payload_bytes"] += await _raw_size(client, attrs.result.payloads)
        if turns:
            turns[-1]["bytes"] += size
        offset += size
    return turns


async def history_turns(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    """`turns_of` the whole continue-as-new chain of `workflow_id`."""
    runs = await chain_runs(client, workflow_id)
    return await turns_of(client, [e for run in runs for e in run.events])


_ACTIVITY_ATTRS = (
    "activity_task_started_event_attributes",
    "activity_task_completed_event_attributes",
    "activity_task_failed_event_attributes",
)


def turn_breakdown(events: list[HistoryEvent], turn: int) -> dict[str, int]:
    """Bytes of LLM turn `turn` (1-based) by kind of event, largest first: where a turn's bytes go.

    Activity events are named with the activity (`ACTIVITY_TASK_SCHEDULED call_llm`).
    """
    starts = [
        i
        for i, e in enumerate(events)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == CALL_LLM_ACTIVITY
    ]
    if turn < 1 or turn > len(starts):
        return {}
    end = starts[turn] if turn < len(starts) else len(events)
    names: dict[int, str] = {}
    out: dict[str, int] = {}
    for event in events[starts[turn - 1] : end]:
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            kind += f" {names[event.event_id]}"
        for attrs_name in _ACTIVITY_ATTRS:
            if event.HasField(attrs_name):
                kind += f" {names.get(getattr(event, attrs_name).scheduled_event_id, '?')}"
        out[kind] = out.get(kind, 0) + event.ByteSize()
    return dict(sorted(out.items(), key=lambda item: -item[1]))
