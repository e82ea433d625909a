"""`keel demo` as a person runs it: a real `keel` process, on a terminal (a pseudo-terminal) or not.

Each run uses the session's dev server and offline provider (the demo starts neither when they
already listen), its own task queue, home and ledger, so the ledger read afterwards holds only
that run. The checks are the demo's promises: the card is charged what the tools priced, the
trip is the one the goal asks for, an edited amount is what the answer states, every answer
at the prompt (nonsense, bad JSON, arguments the run refuses, end of input) gets a line and
another question instead of a traceback, and the exit code says whether the demo did what it
was asked.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentkeel.examples.travel.ledger import Ledger, LedgerEntry
from agentkeel.search_attributes import SagaStatus
from agentkeel.starters.cmd_demo import DEMO_GOAL, ran_as_asked

KEEL = str(Path(sys.executable).parent / "keel")
DEMO_TIMEOUT_S = 90.0
EDIT_PROMPT = "new arguments as JSON"
DECISION_PROMPT = "approve, reject or edit? [a/r/e]"
CTRL_D = "\x04"


@dataclass
class DemoRun:
    """What one `keel demo` process did."""

    code: int
    output: str
    ledger: list[LedgerEntry]
    stdout: str = ""

    def amounts(self, action: str) -> list[float]:
        """The ledger amounts written by `action`."""
        return [e.amount_usd for e in self.ledger if e.action == action]

    def one(self, action: str) -> LedgerEntry:
        """The only ledger entry written by `action`."""
        found = [e for e in self.ledger if e.action == action]
        assert len(found) == 1, (action, self.ledger, self.output)
        return found[0]


@pytest.fixture
def demo_env(dev_server: Any, offline_llm: Any, task_queue: str, tmp_path: Path) -> dict[str, str]:
    """Environment pointing `keel demo` at the session's server and provider, with its own state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "TEMPORAL_"))}
    env.update(
        {
            "TEMPORAL_ADDRESS": dev_server.address,
            "TEMPORAL_NAMESPACE": dev_server.namespace,
            "KEEL_LLM_HOST": "127.0.0.1",
            "KEEL_LLM_PORT": str(offline_llm.port),
            "KEEL_TASK_QUEUE": task_queue,
            "KEEL_HOME": str(tmp_path / "keel-home"),
            "KEEL_LEDGER_PATH": str(tmp_path / "ledger.db"),
            "TERM": "dumb",
        }
    )
    return env


def _ledger(env: dict[str, str]) -> list[LedgerEntry]:
    path = Path(env["KEEL_LEDGER_PATH"])
    if not path.exists():
        return []
    ledger = Ledger(path)
    try:
        return ledger.entries()
    finally:
        ledger.close()


def run_piped(env: dict[str, str], *args: str) -> DemoRun:
    """`keel demo ARGS` with stdin closed (no TTY), as from a script or CI."""
    done = subprocess.run(
        [KEEL, "demo", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    return DemoRun(done.returncode, done.stdout + done.stderr, _ledger(env), stdout=done.stdout)


Reply = str | Callable[[str], str]
"""What to type: a string, or a function of the output so far returning it."""


def run_on_terminal(env: dict[str, str], replies: list[tuple[str, Reply]], *args: str) -> DemoRun:
    """`keel demo ARGS` on a pseudo-terminal, answering each prompt in turn.

    Args:
        env: The process environment.
        replies: (text the demo prints, what the person types once it has) pairs, in order;
            a reply is sent after its text appears past the previous reply.
        args: More `keel demo` arguments.
    """
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [KEEL, "demo", *args],
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
        close_fds=True,
    )
    os.close(follower)
    output = b""
    seen_up_to = 0
    pending = list(replies)
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the process closed the terminal
                    chunk = b""
                if not chunk:
                    break
                output += chunk
            text = output.decode(errors="replace")
            if pending:
                marker, reply = pending[0]
                found = text.find(marker, seen_up_to)
                if found >= 0:
                    seen_up_to = found + len(marker)
                    pending.pop(0)
                    typed = reply(text) if callable(reply) else reply
                    os.write(leader, typed.encode())
            elif process.poll() is not None and not ready:
                break
        else:
            raise AssertionError(
                f"keel demo did not end in {DEMO_TIMEOUT_S}s:\n{output.decode(errors='replace')}"
            )
        code = process.wait(timeout=DEMO_TIMEOUT_S)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        os.close(leader)
    text = output.decode(errors="replace").replace("\r\n", "\n")
    assert not pending, f"the demo never asked {pending[0][0]!r}:\n{text}"
    return DemoRun(code, text, _ledger(env))


def _assert_no_traceback(run: DemoRun) -> None:
    assert "Traceback" not in run.output, run.output


# ---------------------------------------------------------------------------------------- the figures


@pytest.mark.integration
def test_demo_charges_what_the_tools_priced_for_the_trip_the_goal_asks(demo_env: dict[str, str]) -> None:
    goal = "Fly from New York to Rome on 2027-03-01 for two travellers, 5 nights in a hotel."
    run = run_piped(demo_env, "--approve", "--goal", goal)
    _assert_no_traceback(run)
    assert run.code == 0, run.output
    assert "Result: Completed" in run.output
    assert "Answer: Your trip is booked: a flight from New York to Rome on 2027-03-01" in run.output
    flight, hotel, charge = run.one("book_flight"), run.one("book_hotel"), run.one("charge_card")
    # The trip the goal asks for.
    assert flight.details == {
        "origin": "New York",
        "destination": "Rome",
        "date": "2027-03-01",
        "passengers": 2,
    }
    assert hotel.details == {"city": "Rome", "check_in": "2027-03-01", "nights": 5}
    # The card is charged what the flight and the hotel were booked for, to the cent.
    assert charge.amount_usd == pytest.approx(flight.amount_usd + hotel.amount_usd, abs=0.005)
    assert f"The card was charged ${charge.amount_usd:,.2f}" in run.output


@pytest.mark.integration
def test_default_demo_charges_the_sum_of_its_bookings_as_json(demo_env: dict[str, str]) -> None:
    run = run_piped(demo_env, "--approve", "--json")
    _assert_no_traceback(run)
    assert run.code == 0, run.output
    shown = json.loads(run.stdout)  # stdout holds only the document; progress went to stderr
    assert shown["result"]["status"] == SagaStatus.COMPLETED.value
    flight, hotel, charge = run.one("book_flight"), run.one("book_hotel"), run.one("charge_card")
    assert (flight.amount_usd, hotel.amount_usd, charge.amount_usd) == (250.5, 873.0, 1123.5)
    assert [e["amount_usd"] for e in shown["ledger"]] == [250.5, 873.0, 1123.5]
    assert "The card was charged $1,123.50" in shown["result"]["output"]


@pytest.mark.integration
def test_rejected_demo_exits_zero_and_undoes_both_bookings(demo_env: dict[str, str]) -> None:
    run = run_piped(demo_env, "--reject")
    _assert_no_traceback(run)
    assert run.code == 0, run.output
    assert "Compensations, in the order they ran:" in run.output
    assert [e.action for e in run.ledger] == ["book_flight", "book_hotel", "cancel_hotel", "cancel_flight"]
    assert sum(e.amount_usd for e in run.ledger) == pytest.approx(0, abs=0.005)
    assert "reverses #2" in run.output and "reverses #1" in run.output


# ---------------------------------------------------------------------------------------- the terminal


@pytest.mark.integration
def test_demo_on_a_terminal_asks_again_after_every_bad_answer_and_states_the_edited_amount(
    demo_env: dict[str, str],
) -> None:
    run = run_on_terminal(
        demo_env,
        [
            (DECISION_PROMPT, "maybe\n"),
            (DECISION_PROMPT, "e\n"),
            (EDIT_PROMPT, "{oops\n"),  # not JSON
            (DECISION_PROMPT, "e\n"),
            (EDIT_PROMPT, "[900]\n"),  # JSON, not an object
            (DECISION_PROMPT, "e\n"),
            (EDIT_PROMPT, '{"amount_usd": -5, "description": "trip"}\n'),  # refused by the run's validator
            (DECISION_PROMPT, "e\n"),
            (EDIT_PROMPT, '{"amount_usd": 900, "description": "Paris-Lisbon trip, discounted"}\n'),
        ],
    )
    _assert_no_traceback(run)
    assert "'maybe' is not an answer" in run.output
    assert "not valid JSON" in run.output
    assert "must be a JSON object" in run.output
    assert "the run refused the edit" in run.output and "amount_usd" in run.output
    assert run.code == 0, run.output
    assert "Result: Completed" in run.output
    assert run.amounts("charge_card") == [900.0]
    # The final answer states the amount the reviewer set, not the planned total.
    assert "The card was charged $900.00" in run.output, run.output
    assert "Review: edit by demo" in run.output


@pytest.mark.integration
def test_end_of_input_at_the_prompt_is_answered_as_without_a_terminal(demo_env: dict[str, str]) -> None:
    statuses: list[subprocess.CompletedProcess[str]] = []

    def look_then_close(output: str) -> str:
        # While the prompt waits, the demo's worker still answers queries: `keel status` works.
        workflow_id = re.findall(r"started (keel-travel-\w+)", output)[-1]
        statuses.append(
            subprocess.run(
                [KEEL, "status", workflow_id, "--json"],
                env=demo_env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        )
        return CTRL_D

    run = run_on_terminal(demo_env, [(DECISION_PROMPT, look_then_close)])
    assert statuses and statuses[0].returncode == 0, statuses
    assert "AwaitingReview" in statuses[0].stdout, statuses[0].stdout
    _assert_no_traceback(run)
    assert "end of input" in run.output and "approving (the default)" in run.output
    assert run.code == 0, run.output
    assert "Result: Completed" in run.output
    planned = run.one("book_flight").amount_usd + run.one("book_hotel").amount_usd
    assert run.amounts("charge_card") == [pytest.approx(planned, abs=0.005)]


@pytest.mark.integration
def test_end_of_input_while_editing_is_answered_as_without_a_terminal(demo_env: dict[str, str]) -> None:
    run = run_on_terminal(demo_env, [(DECISION_PROMPT, "e\n"), (EDIT_PROMPT, CTRL_D)], "--goal", DEMO_GOAL)
    _assert_no_traceback(run)
    assert "end of input" in run.output
    assert run.code == 0, run.output
    assert "Review: approve by demo" in run.output


# ---------------------------------------------------------------------------------------- exit codes


@pytest.mark.unit
@pytest.mark.parametrize(
    ("decisions", "status", "ok"),
    [
        (["approve"], SagaStatus.COMPLETED, True),
        (["edit"], SagaStatus.COMPLETED, True),
        (["reject"], SagaStatus.COMPENSATED, True),
        (["reject"], SagaStatus.REJECTED, True),
        # Approved, yet the run did not complete (a tool failed after the review): not as asked.
        (["approve"], SagaStatus.COMPENSATED, False),
        (["approve"], SagaStatus.FAILED, False),
        (["reject"], SagaStatus.FAILED, False),
        ([], SagaStatus.FAILED, False),  # failed before anyone was asked
    ],
)
def test_demo_exit_code_says_whether_it_ran_as_asked(
    decisions: list[str], status: SagaStatus, ok: bool
) -> None:
    assert ran_as_asked(decisions, status) is ok
