"""The `resolve_team` activity: turns a registered team's name into its spec, recorded in history."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from agentkeel import errors
from agentkeel.app import App
from agentkeel.contracts import ResolveTeamRequest, TeamSpec
from agentkeel.names import RESOLVE_TEAM_ACTIVITY
from agentkeel.teams import TeamFileError, load_registry


class TeamActivities:
    """Reads the team registry (built-in teams plus `teams_dir`) for the worker."""

    def __init__(self, teams_dir: Path | None, apps: Sequence[App] = ()) -> None:
        """Serve the teams shipped with the platform, the apps' teams and those in `teams_dir`."""
        self.teams_dir = teams_dir
        self.apps = list(apps)

    @activity.defn(name=RESOLVE_TEAM_ACTIVITY)
    async def resolve_team(self, request: ResolveTeamRequest) -> TeamSpec:
        """The spec of the team registered as `request.name`.

        Raises:
            ApplicationError: `UnknownTeam` (non-retryable) when no such team is registered.
        """
        try:
            teams = load_registry(self.teams_dir, self.apps)
        except TeamFileError as exc:
            raise ApplicationError(str(exc), type=errors.UNKNOWN_TEAM, non_retryable=True) from None
        if request.name not in teams:
            known = ", ".join(sorted(teams)) or "none"
            raise ApplicationError(
                f"no team named {request.name!r} is registered (known: {known})",
                type=errors.UNKNOWN_TEAM,
                non_retryable=True,
            )
        return teams[request.name]
