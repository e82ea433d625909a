"""Apps: loading `MODULE[:ATTR]`, module-level discovery, and the one-line errors of `--app`."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from agentkeel.app import App, AppError, load_app
from agentkeel.settings import load_settings

pytestmark = pytest.mark.unit

MODULE = textwrap.dedent(
    '''
    from agentkeel import Agent, Team, tool

    @tool
    def ping(host: str) -> str:
        """Ping a host."""
        return "pong"

    ops = Agent(name="ops", instructions="Ping.", tools=[ping])
    team = Team(name="ops", entry=ops, agents=[ops])
    '''
)


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "opsapp.py").write_text(MODULE)
    (tmp_path / "notanapp.py").write_text("value = 3\n")
    monkeypatch.chdir(tmp_path)  # `--app opsapp` finds a module of the current folder
    yield tmp_path
    for name in ("opsapp", "notanapp"):
        sys.modules.pop(name, None)


def test_a_module_without_an_app_object_is_discovered(module_dir: Path) -> None:
    app = load_app("opsapp")
    assert isinstance(app, App) and app.name == "opsapp"
    assert list(app.team_specs()) == ["ops"]
    names = {a.__temporal_activity_definition.name for a in app.build_activities(load_settings()).activities}
    assert names == {"ping"}


def test_a_named_attribute_must_be_an_app(module_dir: Path) -> None:
    with pytest.raises(AppError, match="opsapp.team is Team, not an agentkeel App"):
        load_app("opsapp:team")
    with pytest.raises(AppError, match="notanapp.app is nothing"):
        load_app("notanapp")
    with pytest.raises(AppError, match="cannot import app 'nosuchmodule'"):
        load_app("nosuchmodule")


def test_keel_worker_refuses_an_unknown_app_in_one_line(
    module_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentkeel.starters import cli

    assert cli.run(["worker", "--app", "nosuchmodule"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot import app 'nosuchmodule'" in err[0]
