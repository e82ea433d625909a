"""The `keel` CLI contract: exit codes, JSON errors, input limits, and statuses that tell the truth.

Unit tests run without a server; the integration tests use the session's dev server
(runs on task queues no worker polls stay before their first workflow task).
"""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from agentkeel.activities.llm_config import OFFLINE_PRICE, LLMConfig
from agentkeel.contracts import SagaRequest, SagaStatusView
from agentkeel.examples.travel import APP_REFERENCE as TRAVEL_APP
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import ConfigError, Settings, load_settings, write_server_state
from agentkeel.starters import render
from agentkeel.starters.client import MAX_GOAL_BYTES, InvalidInput, Keel, _details, _summary
from agentkeel.starters.exit_codes import TABLE, ExitCode, markdown_table
from agentkeel.workers.worker import running_worker
from tests.test_cli_runs import akeel, keel, one_line_error
from tests.test_starter_api import eventually, wait_for_review

GOAL = "Trip to Lisbon, Dec 10, 3 nights"
README = Path(__file__).parent.parent / "README.md"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment with nothing listening on the Temporal address."""
    from tests.test_cli_runs import _free_port

    monkeypatch.chdir(tmp_path)
    for name in ("KEEL_CONFIG", "TEMPORAL_PROFILE", "TEMPORAL_API_KEY", "KEEL_TEAMS_DIR", "KEEL_UI_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{_free_port()}")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
    return monkeypatch


def json_error(err: str) -> dict[str, Any]:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return json.loads(lines[0])["error"]


# --------------------------------------------------------------------------- exit codes, JSON errors


@pytest.mark.unit
def test_help_and_readme_show_one_exit_code_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = keel(capsys, "--help")
    assert code == 0
    for number, meaning in TABLE:
        assert f"{int(number):>3}  {meaning}" in out
    assert markdown_table() in README.read_text()
    assert [int(c) for c, _ in TABLE] == sorted({int(c) for c in ExitCode})


@pytest.mark.unit
def test_errors_are_json_with_json(cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = keel(capsys, "start", "travle", GOAL, "--json")
    assert code == ExitCode.BAD_INPUT and out == ""
    error = json_error(err)
    assert error["code"] == 2 and error["kind"] == "bad_input" and "unknown team 'travle'" in error["message"]

    code, _, err = keel(capsys, "list", "--no-such-flag", "--json")
    assert code == ExitCode.BAD_INPUT and "unrecognized arguments" in json_error(err)["message"]

    code, _, err = keel(capsys, "status", "keel-x", "--json")  # nothing listens
    assert code == ExitCode.UNREACHABLE and json_error(err)["kind"] == "unreachable"

    code, _, err = keel(capsys, "status", "keel-x")
    assert code == ExitCode.UNREACHABLE and one_line_error(err).startswith("keel: cannot reach Temporal")


# --------------------------------------------------------------------------- input at the door


@pytest.mark.unit
def test_a_goal_over_the_limit_is_refused_with_the_limit(
    cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    big = "x" * (3 * 1024 * 1024)
    cli_env.setattr("sys.stdin", io.StringIO(big))
    code, out, err = keel(capsys, "start", "travel", "-")
    assert code == ExitCode.BAD_INPUT and out == ""
    assert "the goal is 3,072 KiB, over the 128 KiB limit" in one_line_error(err)

    (Path.cwd() / "goal.txt").write_text(big)
    code, _, err = keel(capsys, "start", "travel", "--goal-file", "goal.txt")
    assert code == ExitCode.BAD_INPUT and "over the 128 KiB limit" in err

    code, _, err = keel(capsys, "start", "travel", GOAL, "--meta", "blob=" + "y" * 20_000)
    assert code == ExitCode.BAD_INPUT and "the metadata is 20 KiB, over the 16 KiB limit" in err


@pytest.mark.unit
async def test_the_python_api_refuses_a_large_goal_and_the_ui_never_copies_it(tmp_path: Path) -> None:
    api = Keel(settings=Settings(home=tmp_path, apps=[TRAVEL_APP]))  # not connected: the check comes first
    with pytest.raises(InvalidInput, match="over the 128 KiB limit"):
        await api.start("travel", "x" * (MAX_GOAL_BYTES + 1))
    with pytest.raises(InvalidInput, match="over the 128 KiB limit"):
        await api.start_request(SagaRequest(goal="x" * (3 * 1024 * 1024), team_name="travel"))

    goal = "word " * 20_000
    request = SagaRequest(goal=goal, team_name="travel", metadata={"note": "n" * 5000})
    details = _details(request, "planner", "keel-travel-x")
    assert len(details) < 3000 and "100,000 characters in all" in details
    assert len(_summary("travel", goal)) <= 200


@pytest.mark.unit
def test_unknown_model_alias_is_refused_at_start(
    cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    team = tmp_path / "team.yaml"
    team.write_text(
        "name: typo\nentry: a\nagents:\n  - name: a\n    instructions: do it\n    model: gpt-nine\n"
    )
    code, _, err = keel(capsys, "start", "--team-file", str(team), GOAL)
    assert code == ExitCode.BAD_INPUT
    line = one_line_error(err)
    assert "unknown model alias 'gpt-nine' used by a (gpt-nine)" in line
    assert "configured aliases: default" in line

    (tmp_path / "keel.toml").write_text('[models.gpt-nine]\nchain = ["offline:scripted"]\n')
    code, _, err = keel(capsys, "start", "--team-file", str(team), GOAL)
    assert code == ExitCode.UNREACHABLE, err  # the team is fine now; only the server is missing


@pytest.mark.unit
def test_yaml_errors_give_line_and_column(
    cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    team = tmp_path / "team.yaml"
    team.write_text("name: x\nagents:\n  - name: a\n    tools: [a, b\n  - name: c\n")
    code, _, err = keel(capsys, "start", "--team-file", str(team), GOAL)
    assert code == ExitCode.BAD_INPUT
    assert "not valid YAML at line 5, column 9:" in one_line_error(err)
    team.write_text('{"name": "x",\n "agents": [}')
    json_team = team.with_suffix(".json")
    team.rename(json_team)
    code, _, err = keel(capsys, "start", "--team-file", str(json_team), GOAL)
    assert "not valid JSON at line 2, column 13" in one_line_error(err)


@pytest.mark.unit
def test_keel_toml_unknown_table_is_refused_and_offline_keeps_its_prices(
    tmp_path: Path, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "keel.toml"
    config.write_text('[keel]\ntask_queue = "q"\n\n[model.default]\nchain = ["offline:scripted"]\n')
    with pytest.raises(ConfigError, match=r"unknown table \[model\]"):
        load_settings(config, env={})
    code, _, err = keel(capsys, "teams")
    assert code == ExitCode.BAD_INPUT and "unknown table [model]" in one_line_error(err)

    config.write_text("[providers.offline]\ntimeout_s = 5\n")
    settings = Settings(llm_port=8999)
    offline = LLMConfig.load(settings, env={}, path=config).providers["offline"]
    assert offline.timeout_s == 5
    assert offline.price_for("scripted") == OFFLINE_PRICE
    assert offline.base_url == "http://127.0.0.1:8999/v1"


@pytest.mark.unit
def test_run_links_follow_the_servers_ui_port(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert (
        load_settings(tmp_path / "none.toml", env={"KEEL_HOME": str(home)}).ui_url == "http://localhost:8233"
    )
    write_server_state(home, address="127.0.0.1:7300", ui_url="http://localhost:9123")
    env = {"KEEL_HOME": str(home)}
    assert load_settings(tmp_path / "none.toml", env=env).ui_url == "http://localhost:9123"
    # KEEL_UI_URL wins, and a client talking to another server is not redirected.
    assert (
        load_settings(tmp_path / "none.toml", env={**env, "KEEL_UI_URL": "http://ui"}).ui_url == "http://ui"
    )
    other = {**env, "TEMPORAL_ADDRESS": "127.0.0.1:7999"}
    assert load_settings(tmp_path / "none.toml", env=other).ui_url == "http://localhost:8233"
    # A recorded server whose process is gone is ignored.
    state = json.loads((home / "server.json").read_text())
    (home / "server.json").write_text(json.dumps({**state, "pid": 2**22 + 12345}))
    assert load_settings(tmp_path / "none.toml", env=env).ui_url == "http://localhost:8233"


@pytest.mark.unit
def test_a_completed_run_has_nothing_to_compensate() -> None:
    view = SagaStatusView(
        status=SagaStatus.COMPLETED,
        team="travel",
        goal=GOAL,
        active_agent="booker",
        step=5,
        turns=3,
        handoffs=1,
        completed_steps=["#2 book_flight", "#3 book_hotel"],
    )
    assert "to compensate" not in render.render_status(view)
    running = view.model_copy(update={"status": SagaStatus.AWAITING_REVIEW})
    assert "to compensate:  #2 book_flight, #3 book_hotel" in render.render_status(running)
    ended = view.model_copy(update={"status": SagaStatus.TERMINATED})
    assert "uncompensated:  #2 book_flight" in render.render_status(ended)


# --------------------------------------------------------------------------- against the dev server


@pytest.fixture
def bare_env(cli_env: pytest.MonkeyPatch, dev_server: Any) -> str:
    """The CLI pointed at the dev server, on a task queue no worker polls; returns the queue."""
    queue = f"test-contract-{uuid.uuid4().hex[:8]}"
    cli_env.setenv("TEMPORAL_ADDRESS", dev_server.address)
    cli_env.setenv("KEEL_TASK_QUEUE", queue)
    return queue


@pytest.mark.integration
async def test_start_from_stdin_and_file_reuse_id_and_a_run_terminated_before_its_first_task(
    dev_server: Any, bare_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = dev_server.client
    workflow_id = f"keel-travel-{uuid.uuid4().hex[:12]}"
    stdin_goal = "Trip to Porto\non Dec 12, 2 nights\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin_goal))
    code, out, err = await akeel(capsys, "start", "travel", "-", "--id", workflow_id, "--json")
    assert code == 0, err
    api = Keel(client, settings=Settings(task_queue=bare_env, apps=[TRAVEL_APP]))
    run = await api.get(workflow_id)
    assert (await run.request()).goal == stdin_goal

    code, _, err = await akeel(capsys, "start", "travel", GOAL, "--id", workflow_id)
    assert code == ExitCode.CONFLICT and "is already running" in one_line_error(err)

    await run.handle.terminate(reason="operator stop")
    code, out, err = await akeel(capsys, "status", workflow_id)
    assert code == 0, err
    assert "Terminated" in out and "FAILED_PRECONDITION" not in out + err
    code, out, err = await akeel(capsys, "status", workflow_id, "--json")
    assert json.loads(out)["status"] == "Terminated" and json.loads(out)["pending_review"] is None
    code, _, _ = await akeel(capsys, "watch", workflow_id)
    assert code == ExitCode.GOAL_NOT_REACHED

    code, _, err = await akeel(capsys, "start", "travel", GOAL, "--id", workflow_id)
    assert code == ExitCode.CONFLICT
    assert one_line_error(err) == (
        f"keel: a run with id {workflow_id} already ran (Terminated); "
        "pass --reuse-id (reuse_id=True) to start a new run with this id and fresh idempotency keys"
    )
    Path("goal.txt").write_text("Trip to Faro, Jan 3, 1 night")  # noqa: ASYNC240 - a tiny test file
    code, out, err = await akeel(
        capsys, "start", "travel", "--goal-file", "goal.txt", "--id", workflow_id, "--reuse-id", "--json"
    )
    assert code == 0, err
    second = await api.get(workflow_id)
    assert second.run_id != run.run_id
    assert (await second.request()).goal == "Trip to Faro, Jan 3, 1 night"
    await second.handle.terminate()

    code, _, err = await akeel(capsys, "redrive", workflow_id, "--id", workflow_id)
    assert code == ExitCode.CONFLICT and "pass --reuse-id" in err
    code, _, err = await akeel(capsys, "redrive", workflow_id, "--id", workflow_id, "--reuse-id")
    assert code == 0, err
    with pytest.raises(Exception, match="already running"):
        await api.start("travel", GOAL, workflow_id=workflow_id, reuse_id=True)
    await (await api.get(workflow_id)).handle.terminate()


@pytest.mark.integration
async def test_list_is_newest_first(
    dev_server: Any, bare_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Keel(dev_server.client, settings=Settings(task_queue=bare_env, apps=[TRAVEL_APP]))
    correlation = uuid.uuid4().hex
    runs = []
    for i in range(3):
        runs.append(await api.start("travel", f"{GOAL} #{i}", correlation_id=correlation))
    # The newest run has ended: SQL visibility lists it after the open ones.
    await runs[2].handle.terminate()
    try:

        async def listed() -> list[str]:
            code, out, _ = await akeel(capsys, "list", "--correlation-id", correlation, "--json")
            return [r["workflow_id"] for r in json.loads(out)] if code == 0 else []

        ids = await eventually(listed, lambda ids: len(ids) == 3)
        assert ids == [r.workflow_id for r in reversed(runs)]
        code, out, _ = await akeel(capsys, "list", "--correlation-id", correlation, "--limit", "2", "--json")
        assert [r["workflow_id"] for r in json.loads(out)] == [runs[2].workflow_id, runs[1].workflow_id]
    finally:
        for run in runs[:2]:
            await run.handle.terminate()


@pytest.fixture
def review_env(
    cli_env: pytest.MonkeyPatch, dev_server: Any, worker_settings: Settings, offline_llm: Any, task_queue: str
) -> Settings:
    from tests.test_starter_api import make_keel_settings

    settings = make_keel_settings(worker_settings, offline_llm, task_queue, dev_server)
    cli_env.setenv("TEMPORAL_ADDRESS", dev_server.address)
    cli_env.setenv("KEEL_TASK_QUEUE", settings.task_queue)
    cli_env.setenv("KEEL_UI_URL", settings.ui_url)
    return settings


@pytest.mark.integration
async def test_terminated_during_review(
    dev_server: Any, review_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    api = Keel(dev_server.client, settings=review_env)
    async with running_worker(dev_server.client, review_env):
        run = await api.start("travel", GOAL)
        await wait_for_review(run)
        await run.handle.terminate(reason="operator stop")
        code, out, err = await akeel(capsys, "status", run.workflow_id, "--json")
        assert code == 0, err
        view = json.loads(out)
        assert view["status"] == "Terminated" and view["pending_review"] is None
        code, out, _ = await akeel(capsys, "status", run.workflow_id)
        assert "pending review" not in out and "status:         Terminated" in out
        code, out, _ = await akeel(capsys, "pending", "--json")
        assert run.workflow_id not in out
        code, out, _ = await akeel(capsys, "watch", run.workflow_id, "--json")
        assert code == ExitCode.GOAL_NOT_REACHED
        code, _, err = await akeel(capsys, "approve", run.workflow_id, "--reviewer", "ana")
        assert code == ExitCode.CONFLICT, err
        code, _, err = await akeel(capsys, "cancel", run.workflow_id)
        assert code == ExitCode.CONFLICT and "already ended (Terminated)" in err


@pytest.mark.integration
async def test_a_stuck_run_is_shown_with_the_workers_error(
    dev_server: Any, review_env: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI encrypts; the worker (the session's plain client) has no key and cannot read the input.
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", base64.b64encode(os.urandom(32)).decode())
    async with running_worker(dev_server.client, review_env):
        code, out, err = await akeel(capsys, "start", "travel", GOAL, "--json")
        assert code == 0, err
        workflow_id = json.loads(out)["workflow_id"]
        try:

            async def status() -> tuple[int, str]:
                code, out, _ = await akeel(capsys, "status", workflow_id, "--json")
                return code, out

            code, out = await eventually(status, lambda r: r[0] == 0 and '"Stuck"' in r[1], within=30)
            shown = json.loads(out)
            assert "no key is configured" in shown["stuck"] and shown["goal"] == GOAL
            code, out, _ = await akeel(capsys, "status", workflow_id)
            assert "STUCK" in out and "no key is configured" in out

            code, out, _ = await akeel(capsys, "list", "--json")
            row = next(r for r in json.loads(out) if r["workflow_id"] == workflow_id)
            assert "no key is configured" in row["stuck"]
            code, out, _ = await akeel(capsys, "list")
            assert "Stuck" in out and "no key is configured" in out

            code, out, _ = await akeel(capsys, "pending", "--json")
            row = next(r for r in json.loads(out) if r["workflow_id"] == workflow_id)
            assert "no key is configured" in row["stuck"]
            code, out, _ = await akeel(capsys, "pending")
            assert "STUCK" in out

            code, out, err = await akeel(capsys, "cancel", workflow_id)
            assert code == ExitCode.NO_WORKER
            assert "compensation cannot run until a worker can read it" in one_line_error(err)
        finally:
            await dev_server.client.get_workflow_handle(workflow_id).terminate()
