"""MCP tools in a run: listed once when the team is resolved, called through temporalio-mcp's activities.

Every MCP operation is an activity of temporalio-mcp (`temporalio.mcp.<server>.list-tools` and
`.call-tool`), scheduled by its workflow-side `TemporalMCPClient`. The listing is turned into the
team's tools (`agentkeel.mcp.resolve.with_listings`) and kept in the run's state, so a server that
changes its tools mid-run changes nothing the model is offered, and replay reads the listing from
history. A call sends its idempotency key in `_meta`, registers what undoes it before it runs, and
waits out a server outage on a durable timer; an `isError` result goes back to the model.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Protocol

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType, ActivityConfig

with workflow.unsafe.imports_passed_through():
    from mcp.types import CallToolResult
    from temporalio.mcp import TemporalMCPClient
    from temporalio.mcp._activity import _activity_name as mcp_activity_name

    from agentkeel import errors
    from agentkeel.contracts import (
        AgentSpec,
        ChatMessage,
        CompensationRequest,
        SagaCheckpoint,
        TeamSpec,
        ToolCall,
        ToolRequest,
        ToolSpec,
    )
    from agentkeel.mcp.contracts import (
        COMPENSATION_META,
        DEFAULT_IDEMPOTENCY_META,
        STORE_RESULT_META,
        STORED_BYTES_META,
        STORED_OUTPUT_META,
        UNRESOLVED_COMPENSATION_ACTIVITY,
        MCPBinding,
        MCPCallArgs,
    )
    from agentkeel.mcp.resolve import (
        PYTHON,
        MCPTeamError,
        error_text,
        tool_output,
        undo_arguments,
        with_listings,
    )

from agentkeel.workflows.failures import Halt, application_cause, describe_failure
from agentkeel.workflows.policies import TOOL_HEARTBEAT
from agentkeel.workflows.runbook import RunBook
from agentkeel.workflows.saga import Compensation

MCP_LIST_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
"""Listing at the start: a server that stays unreachable fails the run at once, by name."""
MCP_CALL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=4,
)
"""One tool call; temporalio-mcp marks the errors a retry cannot fix non-retryable."""
MCP_OUTAGE_PAUSE = timedelta(seconds=5)
"""When a server stays away past a call's retries, the run waits this long and calls again..."""
MCP_OUTAGE_MAX = timedelta(minutes=15)
"""...until the outage has lasted this long; then the run fails and compensates."""
_CLIENT_TIMEOUT_MARGIN_S = 5.0
"""The activity outlives the MCP client's own read timeout, which then reports a clean timeout."""
_OUTAGES = frozenset({errors.MCP_UNAVAILABLE, errors.CIRCUIT_OPEN})
_MCP_PROTOCOL_ERROR = "MCPProtocolError"
_REFUSALS = frozenset({-32600, -32601, -32602})
"""JSON-RPC codes of a request the server did not act on: invalid request, unknown method, invalid params."""


class _Loop(Protocol):
    """What `run_mcp_tool` uses of the agent loop."""

    _book: RunBook
    _state: SagaCheckpoint
    _stored: object | None
    """The run's stored conversation (set for runs since the conversation store)."""

    def _tool_message(self, call: ToolCall, content: str) -> None: ...

    def _count_tool_error(self, problem: str) -> None: ...


def _config(timeout_s: float, retry: RetryPolicy, summary: str) -> ActivityConfig:
    return ActivityConfig(
        start_to_close_timeout=timedelta(seconds=timeout_s + _CLIENT_TIMEOUT_MARGIN_S),
        heartbeat_timeout=TOOL_HEARTBEAT,  # the worker's interceptor heartbeats every activity
        retry_policy=retry,
        summary=summary,
        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    )


# --------------------------------------------------------------------------- listing


async def list_team_tools(team: TeamSpec) -> TeamSpec:
    """List each MCP server's tools once and return the team with them (kept in the run's state).

    Raises:
        Halt: A server cannot be reached or is not configured on the worker, or its tools do not
            fit the team (invalid names or schemas, unknown filters, `mcp_policy: strict`).
    """
    listings = {}
    for server in team.mcp_servers:
        client = TemporalMCPClient(
            server.name,
            activity_config=_config(
                server.timeout_s, MCP_LIST_RETRY, f"list tools of MCP server {server.name}"
            ),
        )
        try:
            listings[server.name] = (await client.list_tools()).tools
        except ActivityError as exc:
            raise Halt(f"MCP server {server.name!r} cannot be listed: {_why(exc, server.name)}") from None
    try:
        return with_listings(team, listings)
    except MCPTeamError as exc:
        raise Halt(f"team {team.name!r} refused at start: {exc}") from None


def _why(exc: ActivityError, server: str) -> str:
    cause = application_cause(exc)
    if cause is not None and cause.type == errors.ACTIVITY_NOT_REGISTERED:
        queue = workflow.info().task_queue
        return (
            f"no worker of task queue {queue} has MCP server {server!r} (declare it in a team it registers)"
        )
    return describe_failure(exc)


# --------------------------------------------------------------------------- calls


async def run_mcp_tool(
    loop: _Loop, agent: AgentSpec, spec: ToolSpec, call: ToolCall, arguments: dict[str, Any]
) -> None:
    """Call the MCP tool `spec` with `arguments` as one step of the run (see the module docstring)."""
    book, state = loop._book, loop._state
    bound = spec.mcp
    assert bound is not None, "run_mcp_tool runs MCP tools only"
    state.step += 1
    step = state.step
    key = book.key(step)
    comp = _register_undo(book, spec, bound, arguments, key, step)
    book.waiting_for = f"MCP tool {spec.name} ({bound.server})"
    book.update_details()
    book.attrs.flush()
    started = workflow.now()
    try:
        store = loop._stored is not None and not (bound.undo is not None and bound.undo.needs_result)
        result = await _call_through_outages(book, bound, arguments, _meta(bound, key, store=store))
    except ActivityError as exc:
        _call_failed(loop, exc, spec, call, comp)
        return
    finally:
        book.waiting_for = None
    if result.is_error:
        if comp is not None:
            book.saga.discard(comp)  # the tool says it did not do it: nothing to undo
        loop._tool_message(call, f"error: {error_text(result)}")
        loop._count_tool_error(f"MCP tool {spec.name} reported an error: {error_text(result)}")
        return
    stored = (result.meta or {}).get(STORED_OUTPUT_META)
    if isinstance(stored, str):  # large: the worker stored it, history keeps a reference and a preview
        text = "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")
        size = int((result.meta or {}).get(STORED_BYTES_META, 0))
        message = ChatMessage(role="tool", tool_call_id=call.id, name=call.name, content_ref=stored)
        book.add_message(message, size=size)
        data: dict[str, Any] = {"ref": stored, "bytes": size}
    else:
        output = tool_output(result)
        if comp is not None and bound.undo is not None and bound.undo.needs_result:
            _resolve_undo(book, comp, bound, arguments, output, key)
        text = json.dumps(output, sort_keys=True)
        loop._tool_message(call, text)
        data = {"result": output}
    detail = f"{bound.server}: {text[:120]} (key {key})"
    book.record("tool", agent.name, spec.name, step=step, detail=detail, started=started)
    data |= {"server": bound.server, "idempotency_key": key}
    book.transcript_add("tool_result", agent=agent.name, content=text[:120], data=data)
    book.update_details()


def _meta(bound: MCPBinding, key: str, *, store: bool = False) -> dict[str, Any] | None:
    # The key is recorded in history either way (the step's record names it).
    meta: dict[str, Any] = {bound.idempotency_meta: key} if bound.idempotency_meta else {}
    if store:
        meta[STORE_RESULT_META] = True  # taken out by the worker before the server sees the call
    return meta or None


async def _call_through_outages(
    book: RunBook, bound: MCPBinding, arguments: dict[str, Any], meta: dict[str, Any] | None
) -> CallToolResult:
    client = TemporalMCPClient(
        bound.server,
        activity_config=_config(bound.timeout_s, MCP_CALL_RETRY, f"{bound.server}: {bound.tool}"),
    )
    outage_started = None
    while True:
        try:
            return await client.call_tool(bound.tool, arguments, meta=meta)  # type: ignore[arg-type]
        except ActivityError as exc:
            book.last_error = describe_failure(exc)
            cause = application_cause(exc)
            if cause is None or cause.type not in _OUTAGES:
                raise
            outage_started = outage_started or workflow.now()
            if workflow.now() - outage_started >= MCP_OUTAGE_MAX:
                raise
            # The server is down past the call's retries: wait durably rather than fail a run
            # that has done work; the same idempotency key goes with the next call.
            book.waiting_for = f"MCP server {bound.server} unavailable, retrying ({book.last_error})"
            book.update_details()
            await workflow.sleep(MCP_OUTAGE_PAUSE, summary=f"wait for MCP server {bound.server}")


def _call_failed(
    loop: _Loop, exc: ActivityError, spec: ToolSpec, call: ToolCall, comp: Compensation | None
) -> None:
    """A refused call goes back to the model; anything else (unknown outcome) halts and compensates."""
    book = loop._book
    cause = application_cause(exc)
    book.last_error = describe_failure(exc)
    # The server refused the request itself (unknown tool, invalid params): nothing was done. An
    # invalid *response* is not a refusal: the tool may have acted, so its compensation stays.
    code = cause.details[0] if cause is not None and cause.details else None
    refused = cause is not None and cause.type == _MCP_PROTOCOL_ERROR and code in _REFUSALS
    unregistered = cause is not None and cause.type == errors.ACTIVITY_NOT_REGISTERED
    if (refused or unregistered) and comp is not None:
        book.saga.discard(comp)  # the server (or no worker) never ran it
    if refused:
        loop._tool_message(call, f"error: {cause.message if cause else book.last_error}")
        loop._count_tool_error(f"MCP tool {spec.name} refused the call: {book.last_error}")
        return
    server = spec.mcp.server if spec.mcp else "?"
    raise Halt(f"MCP tool {spec.name} failed: {_why(exc, server)}") from None


# --------------------------------------------------------------------------- compensations


def _register_undo(
    book: RunBook, spec: ToolSpec, bound: MCPBinding, arguments: dict[str, Any], key: str, step: int
) -> Compensation | None:
    undo = bound.undo
    if undo is None:
        return None
    # Registered before the call, like every compensation. Arguments taken from the result are
    # filled in when it comes; until then the stand-in says, if the saga unwinds, why it cannot undo.
    if undo.needs_result:
        reason = (
            f"cannot undo {spec.name} (step {step}) with {undo.tool}: its result is unknown; "
            f"look for the call with idempotency key {key}"
        )
        activity: str = UNRESOLVED_COMPENSATION_ACTIVITY
        arg: Any = CompensationRequest(
            idempotency_key=key,
            correlation_id=book.state.correlation_id,
            tool=spec.name,
            arguments=arguments,
            reason=reason,
        )
    else:
        built, _ = undo_arguments(undo, arguments, None, key)
        activity, arg = _undo_call(book, bound, built, key, step)
    summary = f"{undo.tool} (compensation of {spec.name})"
    comp = book.saga.add(spec.name, activity, arg, step=step, summary=summary)
    comp.label = undo.tool if undo.server == PYTHON else f"{undo.server}.{undo.tool}"
    return comp


def _resolve_undo(
    book: RunBook,
    comp: Compensation,
    bound: MCPBinding,
    arguments: dict[str, Any],
    output: dict[str, Any],
    key: str,
) -> None:
    assert bound.undo is not None
    built, problem = undo_arguments(bound.undo, arguments, output, key)
    if problem is not None:
        comp.arg = comp.arg.model_copy(update={"reason": f"cannot undo step {comp.step}: {problem}"})
        return
    comp.activity, comp.arg = _undo_call(book, bound, built, key, comp.step)


def _undo_call(
    book: RunBook, bound: MCPBinding, built: dict[str, Any], key: str, step: int
) -> tuple[str, Any]:
    """The activity and input that undo a call: a Python tool's, or an MCP `call-tool`."""
    undo = bound.undo
    assert undo is not None and undo.server is not None
    if undo.server == PYTHON:
        return undo.tool, ToolRequest(
            arguments=built,
            idempotency_key=key,
            correlation_id=book.state.correlation_id,
            workflow_id=workflow.info().workflow_id,
            step=step,
        )
    meta: dict[str, Any] = {
        COMPENSATION_META: key,
        bound.idempotency_meta or DEFAULT_IDEMPOTENCY_META: f"{key}:undo",
    }
    return mcp_activity_name(undo.server, "call-tool"), MCPCallArgs(
        name=undo.tool, arguments=built, meta=meta
    )
