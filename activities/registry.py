"""Builds every activity the platform's worker registers, with the clients they own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agentkeel.activities.ledger import Ledger
from agentkeel.activities.llm import LLMActivities
from agentkeel.activities.llm_config import LLMConfig
from agentkeel.activities.teams import TeamActivities
from agentkeel.activities.travel import TravelTools

from agentkeel.settings import Settings


@dataclass
class ActivitySet:
    """The activity callables for one worker, and how to release what they hold."""

    activities: list[Callable[..., Any]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        """Close the clients the activities own (HTTP pools, databases)."""
        for close in reversed(self.closers):
            await close()


def build_activities(settings: Settings) -> ActivitySet:
    """Build every activity of the platform for one worker process.

    The clients (HTTP pools per LLM provider, circuit breakers, the ledger) are
    built once here and shared by every activity execution in the process.
    """
    llm = LLMActivities(LLMConfig.load(settings))
    ledger = Ledger(settings.ledger)
    travel = TravelTools(ledger)
    teams = TeamActivities(settings.teams_dir)
    acts = ActivitySet(activities=[llm.call_llm, teams.resolve_team, *travel.activities()])

    async def close_ledger() -> None:
        ledger.close()

    acts.closers += [llm.aclose, close_ledger]
    return acts
