"""Bad input, everywhere it can enter: each gets one clear error where it enters, no run is left
retrying, and nothing already done is lost.

Where it enters, and what is expected:

| input                                        | expected                                                    |
| -------------------------------------------- | ----------------------------------------------------------- |
| malformed / inconsistent team file           | `TeamFileError`, one line naming the file and the problem   |
| `keel start --team-file BAD` / unknown team  | exit 2, one line on stderr, nothing started                 |
| unknown tool / agent named by the model      | the error goes back to the model, the run continues         |
| tool in the team but on no worker            | the run fails after bounded retries and compensates         |
| invalid tool arguments from the model        | back to the model, the run continues, one booking           |
| malformed JSON for a structured output       | back to the model, bounded by `max_tool_errors`             |
| LLM answer over Temporal's payload limit     | non-retryable `LLMResponseTooLarge`, then compensation      |
| signal / update payload that does not fit    | refused (recorded or rejected to the caller), run goes on   |
| update or signal to a finished run           | a clear error to the caller, the result is kept             |
| `keel` with an unknown workflow id           | exit 2, one line on stderr                                  |
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.worker import Worker

from agentkeel.activities.teams import TeamActivities
from agentkeel.contracts import ReviewInput, SagaResult, SagaStatusView, TeamSpec, TranscriptEntry
from agentkeel.examples.travel import team as travel_team
from agentkeel.examples.travel.ledger import Ledger
from agentkeel.examples.travel.tools import TravelTools
from agentkeel.names import IDEMPOTENCY_HEADER
from agentkeel.outcomes import saga_result
from agentkeel.plugin import AgentkeelPlugin
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.starters import cli
from agentkeel.teams import TeamFileError, load_team_file
from agentkeel.workers.worker import running_worker
from tests.fixtures.llm import start_offline_llm, stop_offline_llm
from tests.saga_doubles import TRAVEL_SCRIPT, ScriptedLLM, saga_worker, start_saga

GOAL = "Trip to Lisbon, Dec 10, 3 nights"
TRAVEL = travel_team()


def unattended(team: TeamSpec = TRAVEL, **changes: Any) -> TeamSpec:
    """`team` with no tool waiting for a person, and `changes` applied."""
    tools = [t.model_copy(update={"requires_review": False}) for t in team.tools]
    return team.model_copy(update={"tools": tools, **changes})


def with_agent(team: TeamSpec, name: str, **changes: Any) -> TeamSpec:
    """`team` with agent `name` changed."""
    agents = [a.model_copy(update=changes) if a.name == name else a for a in team.agents]
    return team.model_copy(update={"agents": agents})


def actions(ledger: Ledger | Path, workflow_id: str) -> list[str]:
    """The ledger's actions for one run, in order (`ledger` may be a path: opened and closed here)."""
    if isinstance(ledger, Path):
        opened = Ledger(ledger)
        try:
            return [e.action for e in opened.entries(workflow_id)]
        finally:
            opened.close()
    return [e.action for e in ledger.entries(workflow_id)]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {err!r}"
    return lines[0]


async def status_of(handle: WorkflowHandle) -> SagaStatusView:
    return await handle.query("status", result_type=SagaStatusView)


async def wait_for_review(handle: WorkflowHandle, within: float = 20) -> SagaStatusView:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        view = await status_of(handle)
        if view.pending_review is not None:
            return view
        assert not view.status.is_final, f"run ended {view.status}: {view.last_error}"
        await asyncio.sleep(0.05)
    raise AssertionError("no review requested in time")


@pytest.fixture
def client(time_env: Any) -> Client:
    return time_env.client


@pytest.fixture
def no_server_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Nothing listens at TEMPORAL_ADDRESS: errors must be found before connecting."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    for name in ("KEEL_CONFIG", "TEMPORAL_PROFILE", "TEMPORAL_API_KEY", "KEEL_TEAMS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "home"))
    return tmp_path


# --------------------------------------------------------------------------- team files

_GOOD_TEAM = """\
name: t
entry: a
agents:
  - {name: a, instructions: hi, tools: [echo], handoffs: [b]}
  - {name: b, instructions: hi}
tools:
  - name: echo
    parameters: {type: object, properties: {text: {type: string}}}
"""


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("broken.yaml", "name: [unclosed\n", "not valid YAML"),
        ("broken.json", '{"name": "t", "agents": [', "not valid JSON"),
        ("list.yaml", "- name: t\n", "a team file must hold a mapping, got list"),
        ("empty.yaml", "", "a team file must hold a mapping, got NoneType"),
        ("no-agents.yaml", "name: t\nentry: a\n", "agents: Field required"),
        ("entry.yaml", _GOOD_TEAM.replace("entry: a", "entry: ghost"), "entry agent 'ghost' is not one of"),
        ("tool.yaml", _GOOD_TEAM.replace("tools: [echo]", "tools: [launch]"), "uses unknown tool 'launch'"),
        ("agent.yaml", _GOOD_TEAM.replace("handoffs: [b]", "handoffs: [ghost]"), "unknown agent 'ghost'"),
        ("self.yaml", _GOOD_TEAM.replace("handoffs: [b]", "handoffs: [a]"), "cannot hand off to itself"),
        ("dupe.yaml", _GOOD_TEAM.replace("name: b,", "name: a,"), "duplicate agent name(s): a"),
        ("field.yaml", _GOOD_TEAM + "max_turns: 0\n", "max_turns: Input should be greater than 0"),
        ("typo.yaml", _GOOD_TEAM + "max_turn: 3\n", "max_turn: Extra inputs are not permitted"),
        (
            "params.yaml",
            _GOOD_TEAM.replace("{type: object, properties", "{type: array, items"),
            "type 'object'",
        ),
        ("name.yaml", _GOOD_TEAM.replace("name: t", "name: 't t'"), "must start with a letter"),
    ],
)
def test_malformed_or_inconsistent_team_file_is_one_clear_error(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TeamFileError) as info:
        load_team_file(path)
    message = one_line(str(info.value))
    assert message.startswith(str(path)), message
    assert expected in message


@pytest.mark.unit
def test_missing_team_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TeamFileError, match="cannot read team file"):
        load_team_file(tmp_path / "nope.yaml")


@pytest.mark.unit
def test_every_problem_of_an_inconsistent_team_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "team.yaml"
    path.write_text(
        _GOOD_TEAM.replace("entry: a", "entry: ghost")
        .replace("tools: [echo]", "tools: [launch]")
        .replace("handoffs: [b]", "handoffs: [nobody]")
    )
    with pytest.raises(TeamFileError) as info:
        load_team_file(path)
    message = one_line(str(info.value))
    for part in ("'ghost'", "'launch'", "'nobody'"):
        assert part in message


@pytest.mark.unit
@pytest.mark.parametrize(
    "change",
    [
        (
            "{type: object, properties: {text: {type: string}}}",
            "{type: object, properties: {text: {type: strnig}}}",
        ),
        ("{name: b, instructions: hi}", "{name: b, instructions: hi, output_schema: {type: objct}}"),
    ],
    ids=["tool-parameters", "output-schema"],
)
def test_team_file_with_an_invalid_json_schema_is_refused(tmp_path: Path, change: tuple[str, str]) -> None:
    path = tmp_path / "team.yaml"
    path.write_text(_GOOD_TEAM.replace(*change))
    with pytest.raises(TeamFileError, match="schema"):
        load_team_file(path)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("argv_tail", "write", "expected"),
    [
        (
            ["--team-file", "team.yaml", GOAL],
            _GOOD_TEAM.replace("tools: [echo]", "tools: [launch]"),
            "uses unknown tool 'launch'",
        ),
        (["--team-file", "team.yaml", GOAL], "agents: {oops", "not valid YAML"),
        (["--team-file", "missing.yaml", GOAL], None, "cannot read team file"),
        (["no-such-team", GOAL], None, "no-such-team"),
    ],
    ids=["inconsistent", "malformed", "missing", "unknown-team"],
)
def test_keel_start_with_a_bad_team_is_one_line_and_starts_nothing(
    no_server_env: Path,
    capsys: pytest.CaptureFixture[str],
    argv_tail: list[str],
    write: str | None,
    expected: str,
) -> None:
    if write is not None:
        (no_server_env / "team.yaml").write_text(write)
    capsys.readouterr()
    code = cli.run(["start", *argv_tail])
    out, err = capsys.readouterr()
    assert code == 2  # an input error, found before any connection (nothing listens)
    line = one_line(err)
    assert line.startswith("keel: ") and expected in line
    assert out == ""


# --------------------------------------------------------------------------- what the model sends


@pytest.mark.unit
async def test_unknown_tool_and_agent_from_the_model_go_back_to_it(client, task_queue, tmp_path):
    script = dict(TRAVEL_SCRIPT)
    script[("flights", 1)] = {"tool_calls": [("launch_rocket", {"to": "moon"})]}
    script[("flights", 2)] = {"tool_calls": [("transfer_to_ghost", {"note": "?"})]}
    script[("flights", 3)] = TRAVEL_SCRIPT[("flights", 1)]
    script[("flights", 4)] = TRAVEL_SCRIPT[("flights", 2)]
    llm = ScriptedLLM(script)
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue, team=unattended())
        result = await saga_result(handle)
    assert result.status == SagaStatus.COMPLETED, result.reason
    errors = [s.detail for s in result.steps if s.kind == "tool_error"]
    assert len(errors) == 2
    assert "unknown tool 'launch_rocket'" in errors[0]
    assert "hand off to 'ghost'" in errors[1]
    told = [m.content or "" for m in llm.calls[2].messages if m.role == "tool"]
    assert any("has no tool 'launch_rocket'" in c for c in told)
    assert actions(tmp_path / "ledger.db", handle.id) == ["book_flight", "book_hotel", "charge_card"]


@pytest.mark.unit
async def test_unknown_team_name_fails_the_run_at_once(client, task_queue, tmp_path):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await client.start_workflow(
            "AgentSagaWorkflow",
            {"goal": GOAL, "team_name": "no-such-team"},
            id=f"keel-test-{uuid.uuid4().hex[:10]}",
            task_queue=task_queue,
            result_type=SagaResult,
        )
        result = await asyncio.wait_for(saga_result(handle), 30)
    assert result.status == SagaStatus.FAILED
    assert "no team named 'no-such-team'" in (result.reason or "")
    assert not llm.calls


@pytest.mark.unit
async def test_tool_no_worker_registers_fails_bounded_and_compensates(client, task_queue, tmp_path):
    # The team declares `charge_card`, but this worker registers no such activity.
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    ledger = Ledger(tmp_path / "ledger.db")
    tools = [
        t for t in TravelTools(ledger).activities() if t.__temporal_activity_definition.name != "charge_card"
    ]
    acts = [llm.activity(), TeamActivities(None).resolve_team, *tools]
    # The plugin without the platform's activities: the doubles and the partial travel tools run.
    plugin = AgentkeelPlugin(settings=Settings(home=tmp_path / "home"), apps=[], platform_activities=False)
    async with Worker(client, task_queue=task_queue, activities=acts, plugins=[plugin]):
        handle = await start_saga(client, task_queue, team=unattended())
        result = await asyncio.wait_for(saga_result(handle), 60)
    ledger.close()
    assert result.status == SagaStatus.COMPENSATED
    # Reported by name at the first attempt, not after the tool retry policy's six.
    assert f"tool charge_card is not registered on any worker of task queue {task_queue}" in (
        result.reason or ""
    )
    assert actions(tmp_path / "ledger.db", handle.id) == [
        "book_flight",
        "book_hotel",
        "cancel_hotel",
        "cancel_flight",
    ]


@pytest.mark.unit
async def test_invalid_tool_arguments_from_the_model_go_back_and_the_run_continues(
    client, task_queue, tmp_path
):
    script = dict(TRAVEL_SCRIPT)
    good = TRAVEL_SCRIPT[("flights", 1)]
    script[("flights", 1)] = {"tool_calls": [("book_flight", '{"origin": "Paris", ')]}  # not JSON
    script[("flights", 2)] = {"tool_calls": [("book_flight", {"origin": "Paris", "date": "soon"})]}
    script[("flights", 3)] = {  # fits the schema, refused by the tool itself
        "tool_calls": [("book_flight", {"origin": "Paris", "destination": "Paris", "date": "2026-12-10"})]
    }
    script[("flights", 4)] = good
    script[("flights", 5)] = TRAVEL_SCRIPT[("flights", 2)]
    llm = ScriptedLLM(script)
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue, team=unattended())
        result = await saga_result(handle)
        transcript = await handle.query("transcript", result_type=list[TranscriptEntry])
    assert result.status == SagaStatus.COMPLETED, result.reason
    errors = [s.detail for s in result.steps if s.kind == "tool_error"]
    assert len(errors) == 3
    assert "not valid JSON" in errors[0]
    assert "'destination' is a required property" in errors[1]
    assert "origin and destination must differ" in errors[2]
    told = [m.content or "" for m in llm.calls[4].messages if m.role == "tool"]
    assert sum("error:" in c for c in told) == 3  # each error went back to the model
    assert actions(tmp_path / "ledger.db", handle.id) == ["book_flight", "book_hotel", "charge_card"]
    recorded = [e.content or "" for e in transcript if e.kind == "tool_error"]
    assert len(recorded) == 3 and "origin and destination must differ" in recorded[2]


_SUMMARY_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "total_usd": {"type": "number"}},
    "required": ["summary", "total_usd"],
    "additionalProperties": False,
}


@pytest.mark.unit
async def test_malformed_structured_answer_goes_back_to_the_model(client, task_queue, tmp_path):
    script = dict(TRAVEL_SCRIPT)
    script[("planner", 3)] = {"content": "Your trip is booked."}  # not JSON
    script[("planner", 4)] = {"content": '{"summary": "booked"}'}  # JSON, misses total_usd
    script[("planner", 5)] = {"content": '{"summary": "booked", "total_usd": 1123.5}'}
    llm = ScriptedLLM(script)
    team = with_agent(unattended(), "planner", output_schema=_SUMMARY_SCHEMA)
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue, team=team)
        result = await saga_result(handle)
    assert result.status == SagaStatus.COMPLETED, result.reason
    assert json.loads(result.output or "") == {"summary": "booked", "total_usd": 1123.5}
    errors = [s.detail for s in result.steps if s.kind == "tool_error"]
    assert len(errors) == 2 and "not valid JSON" in errors[0] and "total_usd" in errors[1]
    told = [m.content or "" for m in llm.calls[-1].messages if m.role == "user"]
    assert sum("does not fit the required JSON schema" in c for c in told) == 2
    assert actions(tmp_path / "ledger.db", handle.id) == ["book_flight", "book_hotel", "charge_card"]


@pytest.mark.unit
async def test_structured_answer_that_never_fits_is_bounded_and_compensates(client, task_queue, tmp_path):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))  # the planner's final answer is prose, every time
    team = with_agent(unattended(max_tool_errors=2), "planner", output_schema=_SUMMARY_SCHEMA)
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue, team=team)
        result = await saga_result(handle)
    assert result.status == SagaStatus.COMPENSATED
    assert "too many invalid tool calls (3)" in (result.reason or "")
    finals = [c for c in llm.calls if c.agent == "planner"][2:]
    assert len(finals) == 3  # max_tool_errors + 1 tries, then stop
    assert actions(tmp_path / "ledger.db", handle.id) == [
        "book_flight",
        "book_hotel",
        "charge_card",
        "refund_card",
        "cancel_hotel",
        "cancel_flight",
    ]


# --------------------------------------------------------------------------- an answer too big for Temporal


@pytest.mark.integration
async def test_llm_answer_over_the_payload_limit_fails_once_and_compensates(
    dev_server, worker_settings, task_queue, tmp_path, monkeypatch
):
    # 2.4 MB of random text: too big for a 2 MB Temporal payload even after compression.
    huge = base64.b64encode(os.urandom(1_800_000)).decode()
    scenario = tmp_path / "huge.yaml"
    scenario.write_text(
        json.dumps({"name": "huge", "rules": [{"agent": "flights", "turn": 2, "respond": {"content": huge}}]})
    )
    monkeypatch.chdir(tmp_path)  # no keel.toml: the built-in `default` alias is the offline provider
    monkeypatch.delenv("KEEL_CONFIG", raising=False)
    provider = await asyncio.to_thread(start_offline_llm, "--scenario", str(scenario))
    try:
        settings = worker_settings.model_copy(
            update={"llm_port": provider.port, "llm_host": provider.host, "task_queue": task_queue}
        )
        client = dev_server.client
        async with running_worker(client, settings, task_queue):
            handle = await start_saga(client, task_queue, team=unattended())
            result = await asyncio.wait_for(saga_result(handle), 60)
        journal = provider.control.journal(path="/v1/chat/completions")
    finally:
        await asyncio.to_thread(stop_offline_llm, provider)
    assert result.status == SagaStatus.COMPENSATED
    assert "LLMResponseTooLarge" in (result.reason or "")
    assert actions(settings.ledger, handle.id) == ["book_flight", "cancel_flight"]
    keys = [e["headers"].get(IDEMPOTENCY_HEADER.lower()) for e in journal]
    too_big_key = keys[-1]
    assert keys.count(too_big_key) == 1  # asked once: non-retryable, never an endless retry


# --------------------------------------------------------------------------- signals and updates


@pytest.mark.unit
async def test_signal_and_update_payloads_that_do_not_fit_are_refused(client, task_queue, tmp_path):
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue)
        await wait_for_review(handle)
        # A signal is fire-and-forget: the refusal is recorded where `status` shows it.
        await handle.signal("approve", {"reviewer": "ana", "aproved": True})
        await handle.signal("reject", ["not", "an", "object"])
        # An update is refused back to the caller, before it reaches the history.
        for bad in ({"decision": "maybe"}, {"decision": "approve", "arguments": {"x": 1}}, "approve"):
            with pytest.raises(WorkflowUpdateFailedError):
                await handle.execute_update("review", bad)
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update(
                "review", ReviewInput(reviewer="ana", decision="edit", arguments={"amount_usd": "lots"})
            )
        assert "do not fit the schema of charge_card" in str(info.value.cause)
        view = await status_of(handle)
        assert view.status == SagaStatus.AWAITING_REVIEW  # nothing was decided by bad input
        assert [s.name for s in view.rejected_signals] == ["approve", "reject"]
        assert "aproved" in view.rejected_signals[0].error
        await handle.execute_update("review", ReviewInput(decision="approve", reviewer="ana"))
        result = await saga_result(handle)
    assert result.status == SagaStatus.COMPLETED
    assert actions(tmp_path / "ledger.db", handle.id) == ["book_flight", "book_hotel", "charge_card"]


async def _eventually_status(handle: WorkflowHandle, within: float = 30) -> SagaStatusView:
    # Right after a refused update the query may meet the failed workflow task for a moment.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await status_of(handle)
        except RPCError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


def _incompressible(chars: int) -> str:
    """Random base64: the payload codec cannot squeeze it under Temporal's 2 MB limit."""
    return base64.b64encode(os.urandom(chars * 3 // 4)).decode()


@pytest.mark.integration
async def test_oversized_signal_and_update_are_refused_and_the_run_goes_on(dev_server, task_queue, tmp_path):
    client = dev_server.client
    big = _incompressible(3_200_000)
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue)
        await wait_for_review(handle)
        with pytest.raises(RPCError, match="Blob data size exceeds limit"):
            await handle.signal("approve", {"reviewer": "ana", "comment": big})
        with pytest.raises(RPCError):
            await handle.execute_update(
                "review", ReviewInput(reviewer="ana", decision="approve", comment=big)
            )
        view = await _eventually_status(handle)
        assert view.status == SagaStatus.AWAITING_REVIEW  # neither decided anything
        await handle.execute_update("review", ReviewInput(decision="approve", reviewer="ana"))
        result = await asyncio.wait_for(saga_result(handle), 30)
    assert result.status == SagaStatus.COMPLETED
    assert actions(tmp_path / "ledger.db", handle.id) == ["book_flight", "book_hotel", "charge_card"]


@pytest.mark.integration
async def test_oversized_review_through_the_starter_api_says_why(dev_server, task_queue, tmp_path):
    from agentkeel.starters.client import InvalidInput, Keel

    client = dev_server.client
    async with saga_worker(client, task_queue, ScriptedLLM(dict(TRAVEL_SCRIPT)), tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue)
        await wait_for_review(handle)
        run = await Keel(client).get(handle.id)
        with pytest.raises(InvalidInput, match=r"(?i)too large|bytes|limit"):
            await run.approve(reviewer="ana", comment=_incompressible(3_200_000))
        # Refused before it was sent: the run still waits, and a decision that fits ends it.
        assert (await run.status()).status == SagaStatus.AWAITING_REVIEW
        await run.reject(reviewer="ana", reason="test done")
        assert (await run.result(wait=30)).status == SagaStatus.COMPENSATED


@pytest.mark.integration
async def test_update_and_signal_to_a_finished_run_are_clear_errors(dev_server, task_queue, tmp_path):
    client = dev_server.client
    llm = ScriptedLLM(dict(TRAVEL_SCRIPT))
    async with saga_worker(client, task_queue, llm, tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue, team=unattended())
        result = await saga_result(handle)
        assert result.status == SagaStatus.COMPLETED
        with pytest.raises(RPCError, match="(?i)workflow execution already completed"):
            await handle.execute_update("review", ReviewInput(reviewer="ana", decision="approve"))
        with pytest.raises(RPCError, match="(?i)workflow execution already completed"):
            await handle.signal("approve", {"reviewer": "ana"})
        # Nothing is lost: the result and the queries still answer.
        assert (await saga_result(handle)).status == SagaStatus.COMPLETED
        assert (await status_of(handle)).status == SagaStatus.COMPLETED
    assert actions(tmp_path / "ledger.db", handle.id) == ["book_flight", "book_hotel", "charge_card"]


# --------------------------------------------------------------------------- the CLI


@pytest.mark.integration
async def test_keel_with_an_unknown_or_finished_run_is_one_line(
    dev_server, task_queue, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    for name in ("KEEL_CONFIG", "TEMPORAL_PROFILE", "TEMPORAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.address)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", dev_server.namespace)

    async def keel(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(cli.run, list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    for argv in (["status", "keel-nope"], ["transcript", "keel-nope"], ["approve", "keel-nope"]):
        code, out, err = await keel(*argv)
        assert code == 3, argv  # ExitCode.NOT_FOUND
        assert "no run with workflow id 'keel-nope'" in one_line(err)
        assert out == ""
    client = dev_server.client
    async with saga_worker(client, task_queue, ScriptedLLM(dict(TRAVEL_SCRIPT)), tmp_path / "ledger.db"):
        handle = await start_saga(client, task_queue, team=unattended())
        await saga_result(handle)
    code, out, err = await keel("approve", handle.id)
    assert code != 0
    assert one_line(err).startswith("keel: ")
    assert out == ""
