"""`keel demo`: the main job. Runs the travel-booking example end to end on the embedded stack.

It starts what is not already running (Temporal dev server, offline LLM
provider, a worker), runs the `travel` team with a live progress view, asks a
person at the review (or decides by flag), prints the run's UI link and the
result with its ledger entries, and stops what it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from agentkeel.contracts import ReviewOutcome, ReviewRequest, SagaResult, SagaStatusView
from agentkeel.dev.devserver import DevServer, is_listening
from agentkeel.examples.travel.ledger import Ledger, LedgerEntry
from agentkeel.logs import configure_logging
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings, load_settings
from agentkeel.starters.cli import CliError
from agentkeel.starters.client import InvalidInput, ReviewRejected, RunHandle
from agentkeel.temporal import connect

DEMO_GOAL = "Book a trip from Paris to Lisbon on 2026-12-10 for one traveller: flight plus 3 nights."
DEMO_TEAM = "travel"
TRAVEL_APP = "agentkeel.examples.travel"
"""The app `keel demo` runs (`examples/travel/`)."""
POLL_S = 0.2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `keel demo`."""
    p = subparsers.add_parser(
        "demo",
        help="run the travel-booking example end to end (starts what it needs)",
        description=(
            "Run the travel example on the embedded stack: it starts the Temporal dev server, the offline "
            "LLM provider and a worker unless they already run, shows progress, asks for the review "
            "(approve / reject / edit) on a TTY, and prints the result with its ledger entries."
        ),
    )
    decide = p.add_mutually_exclusive_group()
    decide.add_argument("--approve", action="store_true", help="approve the review without asking")
    decide.add_argument("--reject", action="store_true", help="reject the review without asking")
    p.add_argument("--goal", default=DEMO_GOAL, help="what the travellers want")
    p.add_argument("--reviewer", default="demo", help="name recorded with the decision")
    p.add_argument("--in-memory", action="store_true", help="start the server without a SQLite file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--verbose", action="store_true", help="show the log lines here (default: .keel/demo.log)")
    p.set_defaults(func=_run)


def _say(text: str = "") -> None:
    print(text, flush=True)


class _Stack:
    """What the demo started, to stop it on exit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: DevServer | None = None
        self.provider: Any = None
        settings.home.mkdir(parents=True, exist_ok=True)
        self.log_path = settings.home / "demo.log"
        self.log = self.log_path.open("a")

    async def ensure_server(self, in_memory: bool) -> str:
        from agentkeel.temporal import connect_config

        address = connect_config()["target_host"]
        host, _, port = address.rpartition(":")
        if is_listening(host or "127.0.0.1", int(port)):
            _say(f"• Temporal server already running at {address}")
            return address
        if host not in ("127.0.0.1", "localhost", ""):
            raise CliError(f"cannot reach Temporal at {address} (TEMPORAL_ADDRESS); start it or unset it")
        db = None if in_memory else self.settings.home / "temporal.db"
        self.server = DevServer(port=int(port), db_path=db, stdout=self.log, stderr=self.log)
        _say(f"• starting the Temporal dev server on {self.server.address} (UI {self.server.ui_url})")
        await self.server.start()
        return self.server.address

    async def ensure_provider(self, scenarios: list[Path]) -> None:
        host, port = self.settings.llm_host, self.settings.llm_port
        if is_listening(host, port):
            _say(f"• LLM provider already running at http://{host}:{port}/v1")
            return
        from agentkeel.dev.offline.server import OfflineProvider

        self.provider = OfflineProvider(host=host, port=port, scenario_paths=scenarios)
        await self.provider.start()
        _say(f"• started the offline LLM provider at {self.provider.base_url}")

    async def stop(self) -> None:
        if self.provider is not None:
            await self.provider.stop()
        if self.server is not None:
            await self.server.stop()
        self.log.close()


EOF_NOTE = "  end of input: answering as without a TTY"


async def _read(prompt: str) -> str | None:
    """One line from the person at the terminal; None at end of input (Ctrl-D, a closed stdin).

    Read on a daemon thread, so the worker this process runs keeps answering while the person
    thinks (the UI's current details and `keel status` query it), and Ctrl-C or the end of the
    process never waits for a pending `input()` (the default executor would).
    """
    loop = asyncio.get_running_loop()
    line: asyncio.Future[str | None] = loop.create_future()

    def settle(value: str | None, error: BaseException | None) -> None:
        if line.done():
            return
        if error is not None:
            line.set_exception(error)
        else:
            line.set_result(value)

    def read() -> None:
        try:
            value: str | None = input(prompt)
        except EOFError:
            value = None
        except BaseException as exc:  # handed to the waiting coroutine, never lost in the thread
            loop.call_soon_threadsafe(settle, None, exc)
            return
        loop.call_soon_threadsafe(settle, value, None)

    threading.Thread(target=read, name="keel-demo-prompt", daemon=True).start()
    value = await line
    if value is None:
        _say()
    return value


def _non_interactive() -> tuple[str, dict[str, Any] | None]:
    _say("  no TTY and no --approve/--reject: approving (the default)")
    return "approve", None


async def _ask_decision(review: ReviewRequest) -> tuple[str, dict[str, Any] | None] | None:
    """Ask approve, reject or edit until the answer is one of them.

    Returns:
        The decision and, for an edit, the new arguments (a JSON object); None at end of input.
    """
    while True:
        answer = await _read("  approve, reject or edit? [a/r/e] ")
        if answer is None:
            return None
        answer = answer.strip().lower()
        if answer in ("a", "approve", ""):
            return "approve", None
        if answer in ("r", "reject"):
            return "reject", None
        if answer not in ("e", "edit"):
            _say(f"  {answer!r} is not an answer: type a (approve), r (reject) or e (edit)")
            continue
        raw = await _read(f"  new arguments as JSON [{json.dumps(review.arguments)}]: ")
        if raw is None:
            return None
        try:
            arguments = json.loads(raw) if raw.strip() else dict(review.arguments)
        except json.JSONDecodeError as exc:
            _say(f"  not valid JSON ({exc.msg} at column {exc.colno}); nothing was sent")
            continue
        if not isinstance(arguments, dict):
            example = json.dumps(review.arguments)
            _say(f"  the arguments must be a JSON object like {example}; nothing was sent")
            continue
        return "edit", arguments


async def _send(
    handle: RunHandle, decision: str, arguments: dict[str, Any] | None, review: ReviewRequest, reviewer: str
) -> ReviewOutcome:
    if decision == "approve":
        return await handle.approve(reviewer=reviewer, request_id=review.request_id)
    if decision == "reject":
        return await handle.reject(
            reviewer=reviewer, reason="rejected in the demo", request_id=review.request_id
        )
    return await handle.edit(arguments or {}, reviewer=reviewer, request_id=review.request_id)


async def _review(args: argparse.Namespace, handle: RunHandle, review: ReviewRequest) -> str | None:
    """Decide the pending review: by flag, at the terminal, or the default; return the decision applied.

    A decision the run refuses (edited arguments that do not fit the tool's schema, a review
    that ended meanwhile) is shown and the person is asked again; None when the run no longer
    waits for this review.

    Raises:
        CliError: the run refused a decision given by flag or by default (nobody to ask again).
    """
    interactive = not (args.approve or args.reject) and sys.stdin.isatty()
    while True:
        asked = await _ask_decision(review) if interactive else None
        if asked is not None:
            decision, arguments = asked
        elif args.approve or args.reject:
            decision, arguments = ("approve" if args.approve else "reject"), None
        else:
            if interactive:
                # End of input (Ctrl-D, a closed stdin): nobody will answer, as without a TTY.
                _say(EOF_NOTE)
                interactive = False
            decision, arguments = _non_interactive()
        try:
            outcome = await _send(handle, decision, arguments, review, args.reviewer)
        except (ReviewRejected, InvalidInput) as exc:
            if not interactive:
                # Nobody to ask again: one line and a usage-error exit, not a demo waiting forever.
                raise CliError(f"the run refused the {decision}: {exc}") from None
            _say(f"  the run refused the {decision}: {exc}")
            still = (await handle.status()).pending_review
            if still is None or still.request_id != review.request_id:
                return None
            continue
        _say(f"  → {outcome.message}")
        return decision


def ran_as_asked(decisions: list[str], status: SagaStatus) -> bool:
    """Whether the run ended as its reviewer asked: approved or edited and completed, or rejected and undone.

    A rejected demo that compensated its bookings ran as asked, so `keel demo --reject` exits 0;
    a run that failed, or ended otherwise than its last decision asked, did not.
    """
    if not decisions:
        return False
    if decisions[-1] == "reject":
        return status in (SagaStatus.REJECTED, SagaStatus.COMPENSATED)
    return status == SagaStatus.COMPLETED


def _progress(view: SagaStatusView, seen: set[str]) -> None:
    line = (
        f"  [{view.status.value:<14}] agent={view.active_agent:<8} step={view.step:<3} "
        f"tokens={view.tokens:<6} ${view.cost_usd:.4f}"
    )
    if view.waiting_for:
        line += f"  waiting for: {view.waiting_for}"
    if line not in seen:
        seen.add(line)
        _say(line)


def _print_result(result: SagaResult, ledger_rows: list[LedgerEntry], ui: str, elapsed: float) -> None:
    _say()
    _say(f"Result: {result.status.value}" + (f" ({result.reason})" if result.reason else ""))
    if "cannot resolve team" in (result.reason or ""):
        # The demo reused a worker (and provider) started for another app, e.g. by `keel dev --app`.
        _say("  the running worker does not serve the travel team: stop the other `keel dev`, try again")
    if result.output:
        _say(f"Answer: {result.output}")
    _say(f"Steps ({len(result.steps)}):")
    for s in result.steps:
        extra = f" tokens={s.tokens} ${s.cost_usd:.5f}" if s.kind == "llm" else ""
        _say(f"  {s.step:>3} {s.kind:<10} {s.agent:<8} {s.name:<22} {s.detail[:60]}{extra}")
    _say(f"Tokens: {result.tokens}   Cost: ${result.cost_usd:.5f}")
    if result.reviews:
        for r in result.reviews:
            _say(
                f"Review: {r.decision} by {r.reviewer} via {r.via}" + (f" ({r.comment})" if r.comment else "")
            )
    if result.compensations:
        _say("Compensations, in the order they ran:")
        for i, c in enumerate(result.compensations, 1):
            _say(f"  {i}. {c.compensation} for {c.name} (step {c.step}): {c.status}")
    if result.uncompensated:
        _say("Left uncompensated: " + ", ".join(result.uncompensated))
    _say("Ledger entries:")
    seq_of = {e.idempotency_key: e.seq for e in ledger_rows}
    for e in ledger_rows:
        undoes = f"reverses #{seq_of[e.reverses]}" if e.reverses in seq_of else ""
        _say(f"  #{e.seq:<4} {e.action:<14} {e.ref:<12} {e.amount_usd:>10.2f} USD  {undoes}".rstrip())
    _say(f"UI: {ui}")
    _say(f"Finished in {elapsed:.1f} s")


async def _run(args: argparse.Namespace) -> int:
    if not args.json:
        return await _demo(args, sys.stdout)
    # With --json, stdout holds only the JSON document; the progress view goes to stderr.
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return await _demo(args, out)


async def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from agentkeel.app import load_app
    from agentkeel.starters.client import Keel

    started = time.monotonic()
    settings = load_settings()
    # The travel example is an app like a user's: loaded by reference, registered through the plugin.
    travel = load_app(TRAVEL_APP)
    if TRAVEL_APP not in settings.apps:
        settings = settings.model_copy(update={"apps": [*settings.apps, TRAVEL_APP]})
    stack = _Stack(settings)
    if not args.verbose:
        # The progress view is the output; the worker's and provider's log lines go to a file.
        configure_logging(fmt="json", level=args.log_level or "INFO", stream=stack.log)
    try:
        address = await stack.ensure_server(args.in_memory)
        if stack.server is not None and settings.ui_url == Settings.model_fields["ui_url"].default:
            # The demo's own server may serve its UI elsewhere than the default :8233 (another
            # TEMPORAL_ADDRESS port): the printed links must open this run.
            settings = settings.model_copy(update={"ui_url": stack.server.ui_url})
        await stack.ensure_provider([Path(p) for p in travel.scenarios])
        client = await connect(address=address)
        from agentkeel.workers.worker import running_worker  # the worker's imports are only paid by `demo`

        async with running_worker(client, settings):
            _say(f"• worker polling task queue '{settings.task_queue}'")
            keel = Keel(client, settings=settings)
            handle = await keel.start(DEMO_TEAM, args.goal)
            _say(f"• started {handle.workflow_id}")
            _say(f"  UI: {handle.ui_url}")
            seen: set[str] = set()
            asked: set[str] = set()
            decisions: list[str] = []
            while True:
                view = await handle.status()
                _progress(view, seen)
                if view.status.is_final:
                    break
                review = view.pending_review
                if review is not None and review.request_id not in asked:
                    asked.add(review.request_id)
                    _say(
                        f"  review {review.request_id}: {review.agent} wants {review.tool}"
                        f"({json.dumps(review.arguments)}); cost so far ${review.cost_usd:.4f}"
                    )
                    decision = await _review(args, handle, review)
                    if decision is not None:
                        decisions.append(decision)
                await asyncio.sleep(POLL_S)
            result = await handle.result()
            ledger = Ledger(settings.ledger)
            rows = ledger.entries(handle.workflow_id)
            ledger.close()
        if args.json:
            print(
                json.dumps(
                    {
                        "workflow_id": handle.workflow_id,
                        "ui_url": handle.ui_url,
                        "result": result.model_dump(mode="json"),
                        "ledger": [e.__dict__ for e in rows],
                    },
                    indent=2,
                ),
                file=out,
                flush=True,
            )
        else:
            _print_result(result, rows, handle.ui_url, time.monotonic() - started)
        if stack.server is not None and not args.in_memory:
            _say(
                f"(the demo started the Temporal server and stops it now; its data stays in "
                f"{settings.home / 'temporal.db'}; run `keel server` to browse the run in the UI)"
            )
        return 0 if ran_as_asked(decisions, result.status) else 1
    finally:
        await stack.stop()
