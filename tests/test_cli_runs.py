"""The `keel` run commands (`agentkeel.starters.cmd_runs`) and their rendering (`agentkeel.starters.render`).

Commands run in-process through `agentkeel.starters.cli.run(argv)`, which returns the exit code.
Against the dev server they run in a thread, because each builds its own event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agentkeel.contracts import (
    CompensationRecord,
    ReviewOutcome,
    ReviewRequest,
    SagaResult,
    SagaStatusView,
    StepRecord,
    TranscriptEntry,
)
from agentkeel.examples.travel import team as travel_team
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.starters import cli, render
from agentkeel.starters.cli_common import parse_json_object, parse_metadata
from agentkeel.starters.client import Keel, RunSummary
from agentkeel.workers.worker import running_worker
from tests.test_starter_api import eventually, make_keel_settings, wait_for_review

GOAL = "Trip to Lisbon, Dec 10, 3 nights"
RUN_COMMANDS = [
    "start",
    "status",
    "transcript",
    "watch",
    "list",
    "pending",
    "approve",
    "reject",
    "edit",
    "cancel",
    "failed",
    "redrive",
    "teams",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment: no `keel.toml`, no Temporal profile, nothing listening on the address."""
    monkeypatch.chdir(tmp_path)
    for name in ("KEEL_CONFIG", "TEMPORAL_PROFILE", "TEMPORAL_API_KEY", "KEEL_TEAMS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{_free_port()}")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
    return monkeypatch


def keel(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `keel ARGV` in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def akeel(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`keel` from async tests: in a thread, since the command runs its own event loop."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli.run, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("keel: ")
    return lines[0]


# --------------------------------------------------------------------------- parsing, no server


@pytest.mark.unit
@pytest.mark.parametrize("command", RUN_COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = keel(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: keel {command}") or "usage: keel start" in out
    assert "--json" in out


@pytest.mark.unit
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["start", "travle", GOAL], "unknown team 'travle' (registered teams:"),
        (["start", "travel"], "give a team and a goal"),
        (["start", "travel", "  "], "the goal is empty"),
        (["start", "--team-file", "team.yaml", "travel", GOAL], "with --team-file give only the goal"),
        (["start", "--team-file", "missing.yaml", GOAL], "cannot read team file"),
        (["start", "travel", GOAL, "--meta", "novalue"], "--meta wants KEY=VALUE"),
        (["edit", "keel-x", "--args", "{amount: 5}"], "--args is not valid JSON"),
        (["edit", "keel-x", "--args", "[1, 2]"], "--args must be a JSON object, got list"),
        (["list", "--status", "done"], "unknown status 'done'"),
        (["list", "--limit", "0"], "--limit must be at least 1"),
        (["pending", "--limit", "many"], "--limit must be a whole number"),
        (["reject", "keel-x", "--reason", " "], "--reason is empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Input errors are found before connecting: no server listens at TEMPORAL_ADDRESS here.
    code, out, err = keel(capsys, *argv)
    assert code == 2
    assert message in one_line_error(err)
    assert out == ""


@pytest.mark.unit
def test_bad_team_file_reports_every_problem_on_one_line(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "team.yaml").write_text("name: t\nentry: ghost\nagents: [{name: a, instructions: hi}]\n")
    code, _, err = keel(capsys, "start", "--team-file", "team.yaml", GOAL)
    assert code == 2
    assert "entry agent 'ghost' is not one of the team's agents" in one_line_error(err)
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    code, _, err = keel(capsys, "start", "--team-file", "broken.yaml", GOAL)
    assert code == 2 and "not valid YAML" in one_line_error(err)


@pytest.mark.unit
@pytest.mark.parametrize(
    "argv",
    [
        ["status", "keel-x"],
        ["start", "travel", GOAL],
        ["list"],
        ["approve", "keel-x"],
        ["edit", "keel-x", "--args", '{"amount_usd": 5}'],
    ],
)
def test_no_server_is_one_line_and_exit_4(
    argv: list[str], cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = keel(capsys, *argv)
    assert code == 4
    assert "cannot reach Temporal at 127.0.0.1:" in one_line_error(err)
    assert out == ""


@pytest.mark.unit
def test_teams_lists_the_registry_without_a_server(
    cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = keel(capsys, "teams")
    assert code == 0
    assert "travel: " in out and "planner (entry)" in out and "review before: charge_card" in out
    code, out, _ = keel(capsys, "teams", "--json")
    assert code == 0
    travel = next(t for t in json.loads(out) if t["name"] == "travel")
    assert [a["name"] for a in travel["agents"]] == ["planner", "flights", "hotels"]


@pytest.mark.unit
def test_teams_dir_adds_teams_and_a_broken_file_is_an_error(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teams_dir = tmp_path / "teams"
    teams_dir.mkdir()
    trips = travel_team().model_copy(update={"name": "trips"})
    (teams_dir / "trips.json").write_text(trips.model_dump_json())
    cli_env.setenv("KEEL_TEAMS_DIR", str(teams_dir))
    code, out, _ = keel(capsys, "teams", "--json")
    assert code == 0 and {"travel", "trips"} <= {t["name"] for t in json.loads(out)}
    (teams_dir / "bad.json").write_text("{")
    code, _, err = keel(capsys, "teams")
    assert code == 2 and "bad.json: not valid JSON" in one_line_error(err)


@pytest.mark.unit
def test_parse_helpers() -> None:
    assert parse_json_object('{"a": 1}', "--args") == {"a": 1}
    assert parse_metadata(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(cli.CliError, match="line 1, column 2"):
        parse_json_object("{oops", "--args")
    with pytest.raises(cli.CliError):
        parse_metadata(["=v"])


# --------------------------------------------------------------------------- rendering


def _review() -> ReviewRequest:
    return ReviewRequest(
        request_id="r-1",
        kind="tool",
        agent="planner",
        tool="charge_card",
        arguments={"amount_usd": 1123.5, "description": "trip"},
        reasoning="Charging the card.",
        tokens=1234,
        cost_usd=0.0123,
    )


def _view(**changes: Any) -> SagaStatusView:
    base = SagaStatusView(
        status=SagaStatus.AWAITING_REVIEW,
        team="travel",
        goal=GOAL,
        active_agent="planner",
        step=7,
        turns=6,
        handoffs=3,
        pending_review=_review(),
        tokens=1234,
        cost_usd=0.0123,
        correlation_id="c-1",
        waiting_for="approval of charge_card",
    )
    return base.model_copy(update=changes)


@pytest.mark.unit
def test_render_status_shows_what_the_run_waits_for() -> None:
    text = render.render_status(_view(), workflow_id="keel-travel-1", ui_url="http://ui/x")
    assert "AwaitingReview" in text and "keel-travel-1" in text and "http://ui/x" in text
    assert "tool review of charge_card by agent planner (request r-1)" in text
    assert '"amount_usd": 1123.5' in text
    assert "1,234 tokens, $0.0123" in text
    assert "approval of charge_card" in text


@pytest.mark.unit
def test_render_watch_line_is_one_line_with_agent_step_spend_and_wait() -> None:
    line = render.render_watch_line(_view(), at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert "\n" not in line
    assert line.startswith("[03:04:05] AwaitingReview · agent planner · step 7 · 1,234 tok · $0.0123")
    assert "review charge_card" in line and "request r-1" in line
    done = render.render_watch_line(
        _view(status=SagaStatus.FAILED, pending_review=None, waiting_for=None, last_error="boom")
    )
    assert done.startswith("Failed") and done.endswith("boom")


@pytest.mark.unit
def test_render_result_lists_steps_and_compensations_in_order() -> None:
    result = SagaResult(
        status=SagaStatus.COMPENSATED,
        reason="charge_card rejected by ana: too expensive",
        steps=[
            StepRecord(step=1, kind="llm", agent="planner", name="call_llm", tokens=100, cost_usd=0.001),
            StepRecord(step=2, kind="tool", agent="flights", name="book_flight"),
        ],
        compensations=[
            CompensationRecord(step=3, name="book_hotel", compensation="cancel_hotel", status="done"),
            CompensationRecord(step=2, name="book_flight", compensation="cancel_flight", status="done"),
        ],
        tokens=100,
        cost_usd=0.001,
    )
    text = render.render_result(result, workflow_id="keel-travel-1")
    assert "Compensated" in text and "too expensive" in text
    assert text.index("cancel_hotel") < text.index("cancel_flight")
    assert "book_flight" in text and "call_llm" in text


@pytest.mark.unit
def test_render_lists_and_json() -> None:
    started = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    runs = [
        RunSummary(
            workflow_id="keel-travel-1",
            run_id="r",
            status="AwaitingReview",
            execution_status="Running",
            team="travel",
            tokens=10,
            cost_usd=0.5,
            started_at=started,
            pending_review=_review(),
        ),
        RunSummary(
            workflow_id="keel-travel-2",
            run_id="r",
            status="Failed",
            execution_status="Completed",
            reason="LLM provider unavailable",
            uncompensated=["book_hotel (step 3)"],
        ),
    ]
    table = render.render_runs(runs).splitlines()
    assert table[0].split() == ["WORKFLOW", "ID", "STATUS", "TEAM", "AGENT", "TOKENS", "COST", "STARTED"]
    assert table[1].split()[:3] == ["keel-travel-1", "AwaitingReview", "travel"]
    assert "2025-01-02 03:04:05" in table[1]
    assert "charge_card" in render.render_pending(runs[:1])
    failed = render.render_failed(runs[1:])
    assert "LLM provider unavailable" in failed and "uncompensated: book_hotel (step 3)" in failed
    assert render.render_runs([]) == "no runs found"
    data = json.loads(render.to_json(runs))
    assert data[0]["started_at"] == "2025-01-02T03:04:05Z"
    assert data[0]["pending_review"]["tool"] == "charge_card"
    outcome = ReviewOutcome(request_id="r-1", decision="approve", status=SagaStatus.RUNNING, message="ok")
    assert render.render_outcome(outcome) == "approve (request r-1): ok [status Running]"
    entries = [
        TranscriptEntry(
            kind="tool_call",
            agent="flights",
            data={"name": "book_flight", "arguments": '{"origin": "PAR"}'},
            step=3,
        ),
        TranscriptEntry(
            kind="tool_call", agent="flights", data={"name": "book_flight", "arguments": "{oops"}
        ),
        TranscriptEntry(kind="handoff", agent="planner", content="PAR-LIS", data={"to": "flights"}, step=2),
        TranscriptEntry(
            kind="decision", agent="planner", content="ok", data={"decision": "approve", "reviewer": "ana"}
        ),
    ]
    assert render.render_transcript(entries).splitlines() == [
        '#3   tool_call    flights: book_flight({"origin": "PAR"})',
        "#0   tool_call    flights: book_flight({oops)",
        "#2   handoff      planner: -> flights: PAR-LIS",
        "#0   decision     planner: approve by ana: ok",
    ]
    assert "\n" not in render.to_json(entries, indent=None)


# --------------------------------------------------------------------------- against the dev server


@pytest.fixture
def server_env(
    cli_env: pytest.MonkeyPatch, dev_server: Any, worker_settings: Settings, offline_llm: Any, task_queue: str
) -> Settings:
    """The CLI pointed at the dev server and at this test's task queue (where its worker polls)."""
    keel_settings = make_keel_settings(worker_settings, offline_llm, task_queue, dev_server)
    cli_env.setenv("TEMPORAL_ADDRESS", dev_server.address)
    cli_env.setenv("KEEL_TASK_QUEUE", keel_settings.task_queue)
    cli_env.setenv("KEEL_UI_URL", keel_settings.ui_url)
    # The CLI reads conversations from the workers' store (one store per deployment).
    cli_env.setenv("KEEL_STORE_URL", f"sqlite:///{(keel_settings.home / 'store.db').resolve()}")
    return keel_settings


@pytest.mark.integration
async def test_cli_start_review_approve(
    dev_server: Any, server_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Keel(dev_server.client, settings=server_env)
    async with running_worker(dev_server.client, server_env):
        code, out, err = await akeel(capsys, "start", "travel", GOAL, "--meta", "ticket=T-9", "--json")
        assert code == 0, err
        started = json.loads(out)
        workflow_id = started["workflow_id"]
        assert started["ui_url"].endswith(f"/namespaces/default/workflows/{workflow_id}")

        run = await api.get(workflow_id)
        await wait_for_review(run)
        code, out, err = await akeel(capsys, "status", workflow_id, "--json")
        assert code == 0, err
        status = json.loads(out)
        assert status["status"] == "AwaitingReview" and status["pending_review"]["tool"] == "charge_card"
        code, out, _ = await akeel(capsys, "status", workflow_id)
        assert "review of charge_card" in out

        async def pending_ids() -> list[str]:
            code, out, err = await akeel(capsys, "pending", "--team", "travel", "--json")
            assert code == 0, err
            return [r["workflow_id"] for r in json.loads(out)]

        await eventually(pending_ids, lambda ids: workflow_id in ids)

        # The run checks edited arguments against the tool's schema and says why it refuses.
        code, out, err = await akeel(capsys, "edit", workflow_id, "--args", '{"amount_usd": "lots"}')
        assert code == 5 and out == ""  # ExitCode.CONFLICT: the run refused the decision
        refusal = one_line_error(err)
        assert "do not fit the schema of charge_card" in refusal and "ValueError" not in refusal

        code, out, err = await akeel(
            capsys, "approve", workflow_id, "--reviewer", "ana", "--comment", "ok", "--json"
        )
        assert code == 0, err
        outcome = json.loads(out)
        assert (
            outcome["decision"] == "approve"
            and outcome["request_id"] == status["pending_review"]["request_id"]
        )

        code, out, err = await akeel(capsys, "watch", workflow_id, "--json", "--interval", "0.1")
        assert code == 0, err
        views = [json.loads(line) for line in out.splitlines()]
        assert views[-1]["status"] == "Completed"

        result = await run.result(wait=30)
        assert result.status == SagaStatus.COMPLETED
        assert result.reviews[0].reviewer == "ana" and result.reviews[0].comment == "ok"

        async def listed() -> list[dict[str, Any]]:
            code, out, _ = await akeel(
                capsys, "list", "--correlation-id", started["correlation_id"], "--json"
            )
            return json.loads(out) if code == 0 else []

        rows = await eventually(listed, lambda rows: [r["status"] for r in rows] == ["Completed"])
        assert rows[0]["workflow_id"] == workflow_id and rows[0]["team"] == "travel"
        code, out, _ = await akeel(capsys, "transcript", workflow_id, "--json")
        assert code == 0 and any(e["kind"] == "handoff" for e in json.loads(out))
        # The whole conversation, read back from the conversation store.
        code, out, err = await akeel(capsys, "transcript", workflow_id, "--conversation")
        assert code == 0, err
        assert out.startswith(f"[1] user: {GOAL}") and "charge_card" in out
        assert (
            out.rstrip().splitlines()[-1].startswith(f"[{out.count(chr(10) + '[') + 1}] assistant planner:")
        )

        # Deciding a finished run is refused by the run, in one line.
        code, _, err = await akeel(capsys, "approve", workflow_id)
        assert code == 5 and "nothing to review" in one_line_error(err)  # ExitCode.CONFLICT


@pytest.mark.integration
async def test_cli_wait_reject_dead_letter_redrive_cancel(
    dev_server: Any, server_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Keel(dev_server.client, settings=server_env)
    workflow_id = f"keel-travel-{uuid.uuid4().hex[:12]}"
    async with running_worker(dev_server.client, server_env):
        # `start --wait` blocks until the run ends; the rejection arrives meanwhile.
        waiting = asyncio.create_task(
            asyncio.to_thread(cli.run, ["start", "travel", GOAL, "--id", workflow_id, "--wait", "--json"])
        )
        run = await eventually(lambda: _get_or_none(api, workflow_id), lambda r: r is not None)
        assert run is not None
        await wait_for_review(run)
        code, out, err = await akeel(capsys, "reject", workflow_id, "--reason", "too expensive", "--json")
        # stdout may also hold the output of the waiting start, which ends meanwhile.
        assert code == 0, err
        assert '"decision": "reject"' in out
        assert await asyncio.wait_for(waiting, 30) == 1  # --wait exits 1 when the run did not complete
        printed = capsys.readouterr().out + out
        assert '"status": "Compensated"' in printed

        async def failed_rows() -> list[dict[str, Any]]:
            code, out, _ = await akeel(capsys, "failed", "--team", "travel", "--json")
            return json.loads(out) if code == 0 else []

        rows = await eventually(failed_rows, lambda rows: workflow_id in [r["workflow_id"] for r in rows])
        dead = next(r for r in rows if r["workflow_id"] == workflow_id)
        assert dead["status"] == "Compensated" and "too expensive" in dead["reason"]
        code, out, _ = await akeel(capsys, "failed")
        assert workflow_id in out and "too expensive" in out

        code, out, err = await akeel(capsys, "redrive", workflow_id, "--json")
        assert code == 0, err
        redriven = json.loads(out)
        assert redriven["redrive_of"] == workflow_id and redriven["workflow_id"] != workflow_id
        again = await api.get(redriven["workflow_id"])
        assert (await again.request()).metadata["redrive_of"] == workflow_id

        await wait_for_review(again)
        code, out, err = await akeel(capsys, "cancel", again.workflow_id, "--wait", "--json")
        assert code == 0, err
        assert json.loads(out)["status"] == "Cancelled"
        code, _, err = await akeel(capsys, "cancel", again.workflow_id)
        assert code == 5 and "already ended" in one_line_error(err)  # ExitCode.CONFLICT


async def _get_or_none(api: Keel, workflow_id: str) -> Any:
    try:
        return await api.get(workflow_id)
    except Exception:
        return None


@pytest.mark.integration
async def test_cli_unknown_id_is_one_line(
    dev_server: Any, server_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["status", "keel-nope"],
        ["transcript", "keel-nope"],
        ["watch", "keel-nope"],
        ["approve", "keel-nope"],
        ["reject", "keel-nope", "--reason", "x"],
        ["edit", "keel-nope", "--args", "{}"],
        ["cancel", "keel-nope"],
        ["redrive", "keel-nope"],
        ["approve", "keel-nope", "--signal"],
    ):
        code, out, err = await akeel(capsys, *argv)
        assert code == 3, argv  # ExitCode.NOT_FOUND
        assert "no run with workflow id 'keel-nope'" in one_line_error(err), argv
        assert out == ""


def test_a_reader_that_goes_away_is_not_an_error(
    cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `keel teams --json | head -1`: the pipe closes while keel writes (was: exit 4, "unreachable").
    from agentkeel.starters import cmd_runs

    def closed(text: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    cli_env.setattr(cmd_runs, "out", closed)
    code, _, err = keel(capsys, "teams", "--json")
    assert code == 0 and err == ""


def test_a_payload_encrypted_with_another_key_is_one_line() -> None:
    from agentkeel.codec import UnknownKeyError
    from agentkeel.starters.cli_common import error_code
    from agentkeel.store import MissingContentError, StoreError

    assert error_code(UnknownKeyError("payload is encrypted (key id 'x') but no key is configured")) == 2
    assert error_code(MissingContentError("content sha256:... is not in the store")) == 3
    assert error_code(StoreError("cannot connect")) == 7
