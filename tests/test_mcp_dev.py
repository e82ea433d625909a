"""The MCP example from a user's shell: `keel dev --app agentkeel.examples.tickets`, approve and reject.

`keel dev` runs the server, the offline LLM (with the example's scenario) and a worker that starts
the tracker over stdio in the project folder (`.keel/tickets.json`); `keel teams` lists its tools.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.llm import free_port
from tests.mcp_servers import tickets_in
from tests.test_init import KEEL, keel, project_env

pytestmark = pytest.mark.integration


def _watch_until_review(
    workflow_id: str, cwd: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[str], dict]:
    """`keel watch --json` (one process, not a poll per status), read until a review is pending."""
    watch = subprocess.Popen(
        [*KEEL, "watch", workflow_id, "--json", "--interval", "0.2"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert watch.stdout is not None
    status: dict = {}
    for line in watch.stdout:
        status = json.loads(line)
        if status.get("pending_review") or status["status"] not in ("Running", "AwaitingReview"):
            break
    return watch, status


def test_keel_dev_runs_the_tickets_example(tmp_path: Path) -> None:
    port, ui_port, llm_port = free_port(), free_port(), free_port()
    env = project_env(tmp_path, TEMPORAL_ADDRESS=f"127.0.0.1:{port}", KEEL_LLM_PORT=str(llm_port))
    app = ["--app", "agentkeel.examples.tickets"]
    dev = subprocess.Popen(
        [*KEEL, "dev", *app, "--in-memory", "--port", str(port), "--ui-port", str(ui_port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env["KEEL_APPS"] = "agentkeel.examples.tickets"  # the CLI knows the team too
    try:
        teams = keel("teams", cwd=tmp_path, env=env)
        assert "tool assign_ticket [mcp tickets: destructive, idempotent, closed-world]" in teams.stdout
        assert "always reviewed (destructive)" in teams.stdout, teams.stdout + teams.stderr
        deadline = time.monotonic() + 60
        outcomes = {}
        for decision in ("approve", "reject"):
            while True:  # the worker polls once the server answers; start retries until it does
                started = keel("start", "tickets", "Checkout returns 500", "--json", cwd=tmp_path, env=env)
                if started.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert started.returncode == 0, started.stderr
            workflow_id = json.loads(started.stdout)["workflow_id"]
            watch, status = _watch_until_review(workflow_id, tmp_path, env)
            assert status["pending_review"]["tool"] == "assign_ticket", status
            flags = ["--reviewer", "ana"] if decision == "approve" else ["--reason", "not ours"]
            assert keel(decision, workflow_id, *flags, cwd=tmp_path, env=env).returncode == 0
            rest, _ = watch.communicate(timeout=60)
            outcomes[decision] = json.loads(rest.strip().splitlines()[-1])
    finally:
        dev.terminate()
        dev.wait(timeout=30)
    assert outcomes["approve"]["status"] == "Completed", outcomes["approve"]
    assert outcomes["approve"]["completed_steps"] == ["create_ticket (step 2)", "assign_ticket (step 5)"]
    assert outcomes["reject"]["status"] == "Compensated"
    assert [c["compensation"] for c in outcomes["reject"]["compensations"]] == ["tickets.close_ticket"]
    tickets = tickets_in(tmp_path / ".keel" / "tickets.json")
    assert tickets[1]["status"] == "open" and tickets[1]["assignee"] == "oncall"
    # The rejected run's ticket (its number read by the scenario from create_ticket's result) is closed.
    assert tickets[2]["status"] == "closed" and tickets[2]["reason"] == "the run did not finish"
    assert (
        "not ours" in outcomes["reject"]["last_error"] and '"number": 2' in outcomes["reject"]["last_error"]
    )
