"""The files `keel init DIR` writes: a project a user can start from, with passing tests.

The app is a party-planning team: a planner books a venue and orders a cake (both with
compensations), and charging the deposit needs a person's approval when it is over $100.
Its side effects go to a small SQLite file keyed by idempotency key, so each tool is safe
to run twice and each compensation finds what to undo even when a result was lost.
"""

from __future__ import annotations

import re
from pathlib import Path

APP_PY = '''"""<<name>>: your agents, their tools and how each tool is undone.

Run it: `keel dev --app <<package>>.app`, then `keel start party "Birthday for 12 on 2027-03-01"`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentkeel import Agent, App, Team, tool, tool_context

STORE = Path(".keel") / "<<package>>.db"
"""Where this example's side effects land (a stand-in for your real systems)."""


def _db() -> sqlite3.Connection:
    STORE.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(STORE)
    db.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, action TEXT, detail TEXT)")
    return db


def record(action: str, detail: str, key: str | None = None) -> bool:
    """Do the side effect once per key (default the step's idempotency key); False on a repeat."""
    with _db() as db:
        row = (key or tool_context().idempotency_key, action, detail)
        cursor = db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?, ?)", row)
        return cursor.rowcount == 1


def effects() -> list[tuple[str, str, str]]:
    """Every side effect done so far: (key, action, detail)."""
    with _db() as db:
        return db.execute("SELECT key, action, detail FROM effects ORDER BY rowid").fetchall()


@tool
def book_venue(city: str, date: str, guests: int) -> dict:
    """Book a venue for the party."""
    record("book_venue", f"{city} {date} for {guests}")
    return {"venue": f"Hall {city}", "price_usd": 40.0 * guests}


@book_venue.compensate
def cancel_venue(city: str, date: str, guests: int, *, idempotency_key: str, result: dict | None) -> str:
    # Runs even when book_venue's result was lost: the booking is found by its key.
    record("cancel_venue", idempotency_key, key=f"{idempotency_key}:undo")
    return "cancelled"


@tool
def order_cake(flavour: str, servings: int) -> dict:
    """Order a cake."""
    record("order_cake", f"{flavour} x{servings}")
    return {"order": f"CAKE-{servings}", "price_usd": 3.5 * servings}


@order_cake.compensate
def cancel_cake(flavour: str, servings: int, *, idempotency_key: str) -> str:
    record("cancel_cake", idempotency_key, key=f"{idempotency_key}:undo")
    return "cancelled"


@tool(requires_review="amount_usd > 100")
def charge_deposit(amount_usd: float, description: str) -> dict:
    """Charge the customer's deposit (a person approves amounts over $100)."""
    record("charge_deposit", f"{amount_usd:.2f} {description}")
    return {"charged_usd": amount_usd}


caterer = Agent(
    name="caterer", instructions="Order the cake, then hand back to the planner.", tools=[order_cake]
)
planner = Agent(
    name="planner",
    instructions="Book the venue, have the caterer order a cake, then charge the deposit.",
    tools=[book_venue, charge_deposit],
    handoffs=[caterer],
)
caterer.handoffs = [planner]
party = Team(name="party", entry=planner, agents=[planner, caterer], review={"timeout_s": 3600})

app = App(name="<<package>>", teams=[party], scenarios=[Path(__file__).with_name("scenario.yaml")])
'''

SCENARIO = r"""# What the offline LLM answers for the `party` team (`keel dev --app <<package>>.app`).
name: party
extract:
  guests: {pattern: '(?i:for)\s+(\d+)', type: integer, default: 12}
  date: {pattern: '(\d{4}-\d{2}-\d{2})', default: "2027-03-01"}
rules:
  - agent: planner
    turn: 1
    respond:
      tool_calls:
        - name: book_venue
          arguments: {city: Lisbon, date: "{{goal.date}}", guests: "{{goal.guests}}"}
  - agent: planner
    turn: 2
    respond:
      tool_calls:
        - name: transfer_to_caterer
          arguments: {note: "a cake for {{goal.guests}}"}
  - agent: caterer
    turn: 1
    respond:
      tool_calls:
        - name: order_cake
          arguments: {flavour: chocolate, servings: "{{goal.guests}}"}
  - agent: caterer
    turn: 2
    respond:
      tool_calls:
        - name: transfer_to_planner
          arguments: {note: cake ordered}
  - agent: planner
    turn: 3
    respond:
      tool_calls:
        - name: charge_deposit
          arguments:
            amount_usd: "{{tool.book_venue.price_usd + tool.order_cake.price_usd}}"
            description: party deposit
  - agent: planner
    turn: 4
    respond: {content: "All set: venue booked, cake ordered, deposit charged."}
"""

TESTS = '''"""The party team's sagas, proven with agentkeel.testing (time-skipping server, scripted model)."""

from __future__ import annotations

import pytest
from temporalio.testing import ActivityEnvironment

from agentkeel import SagaStatus, ToolRequest
from agentkeel.testing import (
    ScriptedModel,
    answer,
    assert_compensated_in_reverse,
    assert_each_side_effect_once,
    call,
    handoff,
    keel_test_env,
)
from <<package>> import app as party_app


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(party_app, "STORE", tmp_path / "effects.db")


def model(deposit: float) -> ScriptedModel:
    return ScriptedModel(
        [
            call("book_venue", city="Lisbon", date="2027-03-01", guests=12),
            handoff("caterer", "cake for 12"),
            call("order_cake", flavour="chocolate", servings=12),
            handoff("planner", "done"),
            call("charge_deposit", amount_usd=deposit, description="deposit"),
            answer("All set."),
        ]
    )


async def test_a_large_deposit_is_approved_and_the_party_is_booked():
    async with keel_test_env(party_app.app, model(522.0)) as env:
        result = await env.run_team("party", "Birthday for 12", decisions=["approve"])
    assert result.status == SagaStatus.COMPLETED
    assert [r.tool for r in result.reviews] == ["charge_deposit"]
    actions = [action for _, action, _ in party_app.effects()]
    assert actions == ["book_venue", "order_cake", "charge_deposit"]
    assert_each_side_effect_once(key for key, _, _ in party_app.effects())


async def test_a_rejected_deposit_undoes_the_cake_then_the_venue():
    async with keel_test_env(party_app.app, model(522.0)) as env:
        result = await env.run_team("party", "Birthday for 12", decisions=["reject"])
    assert result.status == SagaStatus.COMPENSATED
    assert_compensated_in_reverse(result)
    actions = [action for _, action, _ in party_app.effects()]
    assert actions == ["book_venue", "order_cake", "cancel_cake", "cancel_venue"]


async def test_a_small_deposit_needs_no_review():
    async with keel_test_env(party_app.app, model(80.0)) as env:
        result = await env.run_team("party", "Birthday for 12")
    assert result.status == SagaStatus.COMPLETED and result.reviews == []


async def test_a_tool_run_twice_with_one_key_books_once():
    # What a retry after a worker crash does: the same step, the same idempotency key.
    book = next(a for a in party_app.book_venue.activities() if a.__name__ == "run_tool")
    request = ToolRequest(
        arguments={"city": "Lisbon", "date": "2027-03-01", "guests": 12},
        idempotency_key="party-1:run-1:2",
        correlation_id="c",
    )
    for _ in range(2):
        await ActivityEnvironment().run(book, request)
    assert [action for _, action, _ in party_app.effects()] == ["book_venue"]
'''

README = """# {name}

Agents built on [agentkeel](https://github.com/agentkeel/agentkeel): a `party` team whose planner
books a venue and charges a deposit, and whose caterer orders a cake. Every tool is undone by its
compensation if a reviewer says no or something fails; deposits over $100 wait for a person.

The two commands (each creates `.venv` and installs what it needs):

```bash
make test   # the team's tests: approve, reject with compensations in reverse, a crash-safe tool
make dev    # Temporal server + UI (http://localhost:8233), offline LLM, a worker with this app
```

With `make dev` running, from another terminal:

```bash
.venv/bin/keel start party "Birthday for 12 on 2027-03-01"
.venv/bin/keel pending
.venv/bin/keel approve <workflow id>      # or: keel reject <workflow id> --reason "too dear"
```

Where things are: `{package}/app.py` (tools, compensations, the team), `{package}/scenario.yaml`
(what the offline LLM answers), `tests/` (built on `agentkeel.testing`), `keel.toml` (names the app
for `keel dev`, `keel worker` and `keel start`).

agentkeel is not on a package registry yet: {install_note}
"""

MAKEFILE = """PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test dev

$(STAMP): pyproject.toml
\ttest -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
\t$(BIN)/python -m pip install --quiet --upgrade pip
\t$(BIN)/python -m pip install --quiet -e '.[dev]'
\ttouch $(STAMP)

test: $(STAMP)
\t$(BIN)/python -m pytest -q

dev: $(STAMP)
\t$(BIN)/keel dev  # keel.toml names the app: apps = ["{package}.app"]
"""

PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = [{dependency}]

[project.optional-dependencies]
dev = ["pytest>=8.3", "pytest-asyncio>=1.0"]

[tool.setuptools]
packages = ["{package}"]

[tool.setuptools.package-data]
{package} = ["*.yaml"]

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
"""


def package_name(folder: Path) -> str:
    """A Python package name from the folder's name (`my-party` -> `my_party`)."""
    name = re.sub(r"\W+", "_", folder.name.lower()).strip("_") or "agents"
    return f"app_{name}" if name[0].isdigit() else name


def agentkeel_source() -> Path | None:
    """The source checkout the running agentkeel was installed from, when it is one (editable)."""
    import agentkeel

    root = Path(agentkeel.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "agentkeel"' in pyproject.read_text():
        return root
    return None


def render(folder: Path) -> dict[Path, str]:
    """Every file of the scaffold, by path relative to `folder`."""
    package = package_name(folder)
    source = agentkeel_source()
    if source is not None:
        dependency = f'"agentkeel @ {source.as_uri()}"'
        install_note = f"`make` installs it from the checkout this project was made from ({source})."
    else:
        dependency = '"agentkeel"'
        install_note = (
            "install it into `.venv` from where you got it (a wheel or a checkout) before `make test`."
        )
    values = {"name": folder.name, "package": package, "dependency": dependency, "install_note": install_note}
    return {
        Path("pyproject.toml"): PYPROJECT.format(**values),
        Path("Makefile"): MAKEFILE.format(**values),
        Path("README.md"): README.format(**values),
        Path(".gitignore"): ".venv/\n.keel/\n__pycache__/\n*.egg-info/\n.pytest_cache/\n",
        # Read by every keel command run here: the worker registers the app, the starters know its teams.
        Path("keel.toml"): f'[keel]\napps = ["{package}.app"]\n',
        Path(package) / "__init__.py": f'"""{folder.name}: agents on agentkeel."""\n',
        Path(package) / "app.py": _fill(APP_PY, values),
        Path(package) / "scenario.yaml": _fill(SCENARIO, values),
        Path("tests") / "__init__.py": "",
        Path("tests") / "test_party.py": _fill(TESTS, values),
    }


def _fill(template: str, values: dict[str, str]) -> str:
    # Python and YAML templates hold braces of their own: fill `<<name>>` markers instead of format().
    for key, value in values.items():
        template = template.replace(f"<<{key}>>", value)
    return template
