"""Circuit breakers: one pybreaker `CircuitBreaker` per LLM provider, shared by every activity of a worker.

pybreaker's own async support drives tornado coroutines, so the `call_llm`
activity does not hand it the request. It asks `ProviderBreaker.admit()` before
sending, and reports the outcome afterwards with `record_success()` or
`record_failure()`; both run a tiny synchronous marker through
`CircuitBreaker.call`, so pybreaker's state machine, counters and listeners do
all the accounting:

* closed -> open after `fail_max` provider failures in a row;
* open -> half-open once `reset_timeout` has passed (checked by `admit()`);
* half-open -> closed after a successful probe, -> open again after a failed one.

Only provider failures (5xx, timeouts, connection errors) are recorded as
failures. A 4xx or a 429 answer proves the provider is up and counts as a
success, as an excluded exception would in pybreaker. While half-open, one
probe is in flight at a time; other calls treat the breaker as open.

Every state change is logged and exported as metrics through the worker's
Temporal runtime meter: the gauge `keel_llm_breaker_state{provider}` (0 closed,
1 half-open, 2 open) and the counter `keel_llm_breaker_transitions{provider,from,to}`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pybreaker
from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.runtime import Runtime

from agentkeel.logs import get_logger

log = get_logger(__name__)

STATE_GAUGE = "keel_llm_breaker_state"
TRANSITIONS_COUNTER = "keel_llm_breaker_transitions"
STATE_VALUES: dict[str, int] = {
    pybreaker.STATE_CLOSED: 0,
    pybreaker.STATE_HALF_OPEN: 1,
    pybreaker.STATE_OPEN: 2,
}
"""Gauge value of each state."""

MeterSource = Callable[[], MetricMeter | None]


class _ProviderFailure(Exception):
    """Stands for a failed request inside pybreaker's accounting."""


def _succeed() -> None:
    return None


def _fail() -> None:
    raise _ProviderFailure


def current_meter() -> MetricMeter | None:
    """The meter of the worker running the current activity, else the default runtime's (no-op without
    a metrics exporter)."""
    try:
        if activity.in_activity():
            runtime = activity.client().service_client.config.runtime
            if runtime is not None:
                return runtime.metric_meter
    except RuntimeError:  # no client in this activity context (ActivityEnvironment)
        pass
    try:
        return Runtime.default().metric_meter
    except Exception:  # pragma: no cover - metrics must never break a call
        return None


class StateListener(pybreaker.CircuitBreakerListener):
    """Logs every state change of a provider's breaker and exports it as metrics."""

    def __init__(self, provider: str, meter: MeterSource = current_meter) -> None:
        """Listen for `provider`'s breaker; `meter` gives the meter to record through (None: skip)."""
        self.provider = provider
        self._meter = meter
        self.changes: list[tuple[str | None, str]] = []
        """Every `(old, new)` state change, oldest first (for tests and `keel` diagnostics)."""

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        """Called by pybreaker after each transition."""
        old = old_state.name if old_state is not None else None
        new = new_state.name
        self.changes.append((old, new))
        level = log.warning if new == pybreaker.STATE_OPEN else log.info
        level(
            "llm circuit breaker state change",
            provider=self.provider,
            old_state=old,
            new_state=new,
            fail_counter=cb.fail_counter,
            reset_timeout_s=cb.reset_timeout,
        )
        export_state(self.provider, new, old, meter=self._meter())


def export_state(provider: str, state: str, old: str | None = None, *, meter: MetricMeter | None) -> None:
    """Set the state gauge (and count the transition when `old` is given); never raises."""
    if meter is None:
        return
    try:
        meter.create_gauge_float(
            STATE_GAUGE, "LLM provider circuit breaker: 0 closed, 1 half-open, 2 open"
        ).set(STATE_VALUES.get(state, -1), {"provider": provider})
        if old is not None:
            meter.create_counter(TRANSITIONS_COUNTER, "LLM circuit breaker state changes").add(
                1, {"provider": provider, "from": old, "to": state}
            )
    except Exception as exc:  # metrics must never fail an LLM call
        log.debug("breaker metrics not recorded", provider=provider, error=str(exc))


class ProviderBreaker:
    """The circuit breaker of one provider.

    Args:
        provider: The provider's name (labels logs and metrics).
        fail_max: Provider failures in a row that open the breaker.
        reset_timeout_s: Seconds the breaker stays open before a probe is let through.
        meter: Where metrics go (default: the current worker's runtime meter).
    """

    def __init__(
        self, provider: str, fail_max: int, reset_timeout_s: float, meter: MeterSource = current_meter
    ) -> None:
        self.provider = provider
        self.listener = StateListener(provider, meter)
        self.cb = pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_timeout_s, name=provider, listeners=[self.listener]
        )
        self._probe_since: float | None = None
        self._lock = threading.RLock()
        export_state(provider, pybreaker.STATE_CLOSED, meter=meter())

    @property
    def state(self) -> str:
        """`closed`, `open` or `half-open`."""
        return self.cb.current_state

    @property
    def fail_max(self) -> int:
        """Failures in a row that open the breaker."""
        return self.cb.fail_max

    @property
    def reset_timeout_s(self) -> float:
        """Seconds the breaker stays open."""
        return float(self.cb.reset_timeout)

    def configure(self, fail_max: int, reset_timeout_s: float) -> None:
        """Apply new settings (a worker rebuilt its activities with a changed `keel.toml`)."""
        self.cb.fail_max = fail_max
        self.cb.reset_timeout = reset_timeout_s

    def seconds_until_half_open(self) -> float:
        """Time left before the breaker lets a probe through: 0 unless it is open."""
        opened_at = self.cb._state_storage.opened_at  # pybreaker keeps it in its storage only
        if self.state != pybreaker.STATE_OPEN or opened_at is None:
            return 0.0
        elapsed = (datetime.now(UTC) - opened_at).total_seconds()
        return max(0.0, self.reset_timeout_s - elapsed)

    def admit(self) -> bool:
        """Whether a request may go to the provider now.

        Moves an open breaker whose reset timeout has passed to half-open, and reserves the
        single probe of a half-open breaker: the caller must then report the outcome
        (`record_success`, `record_failure` or `release`).
        """
        with self._lock:
            state = self.state
            if state == pybreaker.STATE_CLOSED:
                return True
            if state == pybreaker.STATE_OPEN:
                if self.seconds_until_half_open() > 0:
                    return False
                self.cb.half_open()
            if self._probe_since is not None and time.monotonic() - self._probe_since < self._probe_lease_s():
                return False  # one probe at a time
            self._probe_since = time.monotonic()
            return True

    def record_success(self) -> None:
        """The provider answered (a completion, a 4xx or a 429): closes a half-open breaker."""
        with self._lock:
            self._probe_since = None
            if self.state == pybreaker.STATE_OPEN:
                return  # a request that left before the breaker opened: stale news
            self.cb.call(_succeed)

    def record_failure(self) -> None:
        """The provider failed (5xx, timeout, connection error): counts towards opening the breaker."""
        with self._lock:
            self._probe_since = None
            if self.state == pybreaker.STATE_OPEN:
                return  # already open; do not push the half-open time further out
            with contextlib.suppress(_ProviderFailure, pybreaker.CircuitBreakerError):
                self.cb.call(_fail)

    def release(self) -> None:
        """Give back a probe slot without a verdict (the call was cancelled)."""
        with self._lock:
            self._probe_since = None

    def _probe_lease_s(self) -> float:
        # A probe whose activity vanished without reporting must not block the provider forever.
        return max(self.reset_timeout_s, 60.0)


class BreakerRegistry:
    """Every provider's breaker, created on first use.

    A worker process uses one registry (`PROCESS_BREAKERS` by default) so that every activity
    execution in the process shares each provider's breaker; tests make their own.
    """

    def __init__(self, meter: MeterSource = current_meter) -> None:
        """An empty registry; `meter` is where its breakers' metrics go."""
        self._breakers: dict[str, ProviderBreaker] = {}
        self._meter = meter
        self._lock = threading.Lock()

    def get(self, provider: str, fail_max: int, reset_timeout_s: float) -> ProviderBreaker:
        """The breaker of `provider`, created closed on first use; settings are kept up to date."""
        with self._lock:
            breaker = self._breakers.get(provider)
            if breaker is None:
                breaker = self._breakers[provider] = ProviderBreaker(
                    provider, fail_max, reset_timeout_s, self._meter
                )
            elif (breaker.fail_max, breaker.reset_timeout_s) != (fail_max, reset_timeout_s):
                breaker.configure(fail_max, reset_timeout_s)
            return breaker

    def states(self) -> dict[str, str]:
        """Provider name -> breaker state."""
        return {name: b.state for name, b in self._breakers.items()}

    def __getitem__(self, provider: str) -> ProviderBreaker:
        return self._breakers[provider]


PROCESS_BREAKERS = BreakerRegistry()
"""The breakers of this worker process."""
