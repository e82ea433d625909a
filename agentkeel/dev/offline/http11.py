"""A small asyncio HTTP/1.1 server on `h11`: keep-alive, one task per connection, no threads.

It knows nothing about chat completions: a handler turns a `Request` into a
`Response`, or into `DROP` (close the connection without answering) or `HANG`
(never answer; wait until the client goes away). A `Listener` owns one
listening socket and its connections, and can stop accepting and later accept
again on the same port (the offline provider's `refuse` fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Larger request bodies answer 413."""
MAX_HEADER_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
BACKLOG = 2048
"""Listen backlog: benchmarks open ~1,000 connections at once (the kernel caps it at somaxconn)."""
SERVER_HEADER = "agentkeel-offline"
CLOSE_TIMEOUT_S = 5.0
"""How long a closing connection may take to flush before it is aborted."""


class Action(enum.Enum):
    """What a handler may return instead of a response."""

    DROP = "drop"
    HANG = "hang"


DROP = Action.DROP
HANG = Action.HANG


@dataclass
class Request:
    """One complete HTTP request."""

    method: str
    target: str
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with `, `."""
    body: bytes

    @property
    def path(self) -> str:
        """The path without the query string."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (last value wins)."""
        return dict(parse_qsl(urlsplit(self.target).query))


@dataclass
class Response:
    """An HTTP response with a complete body."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
        """A JSON response."""
        return cls(status, json.dumps(payload, ensure_ascii=False).encode(), list(headers or []))


Handler = Callable[[Request, "Connection"], Awaitable[Response | Action]]


class Connection:
    """One client connection: reads requests, runs the handler, writes responses, keeps alive."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
        self.reader = reader
        self.writer = writer
        self.handler = handler
        self.busy = False
        """True between a request's arrival and the end of its response."""
        self.close_after = False
        """Close once the current response is written (set while the listener stops accepting)."""
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)

    async def serve(self) -> None:
        """Serve requests until the client closes, a handler drops, or an error."""
        try:
            while not self.close_after:
                request = await self._read_request()
                if request is None:
                    return
                self.busy = True
                result = await self.handler(request, self)
                if result is DROP:
                    return
                if result is HANG:
                    await self._wait_for_eof()
                    return
                assert isinstance(result, Response)
                await self._send(result)
                self.busy = False
                if self._h11.our_state is h11.MUST_CLOSE:
                    return
                self._h11.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            await self._send_protocol_error(exc)
        except _TooLarge:
            await self._send_quietly(Response.json(413, _error_body("request body too large", 413)))
        except (ConnectionError, h11.LocalProtocolError, asyncio.IncompleteReadError):
            pass  # the client went away mid-exchange: nothing to answer
        finally:
            self.writer.close()
            try:
                # A client that stopped reading would keep the unsent tail (and this task) forever.
                await asyncio.wait_for(self.writer.wait_closed(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                self.writer.transport.abort()
            except Exception:
                pass

    async def _read_request(self) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(READ_CHUNK)
                self._h11.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
                if self._h11.they_are_waiting_for_100_continue:
                    self.writer.write(self._h11.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers: dict[str, str] = {}
                for raw_name, raw_value in head.headers:
                    name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
                return Request(
                    method=head.method.decode("ascii"),
                    target=head.target.decode("latin-1"),
                    headers=headers,
                    body=bytes(body),
                )
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _send(self, response: Response) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            ("server", SERVER_HEADER),
            *response.headers,
        ]
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        data = self._h11.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        data += self._h11.send(h11.Data(data=response.body)) or b""
        data += self._h11.send(h11.EndOfMessage()) or b""
        self.writer.write(data)
        await self.writer.drain()

    async def _send_quietly(self, response: Response) -> None:
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with contextlib.suppress(Exception):
            await self._send(response)

    async def _send_protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint or 400
        await self._send_quietly(Response.json(status, _error_body(f"bad HTTP request: {exc}", status)))

    async def _wait_for_eof(self) -> None:
        while await self.reader.read(READ_CHUNK):
            pass


class _TooLarge(Exception):
    pass


def _error_body(message: str, status: int) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": str(status)}
    }


class Listener:
    """One listening socket and the connections it accepted."""

    def __init__(self, handler: Handler, host: str, port: int) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        """The bound port once started (the real one when 0 was asked for)."""
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], Connection] = {}

    @property
    def accepting(self) -> bool:
        """Whether the socket is open."""
        return self._server is not None

    async def start(self) -> None:
        """Open the socket (again, on the same port, after `stop_accepting`)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accept, self.host, self.port, backlog=BACKLOG)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_accepting(self) -> None:
        """Close the socket (new connections are refused) and every connection once it is idle."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task, conn in list(self._connections.items()):
            if conn.busy:
                conn.close_after = True
            else:
                task.cancel()

    async def stop(self) -> None:
        """Close the socket and every connection, answered or not."""
        await self.stop_accepting()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def connection_count(self) -> int:
        """Open connections."""
        return len(self._connections)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = Connection(reader, writer, self.handler)
        self._connections[task] = conn
        try:
            await conn.serve()
        except asyncio.CancelledError:
            writer.close()
        finally:
            self._connections.pop(task, None)
