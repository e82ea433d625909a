"""Retention of the conversation store against a real Temporal dev server (issue 13, item 5).

Content is written by real activities of real runs, owned by their workflow ids. A
gc keeps what a listed run owns (open, or closed within the namespace's retention);
once Temporal deletes a run (what the retention does when its period ends:
`DeleteWorkflowExecution`), the next gc reclaims what no other run owns. Every test
runs on both drivers.

Rows are backdated past the grace period instead of waiting for it; since that also
defeats the grace period's cover for visibility lag, each test waits until the
listing shows its runs before collecting.

The module has a dev server of its own: by default the dev server lists a deleted
run for about 30 s more (it waits for the close record before deleting the
visibility record: `history.transferProcessorEnsureCloseBeforeDelete`, measured
33 s); that check is off here, so a deleted run leaves the listing at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity, workflow
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from agentkeel import Agent, App, Team, tool
from agentkeel.contracts import LLMRequest
from agentkeel.dev.devserver import DevServer
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings, StoreSettings
from agentkeel.starters import cmd_store
from agentkeel.starters.exit_codes import ExitCode
from agentkeel.store import (
    ContentStore,
    ConversationChain,
    MissingContentError,
    canonical_json,
    open_store,
    ref_of,
)
from agentkeel.temporal import connect
from agentkeel.testing import Reply, ScriptedModel, answer, call, keel_test_env
from tests import store_raw
from tests.fixtures.temporal import DevServerHandle
from tests.test_cli_runs import akeel
from tests.test_starter_api import eventually

pytestmark = pytest.mark.integration

SHARED = {"role": "system", "content": "You book trips."}
"""Written by every run: one content, several owners."""
HOUR = 3600.0


@activity.defn(name="store_gc_test_write")
async def write_conversation(request: dict[str, Any]) -> str:
    """Append the run's messages to a new conversation, owned by the calling run's workflow id."""
    owner = activity.info().workflow_id
    store = open_store(Settings(home=Path(request["home"])), request["url"], env={})
    try:
        return await ConversationChain.append(store, None, [SHARED, *request["messages"]], owner=owner)
    finally:
        await store.aclose()


@workflow.defn(name="StoreGcTestWorkflow")
class StoreGcTestWorkflow:
    """Writes a conversation through an activity; with `stay_open`, then stays open until terminated."""

    @workflow.run
    async def run(self, request: dict[str, Any]) -> str:
        head = await workflow.execute_activity(
            write_conversation, request, start_to_close_timeout=timedelta(seconds=30)
        )
        if request.get("stay_open"):
            await workflow.wait_condition(lambda: False)
        return head


@dataclass
class Run:
    """A run whose activity wrote a conversation: its workflow id, head, and the bytes only it owns."""

    workflow_id: str
    head: str
    own_bytes: int
    handle: WorkflowHandle[Any, Any]


async def start_run(
    client: Client, task_queue: str, url: str, home: Path, text: str, *, stay_open: bool = False
) -> Run:
    """Run `StoreGcTestWorkflow` writing `[SHARED, <text>]`; return once its conversation is stored."""
    workflow_id = f"store-gc-{text}-{uuid.uuid4().hex[:8]}"
    message = {"role": "user", "content": f"{text} " * 200}
    request = {"url": url, "home": str(home), "messages": [message], "stay_open": stay_open}
    handle = await client.start_workflow(
        StoreGcTestWorkflow.run, request, id=workflow_id, task_queue=task_queue
    )
    # Content addressing: the head is known before the run writes it.
    node = ConversationChain.node_bytes(
        None, [ref_of(canonical_json(SHARED)), ref_of(canonical_json(message))]
    )
    if stay_open:
        async with open_store(Settings(home=home), url, cache_bytes=0, env={}) as store:
            await eventually(store.owners, lambda owners: workflow_id in owners)
    else:
        assert await handle.result() == ref_of(node)
    return Run(workflow_id, ref_of(node), len(canonical_json(message)) + len(node), handle)


async def listed(client: Client, *workflow_ids: str) -> set[str]:
    """Which of `workflow_ids` the namespace lists now."""
    query = " OR ".join(f"WorkflowId = '{wid}'" for wid in workflow_ids)
    return {execution.id async for execution in client.list_workflows(query)}


async def delete_run(client: Client, workflow_id: str) -> None:
    """Delete a run's execution (what the namespace's retention does when its period ends) and
    wait until the listing no longer shows it."""
    await client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=client.namespace, workflow_execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    await eventually(lambda: listed(client, workflow_id), lambda ids: not ids)


async def gc_now(store: ContentStore, client: Client) -> tuple[int, int, int]:
    """What `keel store gc` does, with a one-hour grace: (owners removed, contents removed, bytes)."""
    retained = await cmd_store.retained_workflow_ids(client)
    report = await store.gc(retained, created_before=time.time() - HOUR)
    return report.owners_removed, report.contents_removed, report.bytes_reclaimed


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dev_server() -> AsyncIterator[DevServerHandle]:
    """A dev server on free ports, in memory, whose deleted runs leave the listing at once."""
    server = DevServer(
        db_path=None,
        headless=True,
        extra_args=["--dynamic-config-value", "history.transferProcessorEnsureCloseBeforeDelete=false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await server.start()
    try:
        yield DevServerHandle(
            server=server, client=await connect(address=server.address, namespace="default")
        )
    finally:
        await server.stop()


@pytest.fixture
async def worker(dev_server: DevServerHandle, task_queue: str) -> AsyncIterator[None]:
    """A worker for `StoreGcTestWorkflow` on the test's own task queue."""
    async with Worker(
        dev_server.client,
        task_queue=task_queue,
        workflows=[StoreGcTestWorkflow],
        activities=[write_conversation],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield


async def test_content_lives_as_long_as_its_runs_are_retained(
    dev_server: DevServerHandle, worker: None, task_queue: str, any_store_url: str, tmp_path: Path
) -> None:
    client = dev_server.client
    closed = await start_run(client, task_queue, any_store_url, tmp_path, "closed")
    running = await start_run(client, task_queue, any_store_url, tmp_path, "open", stay_open=True)
    await eventually(
        lambda: listed(client, closed.workflow_id, running.workflow_id), lambda ids: len(ids) == 2
    )
    await store_raw.backdate(any_store_url, 2 * HOUR)
    async with open_store(Settings(home=tmp_path), any_store_url, env={}) as store:
        # Written a moment ago by a run the listing does not know (yet): the grace period covers it.
        young = await store.put_json({"role": "user", "content": "in flight"}, owner="store-gc-not-listed")
        assert await store.owners() == {closed.workflow_id, running.workflow_id, "store-gc-not-listed"}

        # Both runs are listed (one closed within retention, one open): nothing goes.
        assert await gc_now(store, client) == (0, 0, 0)
        assert len(await ConversationChain.read(store, closed.head)) == 2

        # The closed run's retention ends: its own message and node go, the shared prompt stays.
        await delete_run(client, closed.workflow_id)
        assert await gc_now(store, client) == (1, 2, closed.own_bytes)
        with pytest.raises(MissingContentError):
            await ConversationChain.read(store, closed.head)
        assert (await ConversationChain.read(store, running.head))[0] == SHARED

        # The open run ends and is deleted: the shared prompt has no owner left and goes too.
        await running.handle.terminate(reason="test over")
        await delete_run(client, running.workflow_id)
        shared_bytes = len(canonical_json(SHARED))
        assert await gc_now(store, client) == (1, 3, running.own_bytes + shared_bytes)
        assert await store.get_json(young) == {"role": "user", "content": "in flight"}
        stats = await store.stats()
        assert (stats.contents, stats.owners) == (1, 1)


@tool
async def look_up(city: str) -> str:
    """Look a city's weather up."""
    return f"{city}: sunny. " * 100


guide = Agent(name="guide", instructions="Look the city up once, then answer.", tools=[look_up])
tour = Team(name="tour", entry=guide, agents=[guide], max_turns=4)
tour_app = App(name="tour", tools=[look_up], teams=[tour])


def _guide_script(request: LLMRequest) -> Reply:
    looked_up = any(m.role == "tool" for m in request.messages)
    return answer("Sunny in Lisbon.") if looked_up else call("look_up", city="Lisbon")


class _Env:
    """What `keel_test_env` uses of a `WorkflowEnvironment`: its client (here, the real dev server's)."""

    def __init__(self, client: Client) -> None:
        self.client = client


async def test_a_saga_owns_all_it_stores_and_gc_reclaims_it_after_retention(
    dev_server: DevServerHandle, any_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The platform's own store layer, end to end: every content a run stores is owned by its workflow id."""
    monkeypatch.delenv("KEEL_STORE_URL", raising=False)  # the worker's store comes from `[store]` here
    settings = Settings(home=tmp_path / "home", store=StoreSettings(url=any_store_url))
    client = dev_server.client
    env = _Env(client)
    async with keel_test_env(tour_app, ScriptedModel(_guide_script), env=env, settings=settings) as keel:  # type: ignore[arg-type]
        handle = await keel.start(tour, "Weather in Lisbon?")
        result = await handle.result()
    assert result.status == SagaStatus.COMPLETED, result.reason
    await eventually(lambda: listed(client, handle.id), lambda ids: len(ids) == 1)
    await store_raw.backdate(any_store_url, 2 * HOUR)
    async with open_store(settings, cache_bytes=0, env={}) as store:
        stats = await store.stats()
        assert stats.owners == 1 and await store.owners() == {handle.id} and stats.contents >= 4
        # The run is listed: nothing goes, so nothing was written without an owner either.
        assert await gc_now(store, client) == (0, 0, 0)
        await delete_run(client, handle.id)
        assert await gc_now(store, client) == (1, stats.contents, stats.bytes)


def _keel(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """`keel ARGV` as its own process, the way a person or cron runs it."""
    return subprocess.run(
        [sys.executable, "-c", "from agentkeel.starters.cli import main; main()", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    # A process that used a Temporal client may abort at exit after its output (sdk-python issue 300).
    assert done.returncode in (0, -signal.SIGABRT), done.stdout + done.stderr
    return done.stdout


async def test_keel_store_gc_command(
    dev_server: DevServerHandle,
    worker: None,
    task_queue: str,
    any_store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = dev_server.client
    kept = await start_run(client, task_queue, any_store_url, tmp_path, "cli-kept")
    gone = await start_run(client, task_queue, any_store_url, tmp_path, "cli-gone")
    await eventually(lambda: listed(client, kept.workflow_id, gone.workflow_id), lambda ids: len(ids) == 2)
    await store_raw.backdate(any_store_url, 2 * HOUR)
    await delete_run(client, gone.workflow_id)
    env = {
        "TEMPORAL_ADDRESS": dev_server.address,
        "TEMPORAL_NAMESPACE": dev_server.namespace,
        "KEEL_STORE_URL": any_store_url,
        "KEEL_HOME": str(tmp_path / "home"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("KEEL_CONFIG", "TEMPORAL_PROFILE", "TEMPORAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    code, out, _ = await akeel(capsys, "store", "gc", "--dry-run", "--json")
    dry = json.loads(out)
    assert (
        code == ExitCode.OK and dry["dry_run"] and (dry["owners_removed"], dry["contents_removed"]) == (1, 2)
    )
    assert dry["bytes_reclaimed"] == gone.own_bytes and dry["left"]["contents"] == 5  # nothing deleted
    assert dry["retained_runs"] >= 1 and dry["namespace"] == dev_server.namespace
    assert dry["retention_s"] == 86400  # the dev server's default namespace keeps closed runs a day

    # As a person or cron runs it: its own process, text output.
    text = _ok(await asyncio.to_thread(_keel, dict(os.environ), "store", "gc", "--grace", "30m"))
    assert f"removed: 1 runs, 2 contents, {gone.own_bytes:,} bytes" in text, text
    assert "left:     3 contents" in text and "1 runs" in text and "grace:    1800 s" in text, text
    assert "(retention 1 d)" in text, text

    code, out, _ = await akeel(capsys, "store", "stats", "--json")
    stats = json.loads(out)
    assert (code, stats["url"], stats["contents"], stats["owners"]) == (0, any_store_url, 3, 1)
    async with open_store(Settings(home=tmp_path), any_store_url, env={}) as store:
        assert len(await ConversationChain.read(store, kept.head)) == 2


async def test_gc_refuses_without_a_full_listing(
    dev_server: DevServerHandle,
    any_store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Unreachable Temporal, a listing that fails part-way, an empty namespace: nothing is deleted."""
    async with open_store(Settings(home=tmp_path), any_store_url, env={}) as store:
        await store.put(b"owned by a run gone long ago", owner="store-gc-gone")
    await store_raw.backdate(any_store_url, 2 * HOUR)
    monkeypatch.setenv("KEEL_STORE_URL", any_store_url)
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KEEL_CONFIG", raising=False)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", dev_server.namespace)

    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    code, out, err = await akeel(capsys, "store", "gc")
    assert code == ExitCode.UNREACHABLE and "cannot reach Temporal" in err and out == ""

    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.address)

    async def broken_listing(client: Client) -> set[str]:
        raise RPCError("connection reset while listing", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(cmd_store, "retained_workflow_ids", broken_listing)
    code, out, err = await akeel(capsys, "store", "gc", "--json")
    assert code == ExitCode.UNREACHABLE and "connection reset" in err and out == ""

    async def empty_listing(client: Client) -> set[str]:
        return set()

    monkeypatch.setattr(cmd_store, "retained_workflow_ids", empty_listing)
    code, out, err = await akeel(capsys, "store", "gc")
    assert code == ExitCode.CONFLICT and "lists no run at all" in err
    async with open_store(Settings(home=tmp_path), any_store_url, env={}) as store:
        assert (await store.stats()).contents == 1
    code, out, err = await akeel(capsys, "store", "gc", "--allow-empty", "--json")
    assert code == ExitCode.OK and json.loads(out)["contents_removed"] == 1
