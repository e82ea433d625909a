"""MCP tools: declarations, listing validation, annotation defaults, compensation arguments, `keel teams`,
and runs on the time-skipping server against the example tracker over stdio (strict policy, `isError`,
a Python tool undoing an MCP tool)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from mcp.types import CallToolResult, TextContent, Tool, ToolAnnotations
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType

from agentkeel import Agent, Team, tool
from agentkeel.app import App
from agentkeel.contracts import PendingCompensation, SagaCheckpoint, TeamSpec
from agentkeel.examples.tickets import tickets_server, tickets_team
from agentkeel.mcp import MCPAccess, MCPCompensation, MCPServer, MCPToolPolicy
from agentkeel.mcp.contracts import MCPCallArgs
from agentkeel.mcp.resolve import MCPTeamError, tool_output, undo_arguments, unguarded, with_listings
from agentkeel.plugin import AgentkeelPlugin
from agentkeel.search_attributes import SagaStatus
from agentkeel.starters.mcp_teams import resolve_mcp_teams
from agentkeel.starters.render import render_teams
from agentkeel.testing import KeelTestEnv, ScriptedModel, answer, call, keel_test_env
from tests.fixtures.llm import free_port
from tests.mcp_servers import tickets_in

pytestmark = pytest.mark.unit

SCHEMA = {"type": "object", "properties": {"number": {"type": "integer"}}, "required": ["number"]}


def _tool(name: str, **hints: Any) -> Tool:
    return Tool(name=name, input_schema=SCHEMA, annotations=ToolAnnotations(**hints) if hints else None)


LISTING = [
    _tool("create", destructive_hint=False),
    _tool("close", destructive_hint=True),
    _tool("look", read_only_hint=True),
    _tool("poke"),
]


def _team(
    policy: dict[str, MCPToolPolicy] | None = None, tools: list[str] | None = None, **team: Any
) -> TeamSpec:
    server = MCPServer(name="srv", url="http://127.0.0.1:1/mcp", tools=policy or {})
    agent = Agent(name="a", instructions="x", mcp=[MCPAccess(server="srv", tools=tools)])
    return Team(name="t", entry=agent, agents=[agent], mcp_servers=[server], **team).spec


# --------------------------------------------------------------------------- declarations


def test_server_declarations_hold_env_names_never_values():
    with pytest.raises(ValidationError, match="name an environment variable"):
        MCPServer(name="s", url="http://x/mcp", headers={"Authorization": "Bearer abc"})
    with pytest.raises(ValidationError, match="exactly one of 'url' or 'command'"):
        MCPServer(name="s")
    with pytest.raises(ValidationError, match="names of environment variables"):
        MCPServer(name="s", command="srv", env=["A=b"])
    assert MCPServer(name="s", url="http://x/mcp", headers={"Authorization": "TOKEN"}).transport == "http"


def test_agents_may_only_use_declared_servers_and_references_are_checked():
    with pytest.raises(ValidationError, match="unknown MCP server 'nope'"):
        Team(name="t", entry="a", agents=[Agent(name="a", instructions="x", mcp=["nope"])])
    with pytest.raises(ValidationError, match=r"not \$args"):
        MCPCompensation(tool="close", arguments={"n": "$resul.number"})
    spec = TeamSpec.model_validate(
        {
            "name": "t",
            "entry": "a",
            "agents": [{"name": "a", "instructions": "x", "mcp": ["srv"]}],
            "mcp_servers": [{"name": "srv", "command": "srv"}],
        }
    )
    assert spec.agents[0].mcp == [MCPAccess(server="srv")]


def test_old_checkpoints_decode_and_mcp_compensations_are_checkpointed():
    old = {
        "step": 1,
        "name": "x",
        "activity": "y",
        "request": {"idempotency_key": "k", "correlation_id": "c", "tool": "x"},
    }
    assert PendingCompensation.model_validate(old).request.tool == "x"
    mcp = PendingCompensation(
        step=2, name="create", activity="a", request=MCPCallArgs(name="close", arguments={})
    )
    again = SagaCheckpoint.model_validate_json(SagaCheckpoint(compensations=[mcp]).model_dump_json())
    assert isinstance(again.compensations[0].request, MCPCallArgs)


# --------------------------------------------------------------------------- listing


def test_listing_becomes_tools_with_annotation_defaults():
    undo = MCPToolPolicy(compensation=MCPCompensation(tool="close", arguments={"number": "$result.number"}))
    team = with_listings(_team({"create": undo, "poke": MCPToolPolicy(review=False)}), {"srv": LISTING})
    by_name = {t.name: t for t in team.tools}
    assert team.agents[0].tools == ["create", "close", "look", "poke"]
    assert not by_name["create"].requires_review and by_name["create"].mcp.undo.server == "srv"
    assert by_name["close"].requires_review  # destructiveHint: reviewed unless the team says otherwise
    assert not by_name["look"].requires_review and by_name["look"].mcp.read_only
    assert not by_name["poke"].requires_review  # MCP's default is destructive, but the team said no
    assert [t.name for t in unguarded(team.tools)] == ["close", "poke"]
    assert team.mcp_servers[0].listed_tools == ["create", "close", "look", "poke"]


def test_listing_problems_fail_with_the_server_name():
    bad = [_tool("create"), Tool(name="broken", input_schema={"type": "object", "properties": 3})]
    with pytest.raises(MCPTeamError, match="'srv': tool 'broken' has an invalid input schema"):
        with_listings(_team(), {"srv": bad})
    with pytest.raises(MCPTeamError, match=r"wants unknown tool\(s\) \['nope'\]"):
        with_listings(_team(tools=["nope"]), {"srv": LISTING})
    with pytest.raises(MCPTeamError, match="has no tool 'gone'"):
        with_listings(_team({"gone": MCPToolPolicy(review=True)}), {"srv": LISTING})
    undo = MCPToolPolicy(compensation=MCPCompensation(tool="missing"))
    with pytest.raises(MCPTeamError, match="undone by 'missing'"):
        with_listings(_team({"create": undo}), {"srv": LISTING})
    with pytest.raises(MCPTeamError, match="'poke' is neither read-only nor compensated"):
        with_listings(_team(tools=["look", "poke"], mcp_policy="strict"), {"srv": LISTING})
    with pytest.raises(MCPTeamError, match="must start with a letter"):
        with_listings(_team(), {"srv": [_tool("dotted.name")]})


def test_compensation_arguments_come_from_the_call_and_its_result():
    undo = MCPCompensation(
        tool="x", arguments={"n": "$result.ticket.number", "who": "$args.who", "k": "$key", "r": 1}
    )
    built, problem = undo_arguments(undo, {"who": "ana"}, {"ticket": {"number": 7}}, "key-1")
    assert problem is None and built == {"n": 7, "who": "ana", "k": "key-1", "r": 1}
    _, problem = undo_arguments(undo, {"who": "ana"}, None, "key-1")
    assert "result of the call is unknown" in problem
    _, problem = undo_arguments(undo, {"who": "ana"}, {"ticket": {}}, "key-1")
    assert "$result.ticket.number" in problem


def test_tool_output_reads_structured_content_then_json_text():
    assert tool_output(CallToolResult(content=[], structured_content={"a": 1})) == {"a": 1}
    assert tool_output(CallToolResult(content=[TextContent(type="text", text='{"b": 2}')])) == {"b": 2}
    assert tool_output(CallToolResult(content=[TextContent(type="text", text="hi")])) == {"text": "hi"}


# --------------------------------------------------------------------------- keel teams


async def test_keel_teams_lists_mcp_tools_with_annotations_compensations_and_review(tmp_path):
    teams = {"tickets": tickets_team(tickets_server(store=tmp_path / "t.json")).spec}
    unguarded_team = tickets_team(tickets_server(store=tmp_path / "t.json")).spec
    unguarded_team.agents[0].mcp[0].tools = None  # close_ticket offered too, compensated by nothing
    teams["open"] = unguarded_team.model_copy(update={"name": "open"})
    down = tickets_server(url=f"http://127.0.0.1:{free_port()}/mcp")
    teams["down"] = tickets_team(down).spec.model_copy(update={"name": "down"})
    text = render_teams(*await resolve_mcp_teams(teams))
    assert "tool create_ticket [mcp tickets: additive, closed-world]: undone by tickets.close_ticket(" in text
    assert "tool assign_ticket [mcp tickets: destructive, idempotent, closed-world]" in text
    assert "always reviewed (destructive)" in text
    assert "tool list_tickets [mcp tickets: read-only]: read-only; no review" in text
    assert (
        "! close_ticket is neither read-only nor compensated: refused at start (mcp_policy: strict)" in text
    )
    down_block = next(b for b in text.split("\n\n") if b.startswith("down"))
    assert "mcp server tickets (http http://127.0.0.1:" in down_block and ": unreachable: " in down_block
    assert "triage (entry): MCP tickets:list_tickets,create_ticket,assign_ticket" in down_block


# --------------------------------------------------------------------------- runs (time-skipping server)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "tickets.json"


async def test_strict_policy_refuses_an_unguarded_tool_at_start(time_env, store):
    team = tickets_team(tickets_server(store=store)).spec
    team.agents[0].mcp[0].tools = None
    async with keel_test_env(App(name="t", teams=[team]), ScriptedModel([]), env=time_env) as env:
        result = await env.run_team(team, "File it")
    assert result.status == SagaStatus.FAILED
    assert "close_ticket' is neither read-only nor compensated (mcp_policy: strict)" in result.reason
    assert result.steps == [] and tickets_in(store) == {}


async def test_an_error_result_goes_back_to_the_model(time_env, store):
    model = ScriptedModel([call("assign_ticket", number=99, assignee="ana"), answer("No such ticket.")])
    team = tickets_team(tickets_server(store=store))
    async with keel_test_env(App(name="t", teams=[team]), model, env=time_env) as env:
        result = await env.run_team("tickets", "Assign 99", decisions=["approve"])
    assert result.status == SagaStatus.COMPLETED, result.reason
    tool_message = model.requests[-1].messages[-1]
    assert tool_message.role == "tool" and tool_message.content.startswith("error: ")
    assert tool_message.content.endswith("no ticket #99")
    assert [s.kind for s in result.steps].count("tool_error") == 1


async def test_a_large_mcp_result_is_stored_and_the_model_gets_it_whole(time_env, store):
    title = "Checkout returns 500 " + "x" * 700
    model = ScriptedModel([call("create_ticket", title=title), call("list_tickets"), answer("Listed.")])
    team = tickets_team(tickets_server(store=store))
    async with keel_test_env(App(name="t", teams=[team]), model, env=time_env) as env:
        result = await env.run_team("tickets", "List the tickets")
    assert result.status == SagaStatus.COMPLETED, result.reason
    listed = model.requests[-1].messages[-1]
    assert listed.role == "tool" and json.loads(listed.content or "")["tickets"][0]["title"] == title
    # History keeps the listing by reference: the second call's result holds a preview, not the title.
    events = env.histories[-1].events
    completed = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED]
    call_results = [
        e
        for e in completed
        if b"output-ref" in e.SerializeToString() or title.encode() in e.SerializeToString()
    ]
    assert any(b"io.agentkeel/output-ref" in e.SerializeToString() for e in call_results)
    assert not all(title.encode() in e.SerializeToString() for e in call_results)


VOIDED: list[tuple[int, str]] = []


@tool
def void_ticket(number: int) -> str:
    """Stands in for a Python system that undoes what the MCP tool did."""
    VOIDED.append((number, "voided"))
    return "voided"


async def test_a_python_tool_undoes_an_mcp_tool(time_env, store):
    undo = MCPCompensation(tool="void_ticket", server="python", arguments={"number": "$result.number"})
    server = tickets_server(store=store).model_copy(
        update={"tools": {"create_ticket": MCPToolPolicy(compensation=undo)}}
    )
    triage = Agent(
        name="triage", instructions="x", mcp=[MCPAccess(server="tickets", tools=["create_ticket"])]
    )
    team = Team(
        name="py",
        entry=triage,
        agents=[triage],
        tools=[void_ticket],
        mcp_servers=[server],
        review={"final_answer": True},
    )
    model = ScriptedModel([call("create_ticket", title="x"), answer("Filed.")])
    VOIDED.clear()
    async with keel_test_env(App(name="t", teams=[team]), model, env=time_env) as env:
        result = await env.run_team("py", "File it", decisions=["reject"])
    assert result.status == SagaStatus.COMPENSATED, result.reason
    assert VOIDED == [(1, "voided")] and [c.compensation for c in result.compensations] == ["void_ticket"]


# --------------------------------------------------------------------------- the README, the worker side


def test_the_readme_yaml_team_loads_as_written(tmp_path):
    from agentkeel.teams import load_team_file

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("# tickets.yaml")
    (tmp_path / "tickets.yaml").write_text(text[start : text.index("```", start)])
    spec = load_team_file(tmp_path / "tickets.yaml")
    server = spec.mcp_servers[0]
    assert spec.mcp_policy == "strict" and server.headers == {"Authorization": "TICKETS_TOKEN"}
    assert server.tools["create_ticket"].compensation.arguments["number"] == "$result.number"
    assert spec.agents[0].mcp[0].tools == ["list_tickets", "create_ticket", "assign_ticket"]


def test_header_values_are_read_from_the_worker_environment(monkeypatch):
    from temporalio.exceptions import ApplicationError

    from agentkeel.activities.mcp import client_factory

    spec = MCPServer(name="s", url="http://127.0.0.1:1/mcp", headers={"Authorization": "KEEL_TEST_MCP_TOKEN"})
    monkeypatch.delenv("KEEL_TEST_MCP_TOKEN", raising=False)
    with pytest.raises(ApplicationError, match="KEEL_TEST_MCP_TOKEN .header Authorization. is not set"):
        client_factory(spec)()
    monkeypatch.setenv("KEEL_TEST_MCP_TOKEN", "Bearer t")
    assert client_factory(spec)() is not None


def test_breaker_counts_transport_failures_only_and_compensations_fail_on_is_error():
    from temporalio.exceptions import ApplicationError

    from agentkeel.activities.mcp import _fail_compensation_error, _is_transport_failure, _server_of

    assert _server_of("temporalio.mcp.tickets.call-tool") == "tickets" and _server_of("call_llm") is None
    assert _is_transport_failure(OSError("refused"))
    assert _is_transport_failure(ApplicationError("closed", -32000, type="MCPProtocolError"))
    assert not _is_transport_failure(ApplicationError("bad params", -32602, type="MCPProtocolError"))
    error = {"is_error": True, "content": [{"type": "text", "text": "no ticket #3"}]}
    _fail_compensation_error([{"name": "close", "meta": {}}], error)  # a forward call: the model is told
    with pytest.raises(ApplicationError, match="compensation close reported an error: no ticket #3"):
        _fail_compensation_error([{"name": "close", "meta": {"io.agentkeel/undoes": "k"}}], error)


def test_teams_sharing_a_server_must_agree_on_how_to_reach_it():
    from agentkeel.activities.mcp import MCPConfigError, servers_of

    one = _team({"create": MCPToolPolicy(review=True)})
    two = _team().model_copy(update={"name": "u"})  # other policies: fine, they are the team's own
    assert list(servers_of([one, two])) == ["srv"]
    elsewhere = two.model_copy(update={"mcp_servers": [MCPServer(name="srv", url="http://127.0.0.1:2/mcp")]})
    with pytest.raises(MCPConfigError, match="'srv' is declared differently by two teams"):
        servers_of([one, elsewhere])


async def test_two_plugins_on_one_worker_register_the_mcp_activities_once(time_env, store):
    from temporalio.worker import Worker

    app = App(name="t", teams=[tickets_team(tickets_server(store=store))])
    model = ScriptedModel([call("list_tickets"), answer("None open.")])
    plugins = [AgentkeelPlugin(apps=[app]), AgentkeelPlugin(apps=[app])]  # as on a client and on its worker
    queue = f"test-{uuid.uuid4().hex[:8]}"
    async with Worker(time_env.client, task_queue=queue, activities=[model.activity()], plugins=plugins):
        env = KeelTestEnv(client=time_env.client, task_queue=queue, app=app)
        result = await env.run_team("tickets", "What is open?")
    assert result.status == SagaStatus.COMPLETED, result.reason
    assert model.requests[-1].messages[-1].content == '{"tickets": []}'


def test_a_prefix_keeps_two_servers_tools_apart():
    server = MCPServer(name="srv", url="http://127.0.0.1:1/mcp", prefix="srv_")
    agent = Agent(name="a", instructions="x", mcp=["srv"])
    team = Team(name="t", entry=agent, agents=[agent], mcp_servers=[server]).spec
    resolved = with_listings(team, {"srv": LISTING})
    assert resolved.agents[0].tools == ["srv_create", "srv_close", "srv_look", "srv_poke"]
    assert resolved.tool("srv_look").mcp.tool == "look"  # the server is called by its own name
