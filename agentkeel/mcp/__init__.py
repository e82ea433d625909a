"""MCP servers as tool sources of a team: declared by name, listed once per run, compensated and reviewed.

See `agentkeel.mcp.contracts` for the declarations and README "MCP servers as tool sources".
"""

from agentkeel.mcp.contracts import MCPAccess, MCPCompensation, MCPServerSpec, MCPToolPolicy

MCPServer = MCPServerSpec
"""The declaration of an MCP server (`Team(mcp_servers=[MCPServer(name=..., url=...)])`)."""

__all__ = ["MCPAccess", "MCPCompensation", "MCPServer", "MCPServerSpec", "MCPToolPolicy"]
