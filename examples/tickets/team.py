"""The `tickets` team: a triage agent files and assigns tickets on an MCP ticket tracker.

The tracker is an MCP server (`server.py`) declared by name on the team, over stdio by default
(the worker starts it) or over streamable HTTP (`tickets_server(url=...)`). The team says what
undoes its tools (a ticket is closed, an assignment put back, with arguments taken from the
original call and its result) and leaves review to the annotations: `assign_ticket` is marked
destructive, so a person approves it. `close_ticket` is not offered to the agent (only used to
undo), so `mcp_policy: strict` holds: every tool the agent may call is read-only or compensated.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agentkeel import Agent, Team
from agentkeel.mcp import MCPAccess, MCPCompensation, MCPServer, MCPToolPolicy

SERVER_MODULE = "agentkeel.examples.tickets.server"
DEFAULT_STORE = Path(".keel") / "tickets.json"

POLICY = {
    "create_ticket": MCPToolPolicy(
        compensation=MCPCompensation(
            tool="close_ticket", arguments={"number": "$result.number", "reason": "the run did not finish"}
        )
    ),
    "assign_ticket": MCPToolPolicy(
        compensation=MCPCompensation(
            tool="assign_ticket",
            arguments={"number": "$args.number", "assignee": "$result.previous_assignee"},
        )
    ),
}
"""What undoes each tool; review follows the annotations (`assign_ticket` is destructive)."""


def tickets_server(*, url: str | None = None, store: Path | str | None = None) -> MCPServer:
    """The tracker as the team's MCP server `tickets`: at `url`, or started over stdio on `store`."""
    if url is not None:
        return MCPServer(name="tickets", url=url, tools=POLICY, timeout_s=10)
    path = Path(store or DEFAULT_STORE).resolve()
    # The interpreter running the worker, so the server runs with the same packages installed.
    command = [sys.executable, "-m", SERVER_MODULE, "--store", str(path)]
    return MCPServer(name="tickets", command=command[0], args=command[1:], tools=POLICY, timeout_s=10)


def tickets_team(server: MCPServer) -> Team:
    """The team, on the tracker `server`."""
    triage = Agent(
        name="triage",
        instructions=(
            "You are the triage agent (agent: triage). File a ticket for the problem in the goal, "
            "assign it to the on-call engineer, then answer with the ticket's number."
        ),
        mcp=[MCPAccess(server="tickets", tools=["list_tickets", "create_ticket", "assign_ticket"])],
    )
    return Team(
        name="tickets",
        description="Files a ticket on an MCP tracker and assigns it after a person approves.",
        entry=triage,
        agents=[triage],
        max_turns=8,
        mcp_servers=[server],
        mcp_policy="strict",
        review={"timeout_s": 86400},
    )


tickets = tickets_team(tickets_server())
"""The team on the stdio tracker at `.keel/tickets.json` (what `keel dev --app` runs)."""
