"""`keel` commands that start, read and steer agent saga runs.

Commands: start, status, transcript, watch, list, pending, approve, reject,
edit, cancel, failed, redrive, teams. Each takes `--json` for scripting.

Exit codes are `agentkeel.starters.exit_codes.ExitCode`, the same for every command
(`keel --help` lists them). Errors are one line on stderr, one JSON object with
`--json`; `agentkeel.starters.cli_common.error_code` maps the starter API's errors to codes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentkeel.contracts import SagaRequest
from agentkeel.search_attributes import SagaStatus
from agentkeel.starters import render
from agentkeel.starters.cli_common import (
    CliError,
    Handler,
    connect,
    errors,
    json_flag,
    load_cli_settings,
    out,
    outcome_code,
    parse_limit,
    parse_metadata,
    print_started,
)
from agentkeel.starters.client import (
    Keel,
    RunHandle,
    RunStuck,
    check_goal_and_metadata,
    parse_status,
)
from agentkeel.starters.exit_codes import ExitCode
from agentkeel.starters.mcp_teams import resolve_mcp_teams
from agentkeel.starters.steer import cmd_approve, cmd_cancel, cmd_edit, cmd_redrive, cmd_reject

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


@errors
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
        raise CliError(usage)
    team = Path(args.team_file) if args.team_file else words[0]
    goal = read_goal(args, goal_arg)
    if not goal.strip():
        raise CliError("the goal is empty")
    metadata = parse_metadata(args.meta)
    settings = load_cli_settings()
    # Check everything that needs no server before touching the network: a bad team, model alias,
    # or a goal over the size limit is an input error whether or not a server is up.
    offline = Keel(settings=settings)
    _, spec = offline.resolve_team(team)
    offline.check_models(spec)
    check_goal_and_metadata(goal, metadata)
    async with connect(settings) as keel:
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
            print_started(started, as_json=args.json)
            return 0
        if not args.json:
            print_started(started, as_json=False)
            print(
                "waiting for the result (Ctrl-C stops waiting, not the run; "
                "`keel pending` shows reviews to decide)...",
                file=sys.stderr,
                flush=True,
            )
        result = await run.result()
        if args.json:
            out(render.to_json({**started, "result": result}))
        else:
            out(render.render_result(result))
        return outcome_code(result.status)


# --------------------------------------------------------------------------- reading


@errors
async def cmd_status(args: argparse.Namespace) -> int:
    """`keel status ID`."""
    async with connect() as keel:
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
            out(render.to_json(stuck) if args.json else render.render_stuck(stuck))
            return 0
        if args.json:
            out(render.to_json({"workflow_id": run.workflow_id, "ui_url": run.ui_url, **view.model_dump()}))
        else:
            out(render.render_status(view, workflow_id=run.workflow_id, ui_url=run.ui_url))
    return 0


async def _request_or_none(run: RunHandle) -> SagaRequest | None:
    try:
        return await run.request()
    except Exception:  # noqa: BLE001 - the request is extra detail: an undecodable one is left out
        return None


@errors
async def cmd_transcript(args: argparse.Namespace) -> int:
    """`keel transcript ID`."""
    async with connect() as keel:
        run = await keel.get(args.workflow_id)
        if args.conversation:
            messages = await run.conversation()
            out(render.to_json(messages) if args.json else render.render_conversation(messages))
            return 0
        entries = await run.transcript()
        out(render.to_json(entries) if args.json else render.render_transcript(entries))
    return 0


@errors
async def cmd_watch(args: argparse.Namespace) -> int:
    """`keel watch ID`: one line per change until the run ends."""
    if args.interval <= 0:
        raise CliError("--interval must be positive")
    async with connect() as keel:
        run = await keel.get(args.workflow_id)
        if not args.json:
            out(f"watching {run.workflow_id} ({run.ui_url}); Ctrl-C stops watching, not the run")
        last = None
        async for view in run.watch(interval=args.interval):
            last = view
            if args.json:
                out(render.to_json(view, indent=None))
            else:
                out(render.render_watch_line(view, at=datetime.now(UTC)))
    return outcome_code(last.status) if last is not None else ExitCode.OK


@errors
async def cmd_list(args: argparse.Namespace) -> int:
    """`keel list`."""
    limit = parse_limit(args)
    status = parse_status(args.status) if args.status else None
    async with connect() as keel:
        runs = await keel.list_runs(
            status=status, team=args.team, correlation_id=args.correlation_id, limit=limit
        )
        out(render.to_json(runs) if args.json else render.render_runs(runs))
    return 0


@errors
async def cmd_pending(args: argparse.Namespace) -> int:
    """`keel pending`."""
    limit = parse_limit(args)
    async with connect() as keel:
        runs = await keel.pending(team=args.team, limit=limit)
        out(render.to_json(runs) if args.json else render.render_pending(runs))
    return 0


@errors
async def cmd_failed(args: argparse.Namespace) -> int:
    """`keel failed`: the dead-letter view."""
    limit = parse_limit(args)
    async with connect() as keel:
        runs = await keel.failed(team=args.team, limit=limit)
        out(render.to_json(runs) if args.json else render.render_failed(runs))
    return 0


async def cmd_teams(args: argparse.Namespace) -> int:
    """`keel teams`: needs no server."""
    teams = Keel(settings=load_cli_settings()).teams()
    # Teams with MCP servers list their tools now, as a run would when it starts.
    teams, notes = await resolve_mcp_teams(teams)
    out(render.to_json(render.teams_json(teams)) if args.json else render.render_teams(teams, notes))
    return 0


# --------------------------------------------------------------------------- parsers


@dataclass(frozen=True)
class Arg:
    """One `add_argument` call: its flags (or positional name) and options."""

    flags: tuple[str, ...]
    options: Mapping[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    """An argument of a command, as `add_argument` takes it."""
    return Arg(flags, options)


@dataclass(frozen=True)
class Command:
    """One sub-command: what `register` adds to the parser.

    Attributes:
        name: The sub-command (`keel NAME`).
        run: Its handler.
        help: One line for `keel --help`.
        description: The paragraph of `keel NAME --help`.
        args: Its own arguments, after `--json`.
        decides: Takes `--reviewer` and `--request-id`; the value is the decision it sends.
        usage: A usage line, when argparse's would mislead.
    """

    name: str
    run: Handler
    help: str
    description: str
    args: tuple[Arg, ...] = ()
    decides: str | None = None
    usage: str | None = None


RUN_ID = arg("workflow_id", metavar="ID", help="workflow id of the run")
TEAM = arg("--team", help="only this team")
LIMIT = arg("--limit", type=str, default=50, help="at most this many runs (default 50)")
REUSE_ID = arg(
    "--reuse-id",
    action="store_true",
    help="allow --id to be the id of a run that has ended (the new run has side effects of its own)",
)
COMMENT = arg("--comment", help="why")

COMMANDS: tuple[Command, ...] = (
    Command(
        "start",
        cmd_start,
        "start an agent saga",
        'Start a run of a registered team (keel start travel "GOAL") or of a team file '
        '(keel start --team-file team.yaml "GOAL"). GOAL "-" reads the goal from standard input; '
        "--goal-file reads it from a file. Prints the workflow id and the UI link.",
        usage='keel start [options] TEAM "GOAL"  |  keel start --team-file FILE [options] "GOAL"',
        args=(
            arg(
                "words",
                nargs="*",
                metavar="TEAM GOAL",
                help="team name and goal (only the goal with --team-file; '-' reads it from standard input)",
            ),
            arg("--goal-file", metavar="FILE", help="read the goal from this UTF-8 text file"),
            REUSE_ID,
            arg("--team-file", metavar="FILE", help="YAML or JSON team file instead of a registered team"),
            arg("--id", help="workflow id (default keel-<team>-<12 hex chars>)"),
            arg("--correlation-id", help="correlation id (default: a new one)"),
            arg(
                "--meta",
                action="append",
                metavar="KEY=VALUE",
                help="metadata stored with the request (repeatable)",
            ),
            arg(
                "--wait",
                action="store_true",
                help="wait for the result and print it (exit 1 when the run did not complete its goal)",
            ),
        ),
    ),
    Command(
        "status",
        cmd_status,
        "show a run's status, pending review, spend and errors",
        "Show a run's status, pending review, spend and errors.",
        args=(RUN_ID,),
    ),
    Command(
        "transcript",
        cmd_transcript,
        "show a run's messages, tool calls, handoffs and decisions",
        "Show a run's messages, tool calls, handoffs and decisions, stored tool results read back "
        "from the conversation store. --conversation prints the whole conversation instead, every "
        "message as the model was given it.",
        args=(
            RUN_ID,
            arg("--conversation", action="store_true", help="the whole conversation, from the store"),
        ),
    ),
    Command(
        "watch",
        cmd_watch,
        "follow a run live until it ends",
        "Print a line each time the run changes (status, active agent, step, tokens, cost, "
        "what it waits for) until it ends. With --json, one JSON status object per line. "
        "Exits 0 when the run completed its goal, 1 when it ended otherwise.",
        args=(RUN_ID, arg("--interval", type=float, default=0.5, help="seconds between polls (default 0.5)")),
    ),
    Command(
        "list",
        cmd_list,
        "list runs, newest first",
        "List agent saga runs through the KeelStatus, KeelTeam and KeelCorrelationId search attributes.",
        args=(
            arg("--status", help=f"only this status ({', '.join(s.value for s in SagaStatus)})"),
            TEAM,
            arg("--correlation-id", help="only this correlation id"),
            LIMIT,
        ),
    ),
    Command(
        "pending",
        cmd_pending,
        "runs waiting for a review, with what they wait for",
        "List live runs whose status is AwaitingReview, each with the tool, arguments and "
        "reasoning it waits on.",
        args=(TEAM, LIMIT),
    ),
    Command(
        "approve",
        cmd_approve,
        "approve a run's pending review",
        "Approve the pending review through the `review` update and print what the run did.",
        decides="approve",
        args=(
            RUN_ID,
            COMMENT,
            arg("--signal", action="store_true", help="send the fire-and-forget `approve` signal instead"),
        ),
    ),
    Command(
        "reject",
        cmd_reject,
        "reject a run's pending review (the run compensates)",
        "Reject the pending review through the `review` update: the run compensates what it did.",
        decides="reject",
        args=(
            RUN_ID,
            arg("--reason", required=True, help="why (required)"),
            arg("--signal", action="store_true", help="send the fire-and-forget `reject` signal instead"),
        ),
    ),
    Command(
        "edit",
        cmd_edit,
        "approve a pending tool call with new arguments",
        "Edit-and-approve: run the pending tool call with new arguments, checked against "
        "the tool's JSON schema by the run.",
        decides="edit",
        args=(
            RUN_ID,
            arg(
                "--args",
                required=True,
                metavar="JSON",
                help="new arguments, a JSON object: '{\"amount_usd\": 500}'",
            ),
            COMMENT,
        ),
    ),
    Command(
        "cancel",
        cmd_cancel,
        "cancel a run (it compensates and ends Cancelled)",
        "Cancel a live run: it runs its compensations in reverse order and ends Cancelled.",
        args=(
            RUN_ID,
            arg("--reason", help="recorded with the cancellation request"),
            arg("--wait", action="store_true", help="wait until the run has ended and show its status"),
        ),
    ),
    Command(
        "failed",
        cmd_failed,
        "the dead-letter view: runs that ended Failed or Compensated",
        "Runs that ended Failed or Compensated (or that Temporal ended abnormally), "
        "with the reason and any steps left uncompensated. `keel redrive ID` retries one.",
        args=(TEAM, LIMIT),
    ),
    Command(
        "redrive",
        cmd_redrive,
        "start a new run with the same request as a finished one",
        "Start a new run with the request of a finished run, linked to it through "
        "metadata redrive_of, keeping its correlation id.",
        args=(
            arg("workflow_id", metavar="ID", help="workflow id of the finished run"),
            arg("--id", help="workflow id of the new run (default: a new one)"),
            REUSE_ID,
        ),
    ),
    Command(
        "teams",
        cmd_teams,
        "list the registered teams and their agents",
        "The teams shipped with agentkeel plus those in KEEL_TEAMS_DIR / keel.toml teams_dir.",
    ),
)
"""Every run command, in the order `keel --help` lists them."""


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
        help="the review request to decide (default: the one pending now, picked by the run)",
    )
    return parent


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the run commands to the `keel` parser."""
    js = json_flag()
    reviewer = _reviewer_flags()
    for command in COMMANDS:
        parser = subparsers.add_parser(
            command.name,
            parents=[js, reviewer] if command.decides else [js],
            help=command.help,
            description=command.description,
            usage=command.usage,
        )
        for argument in command.args:
            parser.add_argument(*argument.flags, **argument.options)
        if command.decides:
            parser.set_defaults(decision=command.decides)
        parser.set_defaults(func=command.run)
