"""Which MCP servers a worker's teams declare: read without importing the MCP SDK.

A worker whose teams declare no MCP server never imports `mcp` (and the web stack it brings):
`AgentkeelPlugin` asks here first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentkeel.contracts import TeamSpec
    from agentkeel.mcp.contracts import MCPServerSpec


class MCPConfigError(ValueError):
    """Two teams declare the same MCP server differently (one line)."""


def servers_of(teams: Iterable[TeamSpec]) -> dict[str, MCPServerSpec]:
    """Every MCP server the teams declare, by name.

    Raises:
        MCPConfigError: Two teams declare one server name with different connections.
    """
    servers: dict[str, MCPServerSpec] = {}
    for team in teams:
        for server in team.mcp_servers:
            known = servers.get(server.name)
            if known is not None and known.connection() != server.connection():
                raise MCPConfigError(f"MCP server {server.name!r} is declared differently by two teams")
            servers[server.name] = server.connection()
    return servers
