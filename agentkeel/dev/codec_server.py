"""A remote codec server: Temporal's codec HTTP protocol over the platform's payload codec.

The Temporal Web UI and `temporal ... --codec-endpoint URL` send the payloads
they show to `POST {URL}/decode` (and, to start workflows or send signals,
`POST {URL}/encode`) as the protobuf JSON of `temporal.api.common.v1.Payloads`:

    {"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}

and get the same shape back. Only the last path segment picks the operation, so
the endpoints can be mounted under any prefix (the protocol allows it).

Access needs the token (`KEEL_CODEC_TOKEN`), given either way:

* `Authorization: Bearer <token>` (the CLI: `--codec-auth "Bearer <token>"`);
* as a path segment before the operation, `http://HOST:PORT/<token>/decode`: the
  Web UI of a server without single sign-on has no way to send a custom
  Authorization header, so its codec endpoint is `http://HOST:PORT/<token>`.

Anything else is answered 401. CORS answers the UI's origins (preflight without
credentials, as browsers send it). `X-Namespace` is accepted and not needed:
one codec serves every namespace.

Built on asyncio and h11 (no web framework): one small class, `CodecServer`,
with `start()`/`stop()` and `async with`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

import h11
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from agentkeel.codec import CodecError
from agentkeel.logs import get_logger
from agentkeel.names import CODEC_PORT, UI_PORT

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = CODEC_PORT
DEFAULT_CORS_ORIGINS: tuple[str, ...] = (f"http://localhost:{UI_PORT}", f"http://127.0.0.1:{UI_PORT}")
"""The dev server's Web UI, under both names a browser may use for it."""
MAX_BODY = 32 * 1024 * 1024
"""Largest request body accepted (the UI batches a page of payloads; each is at most a few MB)."""
READ_TIMEOUT = 30.0
"""An idle or slow connection is closed after this many seconds without data."""
ALLOWED_HEADERS = "authorization, content-type, x-namespace"

log = get_logger(__name__)


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CodecServer:
    """Serve `codec` over Temporal's remote codec protocol.

    Args:
        codec: The payload codec (usually `agentkeel.codec.build_codec()`).
        token: The secret callers must present; required (an empty token is refused).
        host: Address to bind.
        port: Port to bind; 0 picks a free one (see `port` after `start`).
        cors_origins: Browser origins allowed to call (the Web UI's); `*` allows any origin.

    Raises:
        ValueError: the token is empty.
    """

    def __init__(
        self,
        codec: PayloadCodec,
        token: str,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        cors_origins: Sequence[str] = DEFAULT_CORS_ORIGINS,
    ) -> None:
        if not token:
            raise ValueError("the codec server needs a token (KEEL_CODEC_TOKEN)")
        self.codec = codec
        self._token = token.encode()
        self.host = host
        self.port = port
        self.cors_origins = tuple(origin.rstrip("/") for origin in cors_origins)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """Base URL to give the CLI (`--codec-endpoint`), with the token in a header."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> CodecServer:
        """Bind and start serving.

        Raises:
            OSError: the address is taken or cannot be bound.
        """
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("codec server listening", url=self.url, cors_origins=list(self.cors_origins))
        return self

    async def stop(self) -> None:
        """Stop accepting, close open connections, and wait for them."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()
        self._server = None

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> CodecServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- connection handling -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                request, body = await self._read_request(conn, reader, writer)
                if request is None:
                    return
                status, headers, payload = await self._respond(request, body)
                await self._send(conn, writer, status, headers, payload)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._send_error(conn, writer, exc.error_status_hint, "malformed HTTP request")
                return None, b""
            if event is h11.NEED_DATA:
                data = await asyncio.wait_for(reader.read(65536), READ_TIMEOUT)
                conn.receive_data(data)  # b"" tells h11 the peer closed
                continue
            if isinstance(event, h11.Request):
                request = event
                if conn.they_are_waiting_for_100_continue:  # curl does this for bodies over 1 KiB
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                    await writer.drain()
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    await self._send_error(conn, writer, 413, "request body too large")
                    return None, b""
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None, b""

    async def _send_error(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"error": message}).encode()
        with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
            await self._send(conn, writer, status, [("content-type", "application/json")], body)

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        headers = [*headers, ("content-length", str(len(body)))]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
        if body:
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    # --- the protocol --------------------------------------------------------------------------

    def _cors_headers(self, origin: str | None) -> list[tuple[str, str]]:
        if origin is None:
            return []
        if origin.rstrip("/") in self.cors_origins or "*" in self.cors_origins:
            return [
                ("access-control-allow-origin", origin),
                ("access-control-allow-credentials", "true"),
                ("vary", "Origin"),
            ]
        return [("vary", "Origin")]

    def _authorized(self, authorization: str | None, prefix: list[str]) -> bool:
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token):
                return True
        # Token as a path segment: the Web UI without SSO cannot send an Authorization header.
        return any(hmac.compare_digest(segment.encode(), self._token) for segment in prefix)

    async def _respond(self, request: h11.Request, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}
        cors = self._cors_headers(headers.get("origin"))
        method = request.method.decode("ascii", "replace").upper()
        path = request.target.decode("latin-1").split("?", 1)[0]
        segments = [segment for segment in path.split("/") if segment]
        operation = segments[-1] if segments else ""
        try:
            if method == "OPTIONS":
                # Preflight: browsers send it without credentials, so it needs no token.
                if not any(name == "access-control-allow-origin" for name, _ in cors):
                    raise _HttpError(403, "origin not allowed")
                return (
                    204,
                    [
                        *cors,
                        ("access-control-allow-methods", "POST, OPTIONS"),
                        ("access-control-allow-headers", ALLOWED_HEADERS),
                        ("access-control-max-age", "600"),
                    ],
                    b"",
                )
            if method == "GET" and operation in ("", "health", "healthz"):
                return 200, [*cors, ("content-type", "application/json")], b'{"status":"ok"}'
            if operation not in ("encode", "decode"):
                raise _HttpError(404, "not found: POST .../encode or .../decode")
            if method != "POST":
                raise _HttpError(405, "use POST")
            if not self._authorized(headers.get("authorization"), segments[:-1]):
                raise _HttpError(401, "missing or wrong token")
            payloads = _parse_payloads(body)
            try:
                if operation == "encode":
                    result = await self.codec.encode(payloads.payloads)
                else:
                    result = await self.codec.decode(payloads.payloads)
            except CodecError as exc:
                raise _HttpError(422, str(exc)) from None
            text = json_format.MessageToJson(Payloads(payloads=result), indent=None)
            return 200, [*cors, ("content-type", "application/json")], text.encode()
        except _HttpError as exc:
            if exc.status >= 500 or exc.status in (401, 422):
                log.warning(
                    "codec request refused", status=exc.status, operation=operation, reason=exc.message
                )
            extra = [("www-authenticate", 'Bearer realm="keel-codec"')] if exc.status == 401 else []
            if exc.status == 405:
                extra.append(("allow", "POST, OPTIONS"))
            return (
                exc.status,
                [*cors, *extra, ("content-type", "application/json")],
                json.dumps({"error": exc.message}).encode(),
            )
        except Exception:
            log.exception("codec request failed", operation=operation)
            return 500, [*cors, ("content-type", "application/json")], b'{"error":"internal error"}'


def _parse_payloads(body: bytes) -> Payloads:
    """Protobuf JSON of `Payloads`; unknown fields ignored (the protocol may grow)."""
    if not body.strip():
        raise _HttpError(400, 'empty body: expected {"payloads": [...]}')
    try:
        message: Any = json_format.Parse(body, Payloads(), ignore_unknown_fields=True)
    except (json_format.ParseError, DecodeError, UnicodeDecodeError, ValueError) as exc:
        raise _HttpError(400, f"body is not the JSON of temporal.api.common.v1.Payloads: {exc}") from None
    return message
