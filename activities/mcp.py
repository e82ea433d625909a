"""MCP servers on the worker: client factories for temporalio-mcp, one circuit breaker per server.

`temporalio.mcp.MCPPlugin` registers, for each MCP server the worker's teams declare, the
activities `temporalio.mcp.<server>.<operation>` that the workflow's `TemporalMCPClient` calls;
this module builds its client factories from the teams' `MCPServerSpec`s (secrets read from the
environment here, on the worker, never from history). `MCPBreakerInterceptor` wraps those
activities with the server's circuit breaker (`activities/breakers.py`, one per server), turns
transport failures into the retryable `MCPUnavailable`, and fails a compensating call whose tool
reported an error.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from agentkeel import errors
from agentkeel.activities.breakers import BreakerRegistry
from agentkeel.contracts import CompensationRequest
from agentkeel.logs import get_logger
from agentkeel.mcp.contracts import COMPENSATION_META, UNRESOLVED_COMPENSATION_ACTIVITY, MCPServerSpec
from agentkeel.mcp.servers import MCPConfigError as MCPConfigError  # re-exported
from agentkeel.mcp.servers import servers_of as servers_of  # re-exported

log = get_logger(__name__)

ACTIVITY_PREFIX = "temporalio.mcp."
"""temporalio-mcp's activity names: `temporalio.mcp.<server>.<operation>`."""
_TRANSPORT_CODES = frozenset({CONNECTION_CLOSED, REQUEST_TIMEOUT})
"""JSON-RPC codes that say the server went away, not that it answered."""

MCP_BREAKERS = BreakerRegistry()
"""The MCP servers' breakers of this worker process (labelled `mcp:<server>` in logs and metrics)."""


def _env(name: str, server: str, what: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise ApplicationError(
            f"MCP server {server!r}: environment variable {name} ({what}) is not set on the worker",
            type=errors.MCP_CONFIG,
            non_retryable=True,
        )
    return value


def client_factory(spec: MCPServerSpec) -> Callable[[], Client]:
    """A factory of fresh `mcp.Client`s for `spec` (temporalio-mcp opens and pools them)."""

    def make() -> Client:
        if spec.url is not None:
            if not spec.headers:
                return Client(spec.url, read_timeout_seconds=spec.timeout_s)
            from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

            headers = {h: _env(var, spec.name, f"header {h}") for h, var in spec.headers.items()}
            http = create_mcp_http_client(headers=headers)
            return Client(
                streamable_http_client(spec.url, http_client=http), read_timeout_seconds=spec.timeout_s
            )
        params = StdioServerParameters(
            command=str(spec.command),
            args=list(spec.args),
            env={name: _env(name, spec.name, "env") for name in spec.env},
        )
        return Client(params, read_timeout_seconds=spec.timeout_s)

    return make


def mcp_plugin(servers: Mapping[str, MCPServerSpec]) -> Any:
    """temporalio-mcp's `MCPPlugin` with a client factory per server, or None without servers."""
    if not servers:
        return None
    from temporalio.mcp import MCPPlugin

    return MCPPlugin({name: client_factory(spec) for name, spec in servers.items()})


@activity.defn(name=UNRESOLVED_COMPENSATION_ACTIVITY)
async def compensation_unresolved(request: CompensationRequest) -> None:
    """Fails (non-retryable) with why an MCP compensation could not be built; the saga records it."""
    raise ApplicationError(request.reason, type=errors.MCP_COMPENSATION_UNRESOLVED, non_retryable=True)


# --------------------------------------------------------------------------- breakers


def _server_of(activity_type: str) -> str | None:
    if not activity_type.startswith(ACTIVITY_PREFIX):
        return None
    return activity_type[len(ACTIVITY_PREFIX) :].rsplit(".", 1)[0]


def _is_transport_failure(exc: BaseException) -> bool:
    if isinstance(exc, ApplicationError):
        code = exc.details[0] if exc.details else None
        return exc.type == "MCPProtocolError" and code in _TRANSPORT_CODES
    return not isinstance(exc, asyncio.CancelledError)


class _BreakerInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, servers: Mapping[str, MCPServerSpec]) -> None:
        super().__init__(next)
        self._servers = servers

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        server = _server_of(activity.info().activity_type)
        spec = self._servers.get(server) if server else None
        if spec is None:
            return await self.next.execute_activity(input)
        breaker = MCP_BREAKERS.get(f"mcp:{spec.name}", spec.breaker_fail_max, spec.breaker_reset_s)
        if not breaker.admit():
            wait = max(breaker.seconds_until_half_open(), 1.0)
            raise ApplicationError(
                f"MCP server {spec.name!r}: circuit breaker open, next probe in {wait:.0f}s",
                type=errors.CIRCUIT_OPEN,
                next_retry_delay=_seconds(wait),
            )
        try:
            result = await self.next.execute_activity(input)
        except asyncio.CancelledError:
            breaker.release()  # no verdict on the server: the run cancelled the call
            raise
        except BaseException as exc:
            if not _is_transport_failure(exc):
                breaker.record_success()  # the server answered, with an error
                raise
            breaker.record_failure()
            log.warning("MCP server unavailable", server=spec.name, error=repr(exc))
            raise ApplicationError(
                f"MCP server {spec.name!r} unavailable: {_describe(exc)}", type=errors.MCP_UNAVAILABLE
            ) from None
        breaker.record_success()
        _fail_compensation_error(input.args, result)
        return result


def _fail_compensation_error(args: Any, result: Any) -> None:
    """A compensating call whose tool answered `isError` did not undo anything: fail it, visibly."""
    request = args[0] if args else None
    meta = request.get("meta") if isinstance(request, dict) else None
    if (
        isinstance(result, dict)
        and result.get("is_error")
        and isinstance(meta, dict)
        and COMPENSATION_META in meta
    ):
        texts = [c.get("text", "") for c in result.get("content") or [] if isinstance(c, dict)]
        raise ApplicationError(
            f"compensation {request.get('name')} reported an error: {' '.join(texts) or 'no message'}",
            type=errors.TOOL_FAILED,
            non_retryable=True,
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


class MCPBreakerInterceptor(Interceptor):
    """Puts each MCP server's circuit breaker around its temporalio-mcp activities."""

    def __init__(self, servers: Mapping[str, MCPServerSpec]) -> None:
        """Guard the activities of `servers` (activities of other servers pass untouched)."""
        self.servers = dict(servers)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap the activity inbound chain (called by the worker)."""
        return _BreakerInbound(next, self.servers)


# --------------------------------------------------------------------------- keel teams


async def list_tools_now(spec: MCPServerSpec) -> Any:
    """The server's tools, asked now (for `keel teams`; runs list them through their activities)."""
    async with client_factory(spec)() as client:
        return await client.list_tools()
