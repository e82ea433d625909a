"""The travel example: a planner, a flights agent and a hotels agent book a trip and charge a card.

An app like any user's: its tools are `@tool` methods writing to a SQLite ledger
(`Settings.ledger`), its team is built in Python (`team.py`), and `scenario.yaml` scripts the
offline LLM provider. `keel demo`
and the tests load it the way a user's own code is loaded::

    keel worker --app agentkeel.examples.travel
    AgentkeelPlugin(apps=["agentkeel.examples.travel"])
"""

from __future__ import annotations

from pathlib import Path

from agentkeel.app import ActivitySet, App
from agentkeel.contracts import TeamSpec
from agentkeel.examples.travel.ledger import Ledger
from agentkeel.examples.travel.team import travel
from agentkeel.examples.travel.tools import TravelTools
from agentkeel.settings import Settings

HERE = Path(__file__).resolve().parent
SCENARIO_FILE = HERE / "scenario.yaml"
APP_REFERENCE = "agentkeel.examples.travel"
"""What `keel worker --app` and `KEEL_APPS` name to load this example."""


def build_activities(settings: Settings) -> ActivitySet:
    """The travel tools on the ledger at `settings.ledger`, closed with the worker."""
    ledger = Ledger(settings.ledger)

    async def close_ledger() -> None:
        ledger.close()

    return ActivitySet(activities=TravelTools(ledger).activities(), closers=[close_ledger])


app = App(name="travel", teams=[travel], activities=build_activities, scenarios=[SCENARIO_FILE])


def team() -> TeamSpec:
    """The travel team's spec."""
    return travel.spec
