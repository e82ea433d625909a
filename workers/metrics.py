"""Worker metrics: the Prometheus endpoint of the Temporal runtime, and custom instruments on it.

Temporal's SDK exports its own worker metrics (task latencies, slots, polls)
through the `Runtime`. Platform code records its own figures (circuit-breaker
state, for instance) through the same meter, so one `/metrics` endpoint
serves both:

    from agentkeel.workers import metrics

    metrics.gauge("keel_breaker_state", "0 closed, 1 half-open, 2 open").set(2, {"provider": "openai"})
    metrics.counter("keel_breaker_trips").add(1, {"provider": "openai"})

Without `--metrics` the runtime's meter is a no-op, so recording is always safe.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TypeAlias

from temporalio.common import MetricCounter, MetricGaugeFloat, MetricHistogramFloat, MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

Attributes: TypeAlias = Mapping[str, str | int | float | bool]
"""Metric labels, e.g. `{"provider": "openai"}`."""

_lock = threading.Lock()
_runtime: Runtime | None = None
_instruments: dict[tuple[str, str], object] = {}


class MetricsBindError(ValueError):
    """`--metrics` is not `HOST:PORT`, or the address cannot be bound."""


def parse_bind(text: str) -> tuple[str, int]:
    """Split `HOST:PORT` (or `:PORT`, meaning 127.0.0.1) into its parts.

    Raises:
        MetricsBindError: the text is not a host and a port in 1..65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise MetricsBindError(f"--metrics expects HOST:PORT, got {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port_text)


def build_runtime(bind: str) -> Runtime:
    """A Temporal runtime serving Prometheus metrics at `http://<bind>/metrics`, made current for this module.

    Args:
        bind: `HOST:PORT` to listen on.

    Raises:
        MetricsBindError: bad address, or the port is taken.
    """
    host, port = parse_bind(bind)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=address, durations_as_seconds=True)
            )
        )
    except Exception as exc:  # the core raises a bare RuntimeError when the bind fails
        raise MetricsBindError(f"cannot serve metrics on {address}: {exc}") from None
    use_runtime(runtime)
    return runtime


def use_runtime(runtime: Runtime | None) -> None:
    """Record custom metrics through `runtime` from now on (None: back to the default runtime)."""
    global _runtime
    with _lock:
        _runtime = runtime
        _instruments.clear()


def meter() -> MetricMeter:
    """The meter custom metrics go to: the worker's runtime, else Temporal's default runtime."""
    return (_runtime or Runtime.default()).metric_meter


def _instrument(kind: str, name: str, description: str | None, unit: str | None) -> object:
    with _lock:
        found = _instruments.get((kind, name))
        if found is None:
            create = getattr(meter(), f"create_{kind}")
            found = _instruments[(kind, name)] = create(name, description, unit)
        return found


def gauge(name: str, description: str | None = None, unit: str | None = None) -> MetricGaugeFloat:
    """A float gauge (created once per name); `.set(value, {"label": "value"})` records it."""
    return _instrument("gauge_float", name, description, unit)  # type: ignore[return-value]


def counter(name: str, description: str | None = None, unit: str | None = None) -> MetricCounter:
    """A counter (created once per name); `.add(n, {"label": "value"})` records it."""
    return _instrument("counter", name, description, unit)  # type: ignore[return-value]


def histogram(name: str, description: str | None = None, unit: str | None = None) -> MetricHistogramFloat:
    """A float histogram (created once per name); `.record(value, {"label": "value"})` records it."""
    return _instrument("histogram_float", name, description, unit)  # type: ignore[return-value]


def set_gauge(name: str, value: float, attributes: Attributes | None = None) -> None:
    """Set a gauge in one call: `set_gauge("keel_breaker_state", 2, {"provider": "openai"})`."""
    gauge(name).set(value, attributes)


def add_counter(name: str, value: int = 1, attributes: Attributes | None = None) -> None:
    """Add to a counter in one call."""
    counter(name).add(value, attributes)
