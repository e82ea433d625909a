"""The MCP example: a triage team files and assigns tickets on a ticket tracker served over MCP.

    keel dev --app agentkeel.examples.tickets
    keel start tickets "Checkout page returns 500"

The tracker (`server.py`) is written with the official `mcp` SDK; the worker starts it over
stdio (its tickets in `.keel/tickets.json`), or reaches it over streamable HTTP
(`tickets_server(url=...)`). `scenario.yaml` scripts the offline LLM provider.
"""

from __future__ import annotations

from pathlib import Path

from agentkeel.app import App
from agentkeel.examples.tickets.team import tickets, tickets_server, tickets_team

HERE = Path(__file__).resolve().parent
SCENARIO_FILE = HERE / "scenario.yaml"
APP_REFERENCE = "agentkeel.examples.tickets"

app = App(name="tickets", teams=[tickets], scenarios=[SCENARIO_FILE])

__all__ = ["APP_REFERENCE", "SCENARIO_FILE", "app", "tickets", "tickets_server", "tickets_team"]
