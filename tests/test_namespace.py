"""One import namespace: installing agentkeel adds `agentkeel` and nothing else at the top level."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import agentkeel

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


def test_a_user_project_with_its_own_workflows_and_activities_imports_beside_agentkeel(tmp_path: Path):
    # The layout of Temporal's samples: the names agentkeel's repository uses for its own folders.
    for package in ("workflows", "activities", "workers", "starters"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"OWNER = 'user {package}'\n")
    script = (
        "import workflows, activities, workers, starters\n"
        "import agentkeel.workflows.agent_saga, agentkeel.activities.llm, agentkeel.workers.worker\n"
        "import agentkeel.starters.client\n"
        "from agentkeel import Keel, Saga, TeamSpec, ToolRequest, ToolResult\n"
        "assert workflows.OWNER == 'user workflows' and activities.OWNER == 'user activities'\n"
        "assert workers.OWNER == 'user workers' and starters.OWNER == 'user starters'\n"
        "print(agentkeel.workflows.agent_saga.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "agentkeel.workflows.agent_saga"


def test_pip_install_adds_only_agentkeel_at_the_top_level(tmp_path: Path):
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    top = {p.name for p in target.iterdir() if p.name != "bin"}
    assert top == {"agentkeel", "agentkeel-0.1.0.dist-info"}, top
    installed = target / "agentkeel"
    for sub in ("workflows", "activities", "workers", "starters", "dev", "examples"):
        assert (installed / sub / "__init__.py").is_file(), sub
    assert (installed / "examples" / "travel" / "team.py").is_file()
    assert (installed / "examples" / "travel" / "scenario.yaml").is_file()


def test_the_public_api_is_explicit():
    assert "Keel" in agentkeel.__all__ and "Saga" in agentkeel.__all__
    for name in agentkeel.__all__:
        assert getattr(agentkeel, name) is not None
    with pytest.raises(AttributeError):
        agentkeel.nothing_here  # noqa: B018


def test_every_public_name_has_one_home():
    from agentkeel import _EXPORTS

    assert sorted(_EXPORTS) == sorted(agentkeel.__all__)
