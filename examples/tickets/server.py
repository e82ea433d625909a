"""A small ticket tracker served over MCP with the official `mcp` SDK (the MCP example's server).

    python -m agentkeel.examples.tickets.server --store tickets.json              # stdio
    python -m agentkeel.examples.tickets.server --store tickets.json --port 8765  # streamable HTTP, /mcp

Tools, annotated: `create_ticket` (additive), `assign_ticket` and `close_ticket` (destructive:
they overwrite), `list_tickets` (read-only). Tickets live in a JSON file written on every change,
so a restarted server keeps them. A call whose `_meta` carries an idempotency key
(`io.agentkeel/idempotency-key`) is done once per tool and key: a retry gets the first answer.
`--variant v2` serves a changed tool list (a new `purge_tickets`, another description), as a server
upgraded in the middle of a run would.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel

IDEMPOTENCY_META = "io.agentkeel/idempotency-key"


class Ticket(BaseModel):
    """A ticket."""

    number: int
    title: str
    priority: str = "normal"
    status: Literal["open", "closed"] = "open"
    assignee: str = ""
    reason: str = ""


class Assignment(BaseModel):
    """What `assign_ticket` did (the previous assignee lets a compensation put it back)."""

    number: int
    assignee: str
    previous_assignee: str


class TicketList(BaseModel):
    """What `list_tickets` found."""

    tickets: list[Ticket]


class Store:
    """The tickets, in a JSON file rewritten atomically on each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"next": 1, "tickets": {}, "done": {}}
        if path.exists():
            self.data = json.loads(path.read_text())

    def save(self) -> None:
        """Write the file (a temporary file renamed over it: never half written)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tickets-")
        with os.fdopen(fd, "w") as out:
            json.dump(self.data, out, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def ticket(self, number: int) -> Ticket:
        """The ticket numbered `number` (`ToolError`: the call answers `isError` to the model)."""
        raw = self.data["tickets"].get(str(number))
        if raw is None:
            raise ToolError(f"no ticket #{number}")
        return Ticket.model_validate(raw)

    def put(self, ticket: Ticket) -> Ticket:
        """Store `ticket`."""
        self.data["tickets"][str(ticket.number)] = ticket.model_dump()
        return ticket

    def once(self, tool: str, ctx: Context, do: Any) -> Any:
        """Run `do()` once per tool and idempotency key; a repeated key gets the first answer."""
        meta = ctx.request_context.meta or {}
        key = meta.get(IDEMPOTENCY_META)
        done_key = f"{tool}:{key}"
        if key and done_key in self.data["done"]:
            return self.data["done"][done_key]
        value = do().model_dump()
        if key:
            self.data["done"][done_key] = value
        self.save()
        return value


def build_server(store: Store, variant: str = "v1") -> MCPServer:
    """The tracker's MCP server on `store`."""
    server = MCPServer("tickets", instructions="A small ticket tracker.")
    additive = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
    overwrites = ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False)

    def new_ticket(title: str, priority: str) -> Ticket:
        number = store.data["next"]
        store.data["next"] = number + 1
        return store.put(Ticket(number=number, title=title, priority=priority))

    create_doc = "Open a new ticket." if variant == "v1" else "Open a ticket (v2: new wording)."

    @server.tool(description=create_doc, annotations=additive, structured_output=True)
    def create_ticket(
        title: str, ctx: Context, priority: Literal["low", "normal", "urgent"] = "normal"
    ) -> Ticket:
        return Ticket.model_validate(store.once("create_ticket", ctx, lambda: new_ticket(title, priority)))

    @server.tool(annotations=overwrites, structured_output=True)
    def assign_ticket(number: int, assignee: str, ctx: Context) -> Assignment:
        """Assign a ticket to someone (replaces the current assignee)."""

        def assign() -> Assignment:
            ticket = store.ticket(number)
            store.put(ticket.model_copy(update={"assignee": assignee}))
            return Assignment(number=number, assignee=assignee, previous_assignee=ticket.assignee)

        return Assignment.model_validate(store.once("assign_ticket", ctx, assign))

    @server.tool(annotations=overwrites, structured_output=True)
    def close_ticket(number: int, ctx: Context, reason: str = "") -> Ticket:
        """Close a ticket (closing a closed ticket changes nothing)."""

        def close() -> Ticket:
            ticket = store.ticket(number)
            if ticket.status == "closed":
                return ticket
            return store.put(ticket.model_copy(update={"status": "closed", "reason": reason}))

        return Ticket.model_validate(store.once("close_ticket", ctx, close))

    @server.tool(annotations=ToolAnnotations(read_only_hint=True), structured_output=True)
    def list_tickets(status: Literal["open", "closed", "all"] = "open") -> TicketList:
        """List tickets by status."""
        tickets = [Ticket.model_validate(t) for t in store.data["tickets"].values()]
        return TicketList(tickets=[t for t in tickets if status in ("all", t.status)])

    if variant == "v2":

        @server.tool(annotations=ToolAnnotations(destructive_hint=True))
        def purge_tickets() -> str:
            """Delete every closed ticket."""
            return "purged"

    return server


def main(argv: list[str] | None = None) -> None:
    """Serve the tracker over stdio, or over streamable HTTP with `--port`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(".keel/tickets.json"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--variant", choices=["v1", "v2"], default="v1")
    args = parser.parse_args(argv)
    server = build_server(Store(args.store), args.variant)
    if args.port is None:
        server.run()
    else:
        server.run("streamable-http", host=args.host, port=args.port, stateless_http=True)


if __name__ == "__main__":
    main()
