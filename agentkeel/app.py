"""Apps: a user's tools, teams and scenarios, handed to the platform as one object.

An app is what `keel worker --app MODULE[:ATTR]`, `keel demo` and the tests load,
and what `AgentkeelPlugin(apps=[...])` registers on a worker::

    from agentkeel.app import App

    app = App(name="support", teams=["support.yaml"], activities=[issue_refund, cancel_refund])

`activities` is a list of activity callables, or a factory `settings -> ActivitySet`
for tools that own clients (a database, an HTTP pool) to open once per worker and
close after it stops.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentkeel.contracts import TeamSpec

if TYPE_CHECKING:
    from agentkeel.agents import Team
    from agentkeel.settings import Settings
    from agentkeel.tools import Tool


class AppError(ValueError):
    """An app cannot be imported or is not an `App` (message is one line)."""


@dataclass
class ActivitySet:
    """The activity callables for one worker, and how to release what they hold."""

    activities: list[Callable[..., Any]] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        """Close the clients the activities own (HTTP pools, databases), last opened first."""
        for close in reversed(self.closers):
            await close()


ActivityFactory = Callable[["Settings"], ActivitySet]


@dataclass
class App:
    """A user's tools and teams.

    Attributes:
        name: Shown in logs and `keel teams`.
        teams: `TeamSpec`s or paths of YAML/JSON team files, registered by name.
        activities: Tool and compensation activities, or a factory building them per worker.
        scenarios: Scenario files for the offline LLM provider (`keel dev`, `keel demo`).
    """

    name: str
    teams: Sequence[TeamSpec | Team | str | Path] = ()
    activities: Sequence[Callable[..., Any]] | ActivityFactory = ()
    scenarios: Sequence[str | Path] = ()
    tools: Sequence[Tool] = ()
    """`@tool` functions registered even when no team lists them (teams' tools are always registered)."""

    def team_specs(self) -> dict[str, TeamSpec]:
        """The app's teams by name (files are read and validated here).

        Raises:
            agentkeel.teams.TeamFileError: a team file is missing or invalid.
        """
        from agentkeel.agents import Team
        from agentkeel.teams import load_team_file

        specs: dict[str, TeamSpec] = {}
        for team in self.teams:
            if isinstance(team, Team):
                spec = team.spec
            else:
                spec = team if isinstance(team, TeamSpec) else load_team_file(team)
            specs[spec.name] = spec
        return specs

    def build_activities(self, settings: Settings) -> ActivitySet:
        """The app's activities for one worker: its own, and those of its `@tool`s and Python teams."""
        from agentkeel.agents import Team

        built = self.activities(settings) if callable(self.activities) else ActivitySet(list(self.activities))
        tools = {t.name: t for t in self.tools}
        for team in self.teams:
            if isinstance(team, Team):
                tools.update(team.tools)
        for t in tools.values():
            if not t.is_method:  # a method tool comes from the app's factory, bound to its object
                built.activities += t.activities()
        return built


def load_app(reference: str) -> App:
    """Import `MODULE[:ATTR]` and return its `App` (ATTR defaults to `app`).

    Raises:
        AppError: the module cannot be imported, or holds no `App` under that name.
    """
    module_name, _, attr = reference.partition(":")
    explicit = bool(attr)
    attr = attr or "app"
    # Like `uvicorn main:app`: a module of the current folder is found without installing it.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppError(f"cannot import app {reference!r}: {exc}") from None
    app = getattr(module, attr, None)
    if app is None and not explicit:
        app = discover(module)
    if not isinstance(app, App):
        found = type(app).__name__ if app is not None else "nothing"
        raise AppError(f"app {reference!r}: {module_name}.{attr} is {found}, not an agentkeel App")
    return app


def discover(module: Any) -> App | None:
    """An `App` of the `@tool`s and `Team`s a module defines at its top level, or None without any."""
    from agentkeel.agents import Team
    from agentkeel.tools import Tool

    values = list(vars(module).values())
    teams = [v for v in values if isinstance(v, Team)]
    tools = [v for v in values if isinstance(v, Tool) and not v.is_compensation]
    if not teams and not tools:
        return None
    return App(name=module.__name__, teams=teams, tools=tools)


def resolve_apps(apps: Sequence[App | str]) -> list[App]:
    """`App`s as given, references imported (see `load_app`)."""
    return [app if isinstance(app, App) else load_app(app) for app in apps]
