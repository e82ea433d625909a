"""`keel init`: the scaffold's own tests pass, and `keel dev --app` runs it end to end with approve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.llm import free_port

KEEL = [sys.executable, "-c", "from agentkeel.starters.cli import main; main()"]


def keel(*argv: str, cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEEL, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def project_env(project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "TEMPORAL_"))}
    env.update(PYTHONPATH=str(project), PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("init") / "my-party"
    done = keel("init", str(folder), "--json", cwd=folder.parent, env=project_env(folder.parent))
    assert done.returncode == 0, done.stderr
    assert {Path(p).name for p in json.loads(done.stdout)["files"]} >= {
        "app.py",
        "test_party.py",
        "README.md",
    }
    return folder


@pytest.mark.unit
def test_init_refuses_a_folder_that_is_not_empty(project: Path) -> None:
    done = keel("init", str(project), cwd=project.parent, env=project_env(project.parent))
    assert done.returncode == 5 and "is not empty" in done.stderr


@pytest.mark.integration
def test_the_scaffolds_tests_pass(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=project_env(project),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # A pytest process that used Temporal clients may abort at interpreter exit after its summary
    # (sdk-python issue 300, SIGABRT): the summary decides, and no other exit is accepted.
    assert done.returncode in (0, -signal.SIGABRT), done.stdout[-3000:] + done.stderr[-2000:]
    assert "failed" not in done.stdout and "error" not in done.stdout.lower(), (
        done.stdout[-3000:] + done.stderr[-2000:]
    )
    assert "4 passed" in done.stdout


@pytest.mark.integration
def test_keel_dev_runs_the_scaffold_end_to_end(project: Path) -> None:
    port, ui_port, llm_port = free_port(), free_port(), free_port()
    env = project_env(project, TEMPORAL_ADDRESS=f"127.0.0.1:{port}", KEEL_LLM_PORT=str(llm_port))
    dev = subprocess.Popen(
        [
            *KEEL,
            "dev",
            "--app",
            "my_party.app",
            "--in-memory",
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
        ],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # the worker polls once the server answers; start retries until it does
            started = keel("start", "party", "Birthday for 12 on 2027-03-01", "--json", cwd=project, env=env)
            if started.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert started.returncode == 0, started.stderr
        workflow_id = json.loads(started.stdout)["workflow_id"]
        while True:
            status = json.loads(keel("status", workflow_id, "--json", cwd=project, env=env).stdout)
            if status.get("pending_review") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert status["pending_review"]["tool"] == "charge_deposit", status
        assert status["pending_review"]["arguments"]["amount_usd"] == 40.0 * 12 + 3.5 * 12
        approved = keel("approve", workflow_id, "--reviewer", "ana", cwd=project, env=env)
        assert approved.returncode == 0, approved.stderr
        watched = keel("watch", workflow_id, cwd=project, env=env)
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert "Completed" in watched.stdout

        # And rejected: the cake, then the venue, are undone.
        started = keel("start", "party", "Birthday for 12 on 2027-03-01", "--json", cwd=project, env=env)
        workflow_id = json.loads(started.stdout)["workflow_id"]
        while not json.loads(keel("status", workflow_id, "--json", cwd=project, env=env).stdout).get(
            "pending_review"
        ):
            assert time.monotonic() < deadline + 60
            time.sleep(0.3)
        rejected = keel("reject", workflow_id, "--reason", "too dear", cwd=project, env=env)
        assert rejected.returncode == 0, rejected.stderr
        watched = keel("watch", workflow_id, "--json", cwd=project, env=env)
        assert watched.returncode == 1  # the run ended without reaching its goal
        final = json.loads(watched.stdout.strip().splitlines()[-1])
        assert final["status"] == "Compensated"
        assert [c["compensation"] for c in final["compensations"]] == ["cancel_cake", "cancel_venue"]
    finally:
        dev.terminate()
        dev.wait(timeout=30)
