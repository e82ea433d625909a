"""From listed MCP tools to a resolved team: validation, annotation defaults, compensation arguments.

Pure functions of their inputs, so the workflow runs them on what its `list-tools` activities
returned (deterministic on replay), and `keel teams` runs them on what it listed itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agentkeel.mcp.contracts import MCPBinding, MCPCompensation, MCPServerSpec, MCPToolPolicy
from agentkeel.schemas import schema_error

if TYPE_CHECKING:
    from mcp.types import CallToolResult, Tool

    from agentkeel.contracts import TeamSpec, ToolSpec

PYTHON = "python"
"""`MCPCompensation.server` of a compensation that is a Python tool of the team."""


class MCPTeamError(ValueError):
    """A team's MCP servers do not fit together with what they listed (message names the server)."""


def needs_listing(team: TeamSpec) -> bool:
    """Whether the team declares MCP servers whose tools this run has not listed yet."""
    return any(server.listed_tools is None for server in team.mcp_servers)


def binding(server: MCPServerSpec, tool: Tool, policy: MCPToolPolicy) -> MCPBinding:
    """What a resolved team records of one listed MCP tool."""
    ann = tool.annotations
    read_only = bool(ann is not None and ann.read_only_hint)
    undo = policy.compensation
    if undo is not None and undo.server is None:
        undo = undo.model_copy(update={"server": server.name})
    return MCPBinding(
        server=server.name,
        tool=tool.name,
        read_only=read_only,
        # MCP's defaults: a tool that says nothing may be destructive and reach an open world.
        destructive=not read_only and (ann is None or ann.destructive_hint is not False),
        idempotent=bool(ann is not None and ann.idempotent_hint),
        open_world=ann is None or ann.open_world_hint is not False,
        undo=undo,
        idempotency_meta=server.idempotency_meta,
        timeout_s=server.timeout_s,
    )


def _tool_spec(server: MCPServerSpec, tool: Tool) -> ToolSpec:
    from agentkeel.contracts import ToolSpec

    policy = server.tools.get(tool.name, MCPToolPolicy())
    bound = binding(server, tool, policy)
    review = policy.review
    return ToolSpec(
        name=f"{server.prefix}{tool.name}",
        description=tool.description or tool.title or "",
        parameters=dict(tool.input_schema),
        # A destructive tool waits for a person unless the team says otherwise.
        requires_review=review is True or (review is None and bound.destructive),
        review_when=review if isinstance(review, str) else None,
        mcp=bound,
    )


def _check_listing(server: MCPServerSpec, tools: Sequence[Tool]) -> list[str]:
    problems: list[str] = []
    names = [t.name for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"MCP server {server.name!r} lists tool(s) twice: {', '.join(dupes)}")
    for tool in tools:
        problem = schema_error(dict(tool.input_schema))
        if problem:
            problems.append(
                f"MCP server {server.name!r}: tool {tool.name!r} has an invalid input schema: {problem}"
            )
    for name in server.tools:
        if name not in names:
            problems.append(
                f"MCP server {server.name!r} has no tool {name!r} (the team sets a policy for it)"
            )
    return problems


def _offered(
    team: TeamSpec, server: MCPServerSpec, names: list[str]
) -> tuple[dict[str, list[str]], list[str]]:
    """Per agent, the server's tools it may call; and the problems (filters naming unknown tools)."""
    per_agent: dict[str, list[str]] = {}
    problems: list[str] = []
    for agent in team.agents:
        for access in agent.mcp:
            if access.server != server.name:
                continue
            wanted = names if access.tools is None else access.tools
            unknown = [t for t in wanted if t not in names]
            if unknown:
                problems.append(
                    f"agent {agent.name!r} wants unknown tool(s) {unknown} of MCP server {server.name!r}"
                )
            per_agent.setdefault(agent.name, []).extend(t for t in wanted if t in names)
    return per_agent, problems


def _check_undo(team: TeamSpec, listings: Mapping[str, Sequence[Tool]], spec: ToolSpec) -> str | None:
    undo = spec.mcp.undo if spec.mcp else None
    if undo is None:
        return None
    if undo.server == PYTHON:
        ok = any(t.name == undo.tool and t.mcp is None for t in team.tools)
    else:
        ok = any(t.name == undo.tool for t in listings.get(str(undo.server), ()))
    where = "the team's Python tools" if undo.server == PYTHON else f"MCP server {undo.server!r}"
    return None if ok else f"MCP tool {spec.name!r} is undone by {undo.tool!r}, which {where} do not offer"


def with_listings(team: TeamSpec, listings: Mapping[str, Sequence[Tool]]) -> TeamSpec:
    """`team` with the listed MCP tools its agents may call, as tools of the team.

    Args:
        team: A team declaring MCP servers.
        listings: Each server's tools, as listed once for this run.

    Raises:
        MCPTeamError: A listing is invalid (names, JSON schemas), a filter or policy names a tool the
            server does not offer, a compensation cannot be found, or, under `mcp_policy: strict`,
            a tool an agent may call is neither read-only nor compensated.
    """
    from agentkeel.contracts import TeamSpec

    problems: list[str] = []
    specs: list[ToolSpec] = []
    agent_tools: dict[str, list[str]] = {}
    for server in team.mcp_servers:
        tools = list(listings.get(server.name, ()))
        problems += _check_listing(server, tools)
        per_agent, wrong = _offered(team, server, [t.name for t in tools])
        problems += wrong
        chosen = {n for names in per_agent.values() for n in names}
        for t in tools:
            if t.name not in chosen:
                continue
            try:
                specs.append(_tool_spec(server, t))
            except ValidationError as exc:  # a name or schema the model cannot be offered
                problems.append(f"MCP server {server.name!r}: tool {t.name!r}: {_first_error(exc)}")
        for agent, names in per_agent.items():
            agent_tools.setdefault(agent, []).extend(f"{server.prefix}{n}" for n in dict.fromkeys(names))
    problems += [p for s in specs if (p := _check_undo(team, listings, s))]
    if team.mcp_policy == "strict":
        problems += [
            f"MCP tool {s.name!r} is neither read-only nor compensated (mcp_policy: strict)"
            for s in unguarded(specs)
        ]
    if problems:
        raise MCPTeamError("; ".join(problems))
    data = team.model_dump(mode="json")
    data["tools"] += [s.model_dump(mode="json") for s in specs]
    for agent in data["agents"]:
        agent["tools"] += agent_tools.get(agent["name"], [])
    for server in data["mcp_servers"]:
        server["listed_tools"] = [t.name for t in listings.get(server["name"], ())]
    try:
        return TeamSpec.model_validate(data)
    except ValidationError as exc:  # a name collision with a Python tool, a name the model cannot use
        raise MCPTeamError(f"MCP tools do not fit team {team.name!r}: {_first_error(exc)}") from None


def unguarded(tools: Sequence[ToolSpec]) -> list[ToolSpec]:
    """The MCP tools that are neither read-only nor undone by a compensation."""
    return [t for t in tools if t.mcp is not None and not t.mcp.read_only and t.mcp.undo is None]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


# --------------------------------------------------------------------------- calls


def tool_output(result: CallToolResult) -> dict[str, Any]:
    """What an MCP tool call returned, as the JSON object the model and compensations see."""
    if isinstance(result.structured_content, dict):
        return dict(result.structured_content)
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    if len(texts) == 1:
        try:
            value = json.loads(texts[0])
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
    return {"text": "\n".join(texts)} if texts else {}


def error_text(result: CallToolResult) -> str:
    """The message of an `isError` result."""
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    return "\n".join(texts) or "the tool reported an error"


def undo_arguments(
    undo: MCPCompensation, arguments: Mapping[str, Any], result: Mapping[str, Any] | None, key: str
) -> tuple[dict[str, Any], str | None]:
    """The undoing call's arguments, and the problem when one cannot be built (a missing result field)."""
    built: dict[str, Any] = {}
    for name, value in undo.arguments.items():
        if not (isinstance(value, str) and value.startswith("$")):
            built[name] = value
            continue
        if value == "$key":
            built[name] = key
            continue
        source_name, *path = value[1:].split(".")
        source: Any = arguments if source_name == "args" else result
        if source is None:
            return built, f"{undo.tool}.{name} needs {value}, but the result of the call is unknown"
        for part in path:
            if not isinstance(source, Mapping) or part not in source:
                return built, f"{undo.tool}.{name} needs {value}, which the call's {source_name} do not hold"
            source = source[part]
        built[name] = source
    return built, None
