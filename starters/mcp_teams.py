"""`keel teams` for teams with MCP servers: list each server's tools now, as a run would at its start.

The listing goes through the same resolution as a run's (`agentkeel.mcp.resolve.with_listings`),
so what `keel teams` shows is what a run started now would offer its agents; a server that cannot
be reached is shown with the reason, as a run would fail with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from agentkeel.contracts import TeamSpec
from agentkeel.mcp.contracts import MCPServerSpec
from agentkeel.mcp.resolve import MCPTeamError, unguarded, with_listings

LIST_TIMEOUT_S = 15.0


async def _list(server: MCPServerSpec) -> tuple[list[object] | None, str | None]:
    from agentkeel.activities.mcp import list_tools_now

    try:
        result = await asyncio.wait_for(list_tools_now(server), LIST_TIMEOUT_S)
    except Exception as exc:  # shown, not raised: the other teams still list
        inner = exc.exceptions[0] if isinstance(exc, BaseExceptionGroup) and exc.exceptions else exc
        return None, f"{type(inner).__name__}: {inner}".rstrip(": ")
    return list(result.tools), None


async def resolve_mcp_teams(
    teams: Mapping[str, TeamSpec],
) -> tuple[dict[str, TeamSpec], dict[str, list[str]]]:
    """The teams with their MCP tools listed now, and per team the notes to show (unreachable, flagged)."""
    resolved: dict[str, TeamSpec] = dict(teams)
    notes: dict[str, list[str]] = {}
    for name, team in teams.items():
        if not team.mcp_servers:
            continue
        team_notes = notes.setdefault(name, [])
        listings = {}
        for server in team.mcp_servers:
            tools, problem = await _list(server)
            where = server.url or " ".join([str(server.command), *server.args])
            head = f"mcp server {server.name} ({server.transport} {where})"
            if tools is None:
                team_notes.append(f"{head}: unreachable: {problem}")
                continue
            listings[server.name] = tools
            team_notes.append(f"{head}: {len(tools)} tool(s) listed")
        if len(listings) < len(team.mcp_servers):
            continue
        try:
            shown = with_listings(team.model_copy(update={"mcp_policy": "warn"}), listings)
        except MCPTeamError as exc:
            team_notes.append(f"refused at start: {exc}")
            continue
        resolved[name] = shown.model_copy(update={"mcp_policy": team.mcp_policy})
        for tool in unguarded(shown.tools):
            verdict = "refused at start (mcp_policy: strict)" if team.mcp_policy == "strict" else "flagged"
            team_notes.append(f"! {tool.name} is neither read-only nor compensated: {verdict}")
    return resolved, notes
