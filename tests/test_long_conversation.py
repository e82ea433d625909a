"""Conversations of any length: stored by content, whole across continue-as-new, constant history per turn.

A dev server of its own suggests continue-as-new early (every few hundred events, as a
real server does at its limits), so a 1,000-turn run crosses many runs. The scripted
model counts what it is sent: every turn's request holds every message of the
conversation, the large tool results whole, whichever run of the chain asks.
"""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Replayer

from agentkeel import Agent, App, Team, tool
from agentkeel.contracts import LLMRequest
from agentkeel.dev.devserver import DevServer
from agentkeel.plugin import AgentkeelPlugin
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.starters.client import Keel
from agentkeel.store import open_store
from agentkeel.temporal import connect
from agentkeel.testing import Reply, ScriptedModel, answer, call, keel_test_env, register_search_attributes

TURNS = 1000
RESULT_CHARS = 2048
SUGGEST_CONTINUE_AS_NEW_EVENTS = 400
HISTORY_DIR = Path(__file__).parent / "histories"


def noise(seed: int) -> str:
    """2 KB of random letters: a tool result that neither compresses nor repeats."""
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=RESULT_CHARS))


@tool
async def read_page(page: int) -> str:
    """Read one page of the archive."""
    return noise(page)


reader = Agent(name="reader", instructions="Read every page, one per turn, then say done.", tools=[read_page])
archive = Team(name="archive", entry=reader, agents=[reader], max_turns=TURNS + 5)
app = App(name="archive", tools=[read_page], teams=[archive])


def script(request: LLMRequest) -> Reply:
    turn = sum(1 for m in request.messages if m.role == "assistant") + 1
    return call("read_page", page=turn) if turn < TURNS else answer("All pages read.")


@pytest_asyncio.fixture(loop_scope="session")
async def early_continue_server() -> AsyncIterator[Client]:
    """A dev server that suggests continue-as-new after a few hundred events."""
    server = DevServer(
        headless=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        extra_args=[
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={SUGGEST_CONTINUE_AS_NEW_EVENTS}",
        ],
    )
    await server.start()
    try:
        client = await connect(address=server.address, namespace="default")
        await register_search_attributes(client)
        yield client
    finally:
        await server.stop()


async def chain_runs(client: Client, workflow_id: str) -> list[str]:
    """Run ids of the continue-as-new chain, first to last."""
    executions = [e async for e in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    return [e.run_id for e in sorted(executions, key=lambda e: e.start_time)]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_thousand_turns_continue_as_new_and_the_model_still_gets_every_message(
    early_continue_server: Client, tmp_path: Path
) -> None:
    model = ScriptedModel(script)
    settings = Settings(home=tmp_path / "keel-home")
    async with keel_test_env(app, model, env=_Env(early_continue_server), settings=settings) as env:
        handle = await env.start(archive, "Read the archive.")
        result = await handle.result()
        # The Python API reads the whole conversation back from the store, and whole tool results.
        async with Keel(early_continue_server, settings=settings) as keel:
            run = await keel.get(handle.id)
            conversation = await run.conversation()
            transcript = await run.transcript()
    assert result.status == SagaStatus.COMPLETED, result.reason

    # Every turn's request: the system prompt, the goal, and an answer and a tool result per turn before.
    counts = [len(r.messages) for r in model.requests]
    assert len(counts) == TURNS
    assert counts == [2 + 2 * (turn - 1) for turn in range(1, TURNS + 1)]
    last = model.requests[-1]
    tool_results = [m.content for m in last.messages if m.role == "tool"]
    assert tool_results == [f'{{"result": "{noise(page)}"}}' for page in range(1, TURNS)]
    assert all(m.content_ref is None for m in last.messages)

    assert len(conversation) == 1 + 2 * (TURNS - 1) + 1
    assert conversation[-1].content == "All pages read."
    assert conversation[2].content == f'{{"result": "{noise(1)}"}}'
    stored_results = [e for e in transcript if e.kind == "tool_result"]
    assert stored_results and all(len(e.data["result"]) == RESULT_CHARS for e in stored_results)
    assert stored_results[-1].data == {"result": noise(TURNS - 1)}

    # The run continued as new, as Temporal suggested, and no run's history holds a tool result.
    runs = await chain_runs(early_continue_server, handle.id)
    assert len(runs) >= 5, runs
    sizes = []
    for run_id in runs:
        events = [
            e
            async for e in early_continue_server.get_workflow_handle(
                handle.id, run_id=run_id
            ).fetch_history_events()
        ]
        sizes.append(sum(e.ByteSize() for e in events))
        completed = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED]
        assert all(noise(1)[:200] not in str(e) for e in completed)
    assert max(sizes) < 2 * min(sizes[:-1]), sizes  # every full run of the chain is about the same size

    # Every run of the chain replays; two of them are checked in for later versions to replay.
    replayer = Replayer(workflows=[], plugins=[AgentkeelPlugin(apps=[])])
    for name, run_id in (("long_continued_run", runs[1]), ("long_last_run", runs[-1])):
        history = await early_continue_server.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        await replayer.replay_workflow(history)
        if os.environ.get("KEEL_RECORD_HISTORIES"):
            compact = json.dumps(json.loads(history.to_json()), separators=(",", ":"))
            (HISTORY_DIR / f"{name}.json").write_text(compact)

    # Stored once each: every message, the chain's nodes, the agent's prompt.
    async with open_store(settings, cache_bytes=0) as store:
        contents, size = await store.count()
    assert contents > 3 * TURNS
    assert size > TURNS * RESULT_CHARS


class _Env:
    """The minimum of a `WorkflowEnvironment` that `keel_test_env` uses: its client."""

    def __init__(self, client: Client) -> None:
        self.client = client
