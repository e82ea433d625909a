"""The README's worker and starter snippets, run as written against a real dev server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentkeel.search_attributes import SagaStatus

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(after: str) -> str:
    """The first ```python block after the line starting with `after`."""
    text = README.read_text()
    start = text.index(after)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"no python block after {after!r}"
    return match.group(1)


def load(code: str, address: str, task_queue: str) -> dict[str, Any]:
    """Execute a snippet's definitions (not its `asyncio.run`), pointed at this test's server and queue."""
    code = code.replace("localhost:7233", address).replace(
        'task_queue="agentkeel"', f'task_queue="{task_queue}"'
    )
    assert "asyncio.run(main())" in code
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(code.replace("asyncio.run(main())", ""), "README.md", "exec"), namespace)  # noqa: S102
    return namespace


async def test_the_readme_worker_and_starter_run_a_travel_saga(
    dev_server: Any, offline_llm: Any, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEEL_LLM_PORT", str(offline_llm.port))
    monkeypatch.setenv("KEEL_TASK_QUEUE", task_queue)
    worker = load(snippet("A worker (your tools"), dev_server.address, task_queue)
    starter = snippet("A starter (a script").replace("localhost:7233", dev_server.address)
    (tmp_path / "starter.py").write_text(starter)
    # The starter runs as the script it is, in its own process, with nothing but what it says:
    # no KEEL_APPS, so the team's name must come from the plugin it connects with.
    env = {k: v for k, v in os.environ.items() if k != "KEEL_APPS"}
    running = asyncio.create_task(worker["main"]())
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-u", "starter.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    # SIGABRT (-6): the SDK's abort at interpreter exit (sdk-python issue 300), after the output;
    # the README says so. Anything else is a failure of the snippet.
    assert done.returncode in (0, -signal.SIGABRT), done.stderr[-2000:]
    assert done.stdout.strip().endswith(SagaStatus.COMPLETED.value), done.stdout + done.stderr[-2000:]


async def test_a_worker_plugin_on_a_plugin_client_registers_each_activity_once(
    dev_server: Any, task_queue: str
):
    from temporalio.client import Client
    from temporalio.worker import Worker

    from agentkeel import AgentkeelPlugin

    client = await Client.connect(dev_server.address, plugins=[AgentkeelPlugin(apps=[])])
    with pytest.warns(UserWarning, match="same plugin type"):
        worker = Worker(
            client, task_queue=task_queue, plugins=[AgentkeelPlugin(apps=["agentkeel.examples.travel"])]
        )
    names = [a.__temporal_activity_definition.name for a in worker.config(active_config=True)["activities"]]
    assert len(names) == len(set(names))
    assert {"call_llm", "resolve_team", "book_flight", "charge_card"} <= set(names)
    workflows = worker.config(active_config=True)["workflows"]
    assert len(workflows) == len({w.__name__ for w in workflows})


async def test_a_worker_on_a_client_without_the_converter_is_refused(dev_server: Any, task_queue: str):
    from temporalio.client import Client
    from temporalio.worker import Worker

    from agentkeel import AgentkeelPlugin

    plain = await Client.connect(dev_server.address)
    with pytest.raises(ValueError, match="does not use agentkeel's data converter"):
        Worker(plain, task_queue=task_queue, plugins=[AgentkeelPlugin()])


def test_the_readme_tools_team_and_their_tests_run_as_written(tmp_path: Path) -> None:
    (tmp_path / "support.py").write_text(snippet("One Python file: tools are typed functions"))
    (tmp_path / "test_support.py").write_text(snippet("Tests take a couple of seconds"))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = session\n"
        "asyncio_default_test_loop_scope = session\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_support.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # A pytest process that used Temporal clients may abort at interpreter exit after its summary
    # (sdk-python issue 300, SIGABRT): the summary decides, and no other exit is accepted.
    assert done.returncode in (0, -signal.SIGABRT), done.stdout[-3000:] + done.stderr[-1000:]
    assert "failed" not in done.stdout and "error" not in done.stdout.lower(), (
        done.stdout[-3000:] + done.stderr[-1000:]
    )
    assert "3 passed" in done.stdout


def test_the_readme_yaml_team_loads(tmp_path: Path) -> None:
    from agentkeel.teams import load_team_file

    text = README.read_text()
    start = text.index("### Teams in YAML or JSON")
    block = re.search(r"```yaml\n(.*?)```", text[start:], re.S)
    assert block
    (tmp_path / "support.yaml").write_text(block.group(1))
    team = load_team_file(tmp_path / "support.yaml")
    assert team.needs_review("issue_refund", {"amount_usd": 600})
    assert team.review.reviewers == ["ana", "ops-*"]
