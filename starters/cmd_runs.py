"""`keel` commands that start, read and steer agent saga runs.

Commands: start, status, transcript, watch, list, pending, approve, reject,
edit, cancel, failed, redrive, teams. Each takes `--json` for scripting.

Exit codes are `agentkeel.starters.exit_codes.ExitCode`, the same for every command
(`keel --help` lists them). Errors are one line on stderr, one JSON object with
`--json`; `agentkeel.starters.cli.error_code` maps the starter API's errors to codes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.service import RPCError

from agentkeel.contracts import SagaRequest
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import ConfigError, Settings, load_settings
from agentkeel.starters import render
from agentkeel.starters.cli import CliError
from agentkeel.starters.client import (
    Keel,
    RunHandle,
    RunStuck,
    check_goal_and_metadata,
    parse_status,
)
from agentkeel.starters.exit_codes import ExitCode
from agentkeel.starters.reviewer import REVIEWER_KEY_ENV, resolve_reviewer

EXIT_BAD_INPUT = ExitCode.BAD_INPUT

Handler = Callable[[argparse.Namespace], Awaitable[int]]


# --------------------------------------------------------------------------- plumbing


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


@asynccontextmanager
async def _connect(settings: Settings | None = None) -> AsyncIterator[Keel]:
    """A connected `Keel`; an unreachable server becomes a one-line error."""
    try:
        keel = await Keel.connect(settings=settings or _settings())
    except ConnectionError as exc:
        raise CliError(str(exc), ExitCode.UNREACHABLE) from None
    yield keel


def outcome_code(status: SagaStatus) -> int:
    """The exit code of a run's outcome: `OK` when it completed its goal, else `GOAL_NOT_REACHED`."""
    return ExitCode.OK if status == SagaStatus.COMPLETED else ExitCode.GOAL_NOT_REACHED


def _errors(fn: Handler) -> Handler:
    """Turn raw Temporal errors into one-line `CliError`s (the starter API's own errors are mapped
    to exit codes by `agentkeel.starters.cli.error_code`, the same for every command)."""

    @functools.wraps(fn)
    async def wrapper(args: argparse.Namespace) -> int:
        try:
            return await fn(args)
        except RPCError as exc:
            first = exc.message.strip().splitlines()[0] if exc.message.strip() else exc.status.name
            code = ExitCode.UNREACHABLE if exc.status.name == "UNAVAILABLE" else ExitCode.CONFLICT
            raise CliError(f"Temporal refused the request ({exc.status.name}): {first}", code) from None

    return wrapper


def _out(text: str) -> None:
    print(text, flush=True)


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    """Decode a JSON object given on the command line.

    Raises:
        CliError: not JSON, or JSON that is not an object.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{option} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", EXIT_BAD_INPUT
        ) from None
    if not isinstance(value, dict):
        raise CliError(f"{option} must be a JSON object, got {type(value).__name__}", EXIT_BAD_INPUT)
    return value


def parse_metadata(items: list[str] | None) -> dict[str, str]:
    """`KEY=VALUE` pairs from repeated `--meta` options.

    Raises:
        CliError: an item without `=` or with an empty key.
    """
    metadata: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--meta wants KEY=VALUE, got {item!r}", EXIT_BAD_INPUT)
        metadata[key.strip()] = value
    return metadata


# --------------------------------------------------------------------------- start


def read_goal(args: argparse.Namespace, goal: str | None) -> str:
    """The goal: the argument, standard input for `-`, or the file of `--goal-file`.

    Raises:
        CliError: a goal given twice, an unreadable file or input that is not UTF-8 text.
    """
    if args.goal_file is not None:
        if goal is not None:
            raise CliError("give the goal once: as an argument, as '-' (standard input) or with --goal-file")
        try:
            return Path(args.goal_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"--goal-file {args.goal_file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise CliError(f"--goal-file {args.goal_file}: not UTF-8 text") from None
    if goal == "-":
        try:
            return sys.stdin.read()
        except UnicodeDecodeError:
            raise CliError("the goal on standard input is not UTF-8 text") from None
    assert goal is not None
    return goal


@_errors
async def cmd_start(args: argparse.Namespace) -> int:
    """`keel start TEAM GOAL` / `keel start --team-file FILE GOAL` (GOAL `-`: standard input)."""
    words: list[str] = args.words
    team: str | Path
    want = 0 if args.team_file else 1  # words before the goal
    usage = (
        "with --team-file give only the goal: keel start --team-file FILE GOAL"
        if args.team_file
        else 'give a team and a goal: keel start TEAM "GOAL" (or --team-file FILE)'
    )
    if len(words) == want + 1:
        goal_arg: str | None = words[want]
    elif len(words) == want and args.goal_file is not None:
        goal_arg = None
    else:
        raise CliError(usage, EXIT_BAD_INPUT)
    team = Path(args.team_file) if args.team_file else words[0]
    goal = read_goal(args, goal_arg)
    if not goal.strip():
        raise CliError("the goal is empty", EXIT_BAD_INPUT)
    metadata = parse_metadata(args.meta)
    settings = _settings()
    # Check everything that needs no server before touching the network: a bad team, model alias,
    # or a goal over the size limit is an input error whether or not a server is up.
    offline = Keel(settings=settings)
    _, spec = offline.resolve_team(team)
    offline.check_models(spec)
    check_goal_and_metadata(goal, metadata)
    async with _connect(settings) as keel:
        run = await keel.start(
            team,
            goal,
            workflow_id=args.id,
            correlation_id=args.correlation_id,
            metadata=metadata,
            reuse_id=args.reuse_id,
        )
        started = {
            "workflow_id": run.workflow_id,
            "run_id": run.run_id,
            "correlation_id": run.correlation_id,
            "ui_url": run.ui_url,
        }
        if not args.wait:
            if args.json:
                _out(render.to_json(started))
            else:
                _out(f"started {run.workflow_id}")
                _out(f"ui: {run.ui_url}")
            return 0
        if not args.json:
            _out(f"started {run.workflow_id}")
            _out(f"ui: {run.ui_url}")
            print(
                "waiting for the result (Ctrl-C stops waiting, not the run; "
                "`keel pending` shows reviews to decide)...",
                file=sys.stderr,
                flush=True,
            )
        result = await run.result()
        if args.json:
            _out(render.to_json({**started, "result": result}))
        else:
            _out(render.render_result(result))
        return outcome_code(result.status)


# --------------------------------------------------------------------------- reading


@_errors
async def cmd_status(args: argparse.Namespace) -> int:
    """`keel status ID`."""
    async with _connect() as keel:
        run = await keel.get(args.workflow_id)
        try:
            view = await run.status()
        except RunStuck as exc:
            # Shown, not raised: a stuck run is a state to see, and its worker's error is the news.
            request = await _request_or_none(run)
            stuck = {
                "workflow_id": run.workflow_id,
                "ui_url": run.ui_url,
                "status": "Stuck",
                "stuck": exc.worker_error,
                "team": request.team_label if request else None,
                "goal": request.goal if request else None,
                "correlation_id": request.correlation_id if request else None,
            }
            _out(render.to_json(stuck) if args.json else render.render_stuck(stuck))
            return 0
        if args.json:
            _out(render.to_json({"workflow_id": run.workflow_id, "ui_url": run.ui_url, **view.model_dump()}))
        else:
            _out(render.render_status(view, workflow_id=run.workflow_id, ui_url=run.ui_url))
    return 0


async def _request_or_none(run: RunHandle) -> SagaRequest | None:
    try:
        return await run.request()
    except Exception:  # noqa: BLE001 - the request is extra detail: an undecodable one is left out
        return None


@_errors
async def cmd_transcript(args: argparse.Namespace) -> int:
    """`keel transcript ID`."""
    async with _connect() as keel:
        run = await keel.get(args.workflow_id)
        entries = await run.transcript()
        _out(render.to_json(entries) if args.json else render.render_transcript(entries))
    return 0


@_errors
async def cmd_watch(args: argparse.Namespace) -> int:
    """`keel watch ID`: one line per change until the run ends."""
    if args.interval <= 0:
        raise CliError("--interval must be positive", EXIT_BAD_INPUT)
    async with _connect() as keel:
        run = await keel.get(args.workflow_id)
        if not args.json:
            _out(f"watching {run.workflow_id} ({run.ui_url}); Ctrl-C stops watching, not the run")
        last = None
        async for view in run.watch(interval=args.interval):
            last = view
            if args.json:
                _out(render.to_json(view, indent=None))
            else:
                _out(render.render_watch_line(view, at=datetime.now(UTC)))
    return outcome_code(last.status) if last is not None else ExitCode.OK


@_errors
async def cmd_list(args: argparse.Namespace) -> int:
    """`keel list`."""
    limit = _limit(args)
    status = parse_status(args.status) if args.status else None
    async with _connect() as keel:
        runs = await keel.list_runs(
            status=status, team=args.team, correlation_id=args.correlation_id, limit=limit
        )
        _out(render.to_json(runs) if args.json else render.render_runs(runs))
    return 0


@_errors
async def cmd_pending(args: argparse.Namespace) -> int:
    """`keel pending`."""
    limit = _limit(args)
    async with _connect() as keel:
        runs = await keel.pending(team=args.team, limit=limit)
        _out(render.to_json(runs) if args.json else render.render_pending(runs))
    return 0


@_errors
async def cmd_failed(args: argparse.Namespace) -> int:
    """`keel failed`: the dead-letter view."""
    limit = _limit(args)
    async with _connect() as keel:
        runs = await keel.failed(team=args.team, limit=limit)
        _out(render.to_json(runs) if args.json else render.render_failed(runs))
    return 0


async def cmd_teams(args: argparse.Namespace) -> int:
    """`keel teams`: needs no server."""
    teams = Keel(settings=_settings()).teams()
    _out(render.to_json(render.teams_json(teams)) if args.json else render.render_teams(teams))
    return 0


# --------------------------------------------------------------------------- deciding


async def _decide(args: argparse.Namespace, decide: Callable[[RunHandle], Awaitable[Any]]) -> int:
    try:
        who = resolve_reviewer(args.reviewer)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    args.reviewer = who.name
    signed = bool(os.environ.get(REVIEWER_KEY_ENV))
    as_who = f"as {who.name} (from {who.source}{', signed' if signed else ''})"
    async with _connect() as keel:
        run = await keel.get(args.workflow_id)
        outcome = await decide(run)
        identity = {"reviewer": who.name, "reviewer_source": who.source, "signed": signed}
        if outcome is None:  # a signal: nothing comes back
            sent = {"workflow_id": run.workflow_id, "signal": args.decision, "sent": True, **identity}
            _out(
                render.to_json(sent)
                if args.json
                else f"{args.decision} signal sent to {run.workflow_id} {as_who} "
                "(check `keel status` for its effect)"
            )
        elif args.json:
            _out(render.to_json({**outcome.model_dump(mode="json"), **identity}))
        else:
            _out(f"{render.render_outcome(outcome)} ({as_who})")
    return 0


@_errors
async def cmd_approve(args: argparse.Namespace) -> int:
    """`keel approve ID`."""

    async def decide(run: RunHandle) -> Any:
        if args.signal:
            return await run.signal_approve(
                reviewer=args.reviewer, comment=args.comment, request_id=args.request_id
            )
        return await run.approve(reviewer=args.reviewer, comment=args.comment, request_id=args.request_id)

    return await _decide(args, decide)


@_errors
async def cmd_reject(args: argparse.Namespace) -> int:
    """`keel reject ID --reason R`."""
    if not args.reason.strip():
        raise CliError("--reason is empty", EXIT_BAD_INPUT)

    async def decide(run: RunHandle) -> Any:
        if args.signal:
            return await run.signal_reject(
                reviewer=args.reviewer, reason=args.reason, request_id=args.request_id
            )
        return await run.reject(reviewer=args.reviewer, reason=args.reason, request_id=args.request_id)

    return await _decide(args, decide)


@_errors
async def cmd_edit(args: argparse.Namespace) -> int:
    """`keel edit ID --args JSON`: approve with new arguments."""
    arguments = parse_json_object(args.args, "--args")

    async def decide(run: RunHandle) -> Any:
        return await run.edit(
            arguments, reviewer=args.reviewer, comment=args.comment, request_id=args.request_id
        )

    return await _decide(args, decide)


@_errors
async def cmd_cancel(args: argparse.Namespace) -> int:
    """`keel cancel ID`."""
    async with _connect() as keel:
        run = await keel.get(args.workflow_id)
        await run.cancel(reason=args.reason or "")
        if not args.wait:
            if args.json:
                _out(render.to_json({"workflow_id": run.workflow_id, "cancel_requested": True}))
            else:
                _out(f"cancellation requested for {run.workflow_id}: it compensates and ends Cancelled")
            return 0
        views = [view async for view in run.watch()]
        view = views[-1]
        if args.json:
            _out(render.to_json({"workflow_id": run.workflow_id, **view.model_dump()}))
        else:
            _out(render.render_status(view, workflow_id=run.workflow_id, ui_url=run.ui_url))
    return 0


@_errors
async def cmd_redrive(args: argparse.Namespace) -> int:
    """`keel redrive ID`: a new run with the same request."""
    async with _connect() as keel:
        run = await keel.redrive(args.workflow_id, new_workflow_id=args.id, reuse_id=args.reuse_id)
        started = {
            "workflow_id": run.workflow_id,
            "run_id": run.run_id,
            "correlation_id": run.correlation_id,
            "redrive_of": args.workflow_id,
            "ui_url": run.ui_url,
        }
        if args.json:
            _out(render.to_json(started))
        else:
            _out(f"started {run.workflow_id} (redrive of {args.workflow_id})")
            _out(f"ui: {run.ui_url}")
    return 0


# --------------------------------------------------------------------------- parsers


def _json_flag() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    return parent


def _reviewer_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--reviewer",
        default=None,
        help="who decides (default: $KEEL_REVIEWER, else the OS user); decisions are signed "
        "with the key file $KEEL_REVIEWER_KEY names, when set",
    )
    parent.add_argument(
        "--request-id",
        default=None,
        help="the review request to decide (default: the one pending now, read from the status query)",
    )
    return parent


def _limit(args: argparse.Namespace) -> int:
    """`--limit` as a positive whole number (checked here, so a bad value is one line, not usage)."""
    try:
        value = int(args.limit)
    except ValueError:
        raise CliError(f"--limit must be a whole number, got {args.limit!r}", EXIT_BAD_INPUT) from None
    if value < 1:
        raise CliError(f"--limit must be at least 1, got {value}", EXIT_BAD_INPUT)
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the run commands to the `keel` parser."""
    js = _json_flag()
    reviewer = _reviewer_flags()

    p = subparsers.add_parser(
        "start",
        parents=[js],
        help="start an agent saga",
        usage='keel start [options] TEAM "GOAL"  |  keel start --team-file FILE [options] "GOAL"',
        description='Start a run of a registered team (keel start travel "GOAL") or of a team file '
        '(keel start --team-file team.yaml "GOAL"). GOAL "-" reads the goal from standard input; '
        "--goal-file reads it from a file. Prints the workflow id and the UI link.",
    )
    p.add_argument(
        "words",
        nargs="*",
        metavar="TEAM GOAL",
        help="team name and goal (only the goal with --team-file; '-' reads it from standard input)",
    )
    p.add_argument("--goal-file", metavar="FILE", help="read the goal from this UTF-8 text file")
    p.add_argument(
        "--reuse-id",
        action="store_true",
        help="allow --id to be the id of a run that has ended (the new run has side effects of its own)",
    )
    p.add_argument("--team-file", metavar="FILE", help="YAML or JSON team file instead of a registered team")
    p.add_argument("--id", help="workflow id (default keel-<team>-<12 hex chars>)")
    p.add_argument("--correlation-id", help="correlation id (default: a new one)")
    p.add_argument(
        "--meta", action="append", metavar="KEY=VALUE", help="metadata stored with the request (repeatable)"
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the result and print it (exit 1 when the run did not complete its goal)",
    )
    p.set_defaults(func=cmd_start)

    for name, func, helptext in (
        ("status", cmd_status, "show a run's status, pending review, spend and errors"),
        ("transcript", cmd_transcript, "show a run's messages, tool calls, handoffs and decisions"),
    ):
        p = subparsers.add_parser(
            name, parents=[js], help=helptext, description=helptext[0].upper() + helptext[1:] + "."
        )
        p.add_argument("workflow_id", metavar="ID", help="workflow id of the run")
        p.set_defaults(func=func)

    p = subparsers.add_parser(
        "watch",
        parents=[js],
        help="follow a run live until it ends",
        description="Print a line each time the run changes (status, active agent, step, tokens, cost, "
        "what it waits for) until it ends. With --json, one JSON status object per line. "
        "Exits 0 when the run completed its goal, 1 when it ended otherwise.",
    )
    p.add_argument("workflow_id", metavar="ID", help="workflow id of the run")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls (default 0.5)")
    p.set_defaults(func=cmd_watch)

    p = subparsers.add_parser(
        "list",
        parents=[js],
        help="list runs, newest first",
        description="List agent saga runs through the KeelStatus, KeelTeam and KeelCorrelationId "
        "search attributes.",
    )
    p.add_argument("--status", help=f"only this status ({', '.join(s.value for s in SagaStatus)})")
    p.add_argument("--team", help="only this team")
    p.add_argument("--correlation-id", help="only this correlation id")
    p.add_argument("--limit", type=str, default=50, help="at most this many runs (default 50)")
    p.set_defaults(func=cmd_list)

    p = subparsers.add_parser(
        "pending",
        parents=[js],
        help="runs waiting for a review, with what they wait for",
        description="List live runs whose status is AwaitingReview, each with the tool, arguments and "
        "reasoning it waits on.",
    )
    p.add_argument("--team", help="only this team")
    p.add_argument("--limit", type=str, default=50, help="at most this many runs (default 50)")
    p.set_defaults(func=cmd_pending)

    p = subparsers.add_parser(
        "approve",
        parents=[js, reviewer],
        help="approve a run's pending review",
        description="Approve the pending review through the `review` update and print what the run did.",
    )
    p.add_argument("workflow_id", metavar="ID", help="workflow id of the run")
    p.add_argument("--comment", help="why")
    p.add_argument("--signal", action="store_true", help="send the fire-and-forget `approve` signal instead")
    p.set_defaults(func=cmd_approve, decision="approve")

    p = subparsers.add_parser(
        "reject",
        parents=[js, reviewer],
        help="reject a run's pending review (the run compensates)",
        description="Reject the pending review through the `review` update: the run compensates what it did.",
    )
    p.add_argument("workflow_id", metavar="ID", help="workflow id of the run")
    p.add_argument("--reason", required=True, help="why (required)")
    p.add_argument("--signal", action="store_true", help="send the fire-and-forget `reject` signal instead")
    p.set_defaults(func=cmd_reject, decision="reject")

    p = subparsers.add_parser(
        "edit",
        parents=[js, reviewer],
        help="approve a pending tool call with new arguments",
        description="Edit-and-approve: run the pending tool call with new arguments, checked against "
        "the tool's JSON schema by the run.",
    )
    p.add_argument("workflow_id", metavar="ID", help="workflow id of the run")
    p.add_argument(
        "--args", required=True, metavar="JSON", help="new arguments, a JSON object: '{\"amount_usd\": 500}'"
    )
    p.add_argument("--comment", help="why")
    p.set_defaults(func=cmd_edit, decision="edit")

    p = subparsers.add_parser(
        "cancel",
        parents=[js],
        help="cancel a run (it compensates and ends Cancelled)",
        description="Cancel a live run: it runs its compensations in reverse order and ends Cancelled.",
    )
    p.add_argument("workflow_id", metavar="ID", help="workflow id of the run")
    p.add_argument("--reason", help="recorded with the cancellation request")
    p.add_argument("--wait", action="store_true", help="wait until the run has ended and show its status")
    p.set_defaults(func=cmd_cancel)

    p = subparsers.add_parser(
        "failed",
        parents=[js],
        help="the dead-letter view: runs that ended Failed or Compensated",
        description="Runs that ended Failed or Compensated (or that Temporal ended abnormally), "
        "with the reason and any steps left uncompensated. `keel redrive ID` retries one.",
    )
    p.add_argument("--team", help="only this team")
    p.add_argument("--limit", type=str, default=50, help="at most this many runs (default 50)")
    p.set_defaults(func=cmd_failed)

    p = subparsers.add_parser(
        "redrive",
        parents=[js],
        help="start a new run with the same request as a finished one",
        description="Start a new run with the request of a finished run, linked to it through "
        "metadata redrive_of, keeping its correlation id.",
    )
    p.add_argument("workflow_id", metavar="ID", help="workflow id of the finished run")
    p.add_argument("--id", help="workflow id of the new run (default: a new one)")
    p.add_argument(
        "--reuse-id",
        action="store_true",
        help="allow --id to be the id of a run that has ended (the new run has side effects of its own)",
    )
    p.set_defaults(func=cmd_redrive)

    p = subparsers.add_parser(
        "teams",
        parents=[js],
        help="list the registered teams and their agents",
        description="The teams shipped with agentkeel plus those in KEEL_TEAMS_DIR / keel.toml teams_dir.",
    )
    p.set_defaults(func=cmd_teams)
