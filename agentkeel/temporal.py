"""Connecting to Temporal: Temporal's own env config, the pydantic data converter, clear errors.

The connection is configured the way every Temporal tool configures it
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS`,
`TEMPORAL_PROFILE` and the TOML profiles of `temporalio.envconfig`), so a
worker, the `keel` CLI and the stock `temporal` CLI point at the same server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import temporalio.client
import temporalio.runtime
from temporalio.envconfig import ClientConfig

from agentkeel.names import FRONTEND_PORT, NAMESPACE_DEFAULT

DEFAULT_ADDRESS = f"localhost:{FRONTEND_PORT}"
"""Where Temporal's SDKs connect when neither env config nor a profile names an address."""

CONNECT_TIMEOUT = timedelta(seconds=5)
"""A refused connection fails at once; this bounds the wait for an unresponsive address."""


class TemporalUnavailable(ConnectionError):
    """The Temporal server cannot be reached; the message is one line meant for people."""

    def __init__(self, address: str, namespace: str, reason: str) -> None:
        super().__init__(f"cannot reach Temporal at {address} (namespace {namespace}): {reason}")
        self.address = address
        self.namespace = namespace
        self.reason = reason


def connect_config(
    *, address: str | None = None, namespace: str | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Keyword arguments for `Client.connect` from env config, with explicit values on top.

    Args:
        address: `host:port`, overriding `TEMPORAL_ADDRESS` and the profile.
        namespace: Overrides `TEMPORAL_NAMESPACE` and the profile.
        env: Environment to read instead of `os.environ` (tests).

    Returns:
        At least `target_host` and `namespace`, plus `api_key`, `tls`, `rpc_metadata` when configured.
    """
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config(override_env_vars=env))
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", NAMESPACE_DEFAULT)
    if address:
        config["target_host"] = address
    if namespace:
        config["namespace"] = namespace
    return config


def _reason(exc: BaseException) -> str:
    """Shorten the core's transport error to what a person needs to read."""
    text = str(exc)
    lowered = text.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "timed out" in lowered or "timeout" in lowered or "deadline" in lowered:
        return "timed out"
    if "dns" in lowered or "failed to lookup" in lowered or "name or service not known" in lowered:
        return "unknown host"
    if "certificate" in lowered or "tls" in lowered or "handshake" in lowered:
        return "TLS handshake failed (plaintext server? try TEMPORAL_TLS=false)"
    if "unauthenticated" in lowered or "permission" in lowered:
        return "not authorized (check TEMPORAL_API_KEY)"
    text = re.sub(r"^Failed client connect: ", "", text)
    return text.splitlines()[0][:200] if text else type(exc).__name__


async def connect(
    *,
    address: str | None = None,
    namespace: str | None = None,
    interceptors: Sequence[temporalio.client.Interceptor] = (),
    runtime: temporalio.runtime.Runtime | None = None,
    **overrides: Any,
) -> temporalio.client.Client:
    """Connect a client the platform's way.

    Args:
        address: `host:port`; default from env config (`TEMPORAL_ADDRESS`, profiles), else localhost:7233.
        namespace: Default from env config, else `default`.
        interceptors: Client interceptors (also used by workers built on this client).
        runtime: A Temporal runtime, e.g. one that serves Prometheus metrics.
        **overrides: Any other `Client.connect` keyword (`data_converter`, `tls`, `identity`, ...).

    Returns:
        A connected client using the pydantic data converter unless overridden.

    Raises:
        TemporalUnavailable: the server does not answer.
    """
    config = connect_config(address=address, namespace=namespace)
    config.update(overrides)
    if "data_converter" not in config:
        # Every client and worker shares one codec: compression always, encryption with KEEL_ENCRYPTION_KEY.
        from agentkeel.codec import build_data_converter

        config["data_converter"] = build_data_converter()
    config.setdefault("connect_timeout", CONNECT_TIMEOUT)
    if interceptors:
        config["interceptors"] = list(interceptors)
    if runtime is not None:
        config["runtime"] = runtime
    try:
        return await temporalio.client.Client.connect(**config)
    except RuntimeError as exc:  # the core reports every connect failure as a bare RuntimeError
        raise TemporalUnavailable(config["target_host"], config["namespace"], _reason(exc)) from None


def ui_url(
    workflow_id: str | None = None,
    run_id: str | None = None,
    *,
    namespace: str | None = None,
    base: str | None = None,
) -> str:
    """Link to a run (or the namespace's workflow list) in the Temporal Web UI.

    Args:
        workflow_id: The run's workflow id; None links to the workflow list.
        run_id: A specific run; None shows the latest run of the id.
        namespace: Default `TEMPORAL_NAMESPACE` / profile, else `default`.
        base: UI base URL; default `Settings.ui_url` (`KEEL_UI_URL`, `keel.toml`).
    """
    if base is None:
        from agentkeel.settings import Settings, load_settings

        try:
            base = load_settings().ui_url
        except ValueError:
            base = Settings().ui_url
    if namespace is None:
        try:
            namespace = connect_config()["namespace"]
        except Exception:
            namespace = NAMESPACE_DEFAULT
    url = f"{base.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows"
    if workflow_id:
        url += f"/{quote(workflow_id, safe='')}"
        if run_id:
            url += f"/{quote(run_id, safe='')}"
    return url
