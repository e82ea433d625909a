"""Terminal rendering of runs for the `keel` CLI, and the JSON form of the same data.

Every function returns text and prints nothing, so commands stay thin and the
rendering is tested without a terminal. Plain text only: output is read on
terminals, in CI logs and piped into files alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from agentkeel.contracts import (
    ChatMessage,
    ReviewOutcome,
    ReviewRequest,
    SagaResult,
    SagaStatusView,
    TeamSpec,
    ToolSpec,
    TranscriptEntry,
)
from agentkeel.search_attributes import SagaStatus

MAX_CELL = 48
"""Table cells longer than this are cut, so one run stays on one line."""
MAX_CONTENT = 400
"""Transcript message bodies longer than this are cut; `--json` has them whole."""


# --------------------------------------------------------------------------- JSON


def jsonable(value: Any) -> Any:
    """Turn models, lists and mappings of models into plain JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def to_json(value: Any, *, indent: int | None = 2) -> str:
    """JSON text of `value` (models included); `indent=None` gives one line, for NDJSON streams."""
    return json.dumps(jsonable(value), indent=indent, ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- small pieces


def _cut(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def money(value: float | None) -> str:
    """`$0.0123`: four decimals, since LLM calls cost fractions of a cent."""
    return "-" if value is None else f"${value:,.4f}"


def count(value: int | None) -> str:
    """`12,345`, or `-` when unknown."""
    return "-" if value is None else f"{value:,}"


def when(value: datetime | None) -> str:
    """`2025-01-02 13:04:05` in UTC, or `-`."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def args_text(arguments: Mapping[str, Any] | None) -> str:
    """Tool arguments on one line, as compact JSON."""
    return json.dumps(dict(arguments or {}), ensure_ascii=False, separators=(", ", ": "), default=str)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A left-aligned text table with a header row."""
    cells = [[_cut(str(c), MAX_CELL) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _field(label: str, value: Any) -> str:
    return f"{label + ':':<16}{value}"


# --------------------------------------------------------------------------- single run


def render_review(review: ReviewRequest, *, indent: str = "  ") -> str:
    """What a run waits for a person to decide, several lines."""
    what = f"{review.kind} review"
    if review.tool:
        what += f" of {review.tool}"
    lines = [f"{indent}{what} by agent {review.agent} (request {review.request_id})"]
    if review.tool or review.arguments:
        lines.append(f"{indent}arguments: {args_text(review.arguments)}")
    if review.reasoning:
        lines.append(f"{indent}reasoning: {_cut(review.reasoning, 300)}")
    lines.append(f"{indent}cost so far: {count(review.tokens)} tokens, {money(review.cost_usd)}")
    if review.escalated:
        lines.append(f"{indent}ESCALATED: the review timed out once")
    return "\n".join(lines)


def render_status(view: SagaStatusView, *, workflow_id: str | None = None, ui_url: str | None = None) -> str:
    """The `keel status` view of one run."""
    lines = []
    if workflow_id:
        lines.append(_field("run", workflow_id))
    lines += [
        _field("status", view.status.value + ("  (escalated)" if view.escalated else "")),
        _field("team", view.team),
        _field("goal", _cut(view.goal, 200)),
        _field("active agent", view.active_agent or "-"),
        _field("progress", f"step {view.step}, {view.turns} LLM turns, {view.handoffs} handoffs"),
        _field("spend", f"{count(view.tokens)} tokens, {money(view.cost_usd)}"),
        _field("correlation id", view.correlation_id or "-"),
    ]
    if view.waiting_for:
        lines.append(_field("waiting for", view.waiting_for))
    if view.pending_review:
        lines.append("pending review:")
        lines.append(render_review(view.pending_review))
    if view.completed_steps and not view.status.is_final:
        # Steps a rejection or cancellation would undo; once the run has ended nothing will.
        lines.append(_field("to compensate", ", ".join(view.completed_steps)))
    elif view.completed_steps and view.status in (SagaStatus.TERMINATED, SagaStatus.TIMED_OUT):
        lines.append(_field("uncompensated", ", ".join(view.completed_steps)))
    if view.compensations:
        lines.append("compensations:")
        for comp in view.compensations:
            error = f" ({comp.error})" if comp.error else ""
            lines.append(f"  step {comp.step}: {comp.compensation} for {comp.name}: {comp.status}{error}")
    if view.rejected_signals:
        lines.append("refused decisions and signals:")
        for sig in view.rejected_signals:
            lines.append(f"  {sig.name} {_cut(sig.payload, 80)}: {sig.error}")
    if view.last_error:
        lines.append(_field("last error", view.last_error))
    if ui_url:
        lines.append(_field("ui", ui_url))
    return "\n".join(lines)


def render_stuck(stuck: Mapping[str, Any]) -> str:
    """The `keel status` view of a run whose workflow task keeps failing."""
    lines = [
        _field("run", stuck["workflow_id"]),
        _field("status", "STUCK: its workflow task keeps failing, the run cannot make progress"),
        _field("worker error", stuck.get("stuck") or "-"),
    ]
    if stuck.get("team"):
        lines.append(_field("team", stuck["team"]))
    if stuck.get("goal"):
        lines.append(_field("goal", _cut(stuck["goal"], 200)))
    if stuck.get("correlation_id"):
        lines.append(_field("correlation id", stuck["correlation_id"]))
    lines.append(
        _field("what to do", "fix the worker (see its error); the run resumes once a worker can run it")
    )
    if stuck.get("ui_url"):
        lines.append(_field("ui", stuck["ui_url"]))
    return "\n".join(lines)


def render_watch_line(view: SagaStatusView, *, at: datetime | None = None) -> str:
    """One line per change for `keel watch`: status, agent, step, spend, and what the run waits for."""
    parts = [
        view.status.value,
        f"agent {view.active_agent or '-'}",
        f"step {view.step}",
        f"{count(view.tokens)} tok",
        money(view.cost_usd),
    ]
    if view.pending_review:
        review = view.pending_review
        target = review.tool or review.kind
        parts.append(f"review {target} {args_text(review.arguments)} (request {review.request_id})")
    elif view.waiting_for:
        parts.append(f"waiting for {view.waiting_for}")
    if view.status.is_final and view.last_error:
        parts.append(view.last_error)
    stamp = f"[{at.strftime('%H:%M:%S')}] " if at else ""
    return stamp + " · ".join(parts)


def _entry_body(entry: TranscriptEntry) -> str:
    data = entry.data
    if entry.kind == "tool_call" and "name" in data:
        arguments = data.get("arguments", "")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError:
                return f"{data['name']}({arguments})"  # shown as the model wrote it
        return f"{data['name']}({args_text(arguments) if isinstance(arguments, Mapping) else arguments})"
    if entry.kind == "handoff" and "to" in data:
        return f"-> {data['to']}" + (f": {entry.content}" if entry.content else "")
    if entry.kind == "decision" and "decision" in data:
        head = f"{data['decision']} by {data.get('reviewer', '?')}"
        return head + (f": {entry.content}" if entry.content else "")
    if entry.content:
        return entry.content
    return args_text(data) if data else ""


def render_transcript(entries: Sequence[TranscriptEntry]) -> str:
    """The `keel transcript` view: one line per entry, in order (`--json` has every field whole)."""
    if not entries:
        return "(empty transcript)"
    lines = []
    for entry in entries:
        who = entry.agent or entry.role or "-"
        head = f"#{entry.step:<3} {entry.kind:<12} {who}"
        body = _cut(_entry_body(entry), MAX_CONTENT)
        lines.append(f"{head}: {body}" if body else head)
    return "\n".join(lines)


def render_conversation(messages: Sequence[ChatMessage]) -> str:
    """The `keel transcript --conversation` view: each message, numbered, its content whole."""
    if not messages:
        return "(no stored conversation)"
    lines = []
    for number, message in enumerate(messages, start=1):
        who = message.role + (f" {message.name}" if message.name else "")
        calls = "".join(f"\n    calls {c.name}({c.arguments})" for c in message.tool_calls)
        lines.append(f"[{number}] {who}: {message.content or ''}{calls}")
    return "\n".join(lines)


def render_result(result: SagaResult, *, workflow_id: str | None = None) -> str:
    """A finished run's result: outcome, steps, spend, reviews and compensations."""
    lines = []
    if workflow_id:
        lines.append(_field("run", workflow_id))
    lines.append(_field("status", result.status.value))
    if result.reason:
        lines.append(_field("reason", result.reason))
    if result.output:
        lines.append(_field("output", _cut(result.output, 600)))
    lines.append(_field("spend", f"{count(result.tokens)} tokens, {money(result.cost_usd)}"))
    if result.steps:
        lines.append("steps:")
        rows = [
            [
                s.step,
                s.kind,
                s.agent,
                s.name,
                count(s.tokens),
                money(s.cost_usd),
                f"{s.duration_ms:,.0f} ms",
            ]
            for s in result.steps
        ]
        lines.append(_indent(table(["#", "kind", "agent", "name", "tokens", "cost", "took"], rows)))
    if result.reviews:
        lines.append("reviews:")
        for r in result.reviews:
            comment = f": {r.comment}" if r.comment else ""
            lines.append(f"  {r.decision} {r.tool or r.kind} by {r.reviewer} via {r.via}{comment}")
    if result.compensations:
        lines.append("compensations (in the order they ran):")
        for c in result.compensations:
            error = f" ({c.error})" if c.error else ""
            lines.append(f"  step {c.step}: {c.compensation} for {c.name}: {c.status}{error}")
    if result.uncompensated:
        lines.append(_field("UNCOMPENSATED", ", ".join(result.uncompensated)))
    return "\n".join(lines)


def render_outcome(outcome: ReviewOutcome) -> str:
    """What the `review` update returned."""
    head = f"{outcome.decision} (request {outcome.request_id})"
    return f"{head}: {outcome.message} [status {outcome.status.value}]"


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


# --------------------------------------------------------------------------- lists


def render_runs(runs: Sequence[Any]) -> str:
    """The `keel list` table (`RunSummary` items)."""
    if not runs:
        return "no runs found"
    rows = [
        [
            r.workflow_id,
            "Stuck" if getattr(r, "stuck", None) else r.status,
            r.team or "-",
            r.agent or "-",
            count(r.tokens),
            money(r.cost_usd),
            when(r.started_at),
        ]
        for r in runs
    ]
    text = table(["WORKFLOW ID", "STATUS", "TEAM", "AGENT", "TOKENS", "COST", "STARTED"], rows)
    stuck = [r for r in runs if getattr(r, "stuck", None)]
    if stuck:
        text += "\n\nstuck runs (their workflow task keeps failing on the worker):"
        text += "".join(f"\n  {r.workflow_id}: {_cut(r.stuck, 200)}" for r in stuck)
    return text


def render_pending(runs: Sequence[Any]) -> str:
    """The `keel pending` view: each run waiting for review and what it waits for."""
    if not runs:
        return "no runs are waiting for a review or stuck"
    blocks = []
    for r in runs:
        head = f"{r.workflow_id}  ({r.team or '-'}, started {when(r.started_at)})"
        if getattr(r, "stuck", None):
            blocks.append(head + f"\n  STUCK: its workflow task keeps failing on the worker: {r.stuck}")
        elif r.pending_review is not None:
            blocks.append(head + "\n" + render_review(r.pending_review))
        else:
            blocks.append(head + "\n  " + (r.waiting_for or "waiting for a review"))
    return "\n\n".join(blocks)


def render_failed(runs: Sequence[Any]) -> str:
    """The `keel failed` dead-letter view: why each run ended and what it left uncompensated."""
    if not runs:
        return "no failed or compensated runs"
    blocks = []
    for r in runs:
        lines = [f"{r.workflow_id}  {r.status}  ({r.team or '-'}, ended {when(r.closed_at)})"]
        lines.append(f"  reason: {r.reason or '-'}")
        if r.uncompensated:
            lines.append(f"  uncompensated: {', '.join(r.uncompensated)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_teams(teams: Mapping[str, TeamSpec], notes: Mapping[str, list[str]] | None = None) -> str:
    """The `keel teams` view: each registered team with its agents and tools (`notes`: MCP servers)."""
    if not teams:
        return "no teams registered"
    blocks = []
    for name in sorted(teams):
        team = teams[name]
        lines = [f"{name}" + (f": {team.description}" if team.description else "")]
        for agent in team.agents:
            marks = " (entry)" if agent.name == team.entry else ""
            extra = []
            if agent.tools:
                extra.append("tools " + ", ".join(agent.tools))
            if agent.handoffs:
                extra.append("hands off to " + ", ".join(agent.handoffs))
            context = agent.context
            if context is not None and context.strategy != "keep_all":
                extra.append(f"context {context.strategy} at {count(context.max_tokens or 0)} tokens")
            if agent.mcp and any(s.listed_tools is None for s in team.mcp_servers):  # tools not listed
                extra.append(
                    "MCP " + ", ".join(f"{a.server}:{','.join(a.tools or ['*'])}" for a in agent.mcp)
                )
            lines.append(f"  {agent.name}{marks}" + (f": {'; '.join(extra)}" if extra else ""))
        lines += [f"  {note}" for note in (notes or {}).get(name, [])]
        for tool in team.tools:
            where = f" [mcp {tool.mcp.server}: {tool.mcp.hints}]" if tool.mcp else ""
            lines.append(f"  tool {tool.name}{where}: {_tool_policy(team, tool)}")
        reviewed = [t.name for t in team.tools if team.needs_review(t.name)]
        if reviewed:
            lines.append(f"  review before: {', '.join(reviewed)}")
        policy = team.review
        who = f"; reviewers {', '.join(policy.reviewers)}" if policy.reviewers else ""
        signed = f"; signed by one of {len(policy.reviewer_keys)} key(s)" if policy.reviewer_keys else ""
        lines.append(f"  review: timeout {policy.timeout_s:g}s then {policy.on_timeout}{who}{signed}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _tool_policy(team: TeamSpec, tool: ToolSpec) -> str:
    undo = f"undone by {tool.compensation}" if tool.compensation else "no compensation"
    if tool.mcp is not None:
        u = tool.mcp.undo
        args = ", ".join(f"{k}={v}" for k, v in u.arguments.items()) if u else ""
        undo = f"undone by {u.server}.{u.tool}({args})" if u else "read-only" if tool.mcp.read_only else undo
    if tool.name in team.review.tools or tool.requires_review:
        review = "always reviewed" + (" (destructive)" if tool.mcp and tool.mcp.destructive else "")
    elif tool.review_when:
        review = f"reviewed when {tool.review_when}"
    elif tool.review_check:
        review = "reviewed when its Python predicate says so"
    else:
        review = "no review"
    return f"{undo}; {review}"


def teams_json(teams: Mapping[str, TeamSpec]) -> list[dict[str, Any]]:
    """The JSON form of `keel teams --json`: the full spec of each team, sorted by name."""
    return [teams[name].model_dump(mode="json") for name in sorted(teams)]
