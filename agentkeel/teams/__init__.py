"""Team files and the registry of named teams.

A team file is YAML or JSON holding one `TeamSpec`. The registry is the teams
shipped with the platform (this folder) plus the files in `teams_dir` from the
settings. Starters read it to validate a name before starting a run; workers
read it in the `resolve_team` activity so the spec a run used is recorded in
its history.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from agentkeel.contracts import TeamSpec
from agentkeel.validation import format_validation_error

if TYPE_CHECKING:
    from agentkeel.app import App

BUILTIN_DIR = Path(__file__).parent
TEAM_SUFFIXES = (".yaml", ".yml", ".json")


class TeamFileError(ValueError):
    """A team file cannot be read or does not describe a valid team."""


def parse_team(data: Any, source: str = "team") -> TeamSpec:
    """Validate a decoded team document.

    Raises:
        TeamFileError: with every problem found, prefixed by `source`.
    """
    if not isinstance(data, dict):
        raise TeamFileError(f"{source}: a team file must hold a mapping, got {type(data).__name__}")
    try:
        return TeamSpec.model_validate(data)
    except ValidationError as exc:
        raise TeamFileError(f"{source}: {format_validation_error(exc)}") from None


def load_team_file(path: str | Path) -> TeamSpec:
    """Read and validate a YAML or JSON team file.

    Raises:
        TeamFileError: the file is missing, is not YAML/JSON, or is not a valid team.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TeamFileError(f"{path}: cannot read team file ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise TeamFileError(f"{path}: not valid JSON at {where}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        raise TeamFileError(f"{path}: not valid YAML{_yaml_where(exc)}") from None
    return parse_team(data, str(path))


def _yaml_where(exc: yaml.YAMLError) -> str:
    """` at line L, column C: problem` for a YAML error (1-based, as editors count)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if problem is None:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    if context and context != problem:
        problem = f"{problem} ({context})"
    return f"{where}: {problem}"


def _team_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in TEAM_SUFFIXES) if folder.is_dir() else []


def load_registry(teams_dir: Path | None = None, apps: Sequence[App | str] = ()) -> dict[str, TeamSpec]:
    """Every registered team by name: the built-in ones, the apps' teams, then those in `teams_dir`
    (later ones override earlier ones of the same name).

    Raises:
        TeamFileError: a team file is invalid, or an app cannot be loaded; a broken file is never
            skipped silently.
    """
    from agentkeel.app import AppError, resolve_apps

    teams: dict[str, TeamSpec] = {}
    for path in _team_files(BUILTIN_DIR):
        spec = load_team_file(path)
        teams[spec.name] = spec
    try:
        for app in resolve_apps(apps):
            teams.update(app.team_specs())
    except AppError as exc:
        raise TeamFileError(str(exc)) from None
    if teams_dir is not None:
        for path in _team_files(Path(teams_dir)):
            spec = load_team_file(path)
            teams[spec.name] = spec
    return teams
