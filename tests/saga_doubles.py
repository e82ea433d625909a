"""Activity doubles for workflow tests: a scripted `call_llm`, the real travel tools on a temp ledger."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from agentkeel.contracts import LLMRequest, SagaRequest, SagaResult, TeamSpec
from agentkeel.examples.travel import app as travel_app
from agentkeel.examples.travel import team as shipped_travel_team
from agentkeel.examples.travel.ledger import Ledger
from agentkeel.names import AGENT_SAGA_WORKFLOW
from agentkeel.plugin import AgentkeelPlugin
from agentkeel.settings import Settings
from agentkeel.testing import Reply as Answer
from agentkeel.testing import ScriptedModel

Reply = dict[str, Any]
"""`{"content": str, "tool_calls": [(name, args_dict_or_raw_str), ...], "tokens": int}`"""


def turn_of(request: LLMRequest) -> int:
    """1 + the number of earlier answers of the asking agent (same rule as the offline provider)."""
    return 1 + sum(1 for m in request.messages if m.role == "assistant" and m.name == request.agent)


class ScriptedLLM(ScriptedModel):
    """`agentkeel.testing.ScriptedModel` answering from a script keyed by (agent, turn of that agent)."""

    def __init__(self, script: dict[tuple[str, int], Reply], default: Reply | None = None) -> None:
        self.by_agent = script
        self.default = default or {"content": "Done."}
        super().__init__(self._pick)

    @property
    def calls(self) -> list[LLMRequest]:
        """Every request received."""
        return self.requests

    def _pick(self, request: LLMRequest) -> Answer:
        spec = self.by_agent.get((request.agent or "", turn_of(request)), self.default)
        return Answer(spec.get("content"), list(spec.get("tool_calls", [])), int(spec.get("tokens", 100)))


TRAVEL_SCRIPT: dict[tuple[str, int], Reply] = {
    ("planner", 1): {
        "content": "Flights first.",
        "tool_calls": [("transfer_to_flights", {"note": "PAR-LIS"})],
    },
    ("flights", 1): {
        "tool_calls": [("book_flight", {"origin": "Paris", "destination": "Lisbon", "date": "2026-12-10"})]
    },
    ("flights", 2): {"tool_calls": [("transfer_to_hotels", {"note": "3 nights"})]},
    ("hotels", 1): {
        "tool_calls": [("book_hotel", {"city": "Lisbon", "check_in": "2026-12-10", "nights": 3})]
    },
    ("hotels", 2): {"tool_calls": [("transfer_to_planner", {"note": "booked"})]},
    ("planner", 2): {
        "content": "Charging the card.",
        "tool_calls": [("charge_card", {"amount_usd": 1123.5, "description": "trip"})],
    },
    ("planner", 3): {"content": "Your trip is booked."},
}


def travel_team(**changes: Any) -> TeamSpec:
    """The shipped `travel` team, with top-level fields replaced."""
    team = shipped_travel_team()
    return team.model_copy(update=changes)


def travel_with_review(**review: Any) -> TeamSpec:
    """The travel team with its review policy changed."""
    team = shipped_travel_team()
    return team.model_copy(update={"review": team.review.model_copy(update=review)})


@asynccontextmanager
async def saga_worker(
    client: Client,
    task_queue: str,
    llm: ScriptedLLM,
    ledger_path: Path,
    extra: Sequence[Callable[..., Any]] = (),
    replace: dict[str, Callable[..., Any]] | None = None,
):
    """A worker with the saga workflow, the scripted LLM, the real travel tools and `extra` doubles.

    `replace` swaps registered activities by name (for failing doubles).
    """
    # The worker is configured the way a user's is: the plugin, with the travel example as an app;
    # the doubles are registered first, so they win over the activities of the same name.
    settings = Settings(home=ledger_path.parent / "keel-home", ledger_path=ledger_path)
    plugin = AgentkeelPlugin(settings=settings, apps=[travel_app])
    doubles = [llm.activity(), *extra, *(replace or {}).values()]
    ledger = Ledger(ledger_path)
    async with Worker(client, task_queue=task_queue, activities=doubles, plugins=[plugin]):
        try:
            yield ledger
        finally:
            ledger.close()


async def start_saga(
    client: Client, task_queue: str, team: TeamSpec | None = None, goal: str = "Trip to Lisbon", **kw: Any
) -> WorkflowHandle:
    """Start `AgentSagaWorkflow` with `team` (default: the registered travel team by name)."""
    request = SagaRequest(goal=goal, team=team, team_name=None if team else "travel", **kw)
    return await client.start_workflow(
        AGENT_SAGA_WORKFLOW,
        request,
        id=f"keel-test-{uuid.uuid4().hex[:10]}",
        task_queue=task_queue,
        result_type=SagaResult,
    )


def failing_compensation(name: str, attempts: list[int]) -> Callable[..., Any]:
    """A compensation double that fails on every attempt (retryably); appends each attempt number."""

    @activity.defn(name=name)
    async def fail(req: Any) -> Any:
        attempts.append(activity.info().attempt)
        raise ApplicationError(f"{name} is broken", type="Broken")

    return fail
