"""Handlers of the `keel` commands that steer a run: approve, reject, edit, cancel, redrive.

`agentkeel.starters.cmd_runs` registers them with the other run commands. A decision
is one RPC: the handle is made without looking the run up, and the `review` update
itself says when the run does not exist or has ended.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from agentkeel.starters import render
from agentkeel.starters.cli_common import CliError, connect, errors, out, parse_json_object, print_started
from agentkeel.starters.client import RunHandle
from agentkeel.starters.reviewer import resolve_reviewer


async def _decide(args: argparse.Namespace, decide: Callable[[RunHandle], Awaitable[Any]]) -> int:
    try:
        who = resolve_reviewer(args.reviewer)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    args.reviewer = who.name
    async with connect() as keel:
        # The key the decision is signed with, as the client finds it (KEEL_REVIEWER_KEY).
        signed = keel.signing_key() is not None
        as_who = f"as {who.name} (from {who.source}{', signed' if signed else ''})"
        # No look first: the decision itself finds out whether the run exists (one RPC).
        run = keel.handle(args.workflow_id)
        outcome = await decide(run)
        identity = {"reviewer": who.name, "reviewer_source": who.source, "signed": signed}
        if outcome is None:  # a signal: nothing comes back
            sent = {"workflow_id": run.workflow_id, "signal": args.decision, "sent": True, **identity}
            out(
                render.to_json(sent)
                if args.json
                else f"{args.decision} signal sent to {run.workflow_id} {as_who} "
                "(check `keel status` for its effect)"
            )
        elif args.json:
            out(render.to_json({**outcome.model_dump(mode="json"), **identity}))
        else:
            out(f"{render.render_outcome(outcome)} ({as_who})")
    return 0


@errors
async def cmd_approve(args: argparse.Namespace) -> int:
    """`keel approve ID`."""

    return await _decide(args, lambda run: _update_or_signal(run, args, comment=args.comment))


@errors
async def cmd_reject(args: argparse.Namespace) -> int:
    """`keel reject ID --reason R`."""
    if not args.reason.strip():
        raise CliError("--reason is empty")

    return await _decide(args, lambda run: _update_or_signal(run, args, reason=args.reason))


async def _update_or_signal(run: RunHandle, args: argparse.Namespace, **why: str | None) -> Any:
    """Approve or reject (`args.decision`) through the `review` update, or with `--signal` the signal."""
    update, signal = {
        "approve": (run.approve, run.signal_approve),
        "reject": (run.reject, run.signal_reject),
    }[args.decision]
    send: Callable[..., Awaitable[Any]] = signal if args.signal else update
    return await send(reviewer=args.reviewer, request_id=args.request_id, **why)


@errors
async def cmd_edit(args: argparse.Namespace) -> int:
    """`keel edit ID --args JSON`: approve with new arguments."""
    arguments = parse_json_object(args.args, "--args")

    async def decide(run: RunHandle) -> Any:
        return await run.edit(
            arguments, reviewer=args.reviewer, comment=args.comment, request_id=args.request_id
        )

    return await _decide(args, decide)


@errors
async def cmd_cancel(args: argparse.Namespace) -> int:
    """`keel cancel ID`."""
    async with connect() as keel:
        run = await keel.get(args.workflow_id)
        await run.cancel(reason=args.reason or "")
        if not args.wait:
            if args.json:
                out(render.to_json({"workflow_id": run.workflow_id, "cancel_requested": True}))
            else:
                out(f"cancellation requested for {run.workflow_id}: it compensates and ends Cancelled")
            return 0
        views = [view async for view in run.watch()]
        view = views[-1]
        if args.json:
            out(render.to_json({"workflow_id": run.workflow_id, **view.model_dump()}))
        else:
            out(render.render_status(view, workflow_id=run.workflow_id, ui_url=run.ui_url))
    return 0


@errors
async def cmd_redrive(args: argparse.Namespace) -> int:
    """`keel redrive ID`: a new run with the same request."""
    async with connect() as keel:
        run = await keel.redrive(args.workflow_id, new_workflow_id=args.id, reuse_id=args.reuse_id)
        started = {
            "workflow_id": run.workflow_id,
            "run_id": run.run_id,
            "correlation_id": run.correlation_id,
            "redrive_of": args.workflow_id,
            "ui_url": run.ui_url,
        }
        print_started(started, as_json=args.json, note=f" (redrive of {args.workflow_id})")
    return 0
