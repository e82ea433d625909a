"""Fault injection of the offline provider: what goes wrong, and when.

The configuration is one `FaultConfig`, set at start (`keel llm` flags) and
replaced at run time (`PUT /_control/faults`). Faults apply to `/v1/*` paths
only, in this order:

1. `down`: `drop` reads the request and closes the connection without an
   answer; `refuse` closes the API socket, so connections are refused.
2. `hang`: the request is read and never answered (until the client leaves).
3. `latency_ms`: a delay before any answer, errors included.
4. `fail_next`: a queue of status codes answered by the next requests, in order.
5. `error_rates`: per status code probabilities, drawn from a RNG seeded with
   `seed` (re-seeded whenever the configuration is replaced), so a given
   sequence of requests always meets the same faults.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_CONTEXT_LIMIT_CHARS = 200_000
"""Requests whose message text is longer than this answer 400 `context_length_exceeded`."""


class FaultConfig(BaseModel):
    """The faults the provider injects; every field's default means "no fault"."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0.0, ge=0)
    error_rates: dict[int, float] = Field(default_factory=dict)
    """Status code -> probability per request; the probabilities add up to at most 1."""
    retry_after_s: float = Field(default=1.0, ge=0)
    """Sent as `Retry-After` (and `x-ratelimit-reset-requests`) on 429 answers."""
    hang: bool = False
    down: bool = False
    down_mode: Literal["drop", "refuse"] = "drop"
    seed: int = 0
    fail_next: list[int] = Field(default_factory=list)
    context_limit_chars: int = Field(default=DEFAULT_CONTEXT_LIMIT_CHARS, gt=0)

    @field_validator("error_rates")
    @classmethod
    def _rates(cls, rates: dict[int, float]) -> dict[int, float]:
        for code, rate in rates.items():
            if not 400 <= code <= 599:
                raise ValueError(f"error rate for {code}: status must be 400-599")
            if not 0 <= rate <= 1:
                raise ValueError(f"error rate for {code}: {rate} is not a probability")
        if sum(rates.values()) > 1 + 1e-9:
            raise ValueError("error rates add up to more than 1")
        return dict(sorted(rates.items()))

    @field_validator("fail_next")
    @classmethod
    def _codes(cls, codes: list[int]) -> list[int]:
        bad = [c for c in codes if not 400 <= c <= 599]
        if bad:
            raise ValueError(f"fail_next statuses must be 400-599, got {bad}")
        return codes

    def public(self) -> dict[str, Any]:
        """As JSON for `GET /_control/faults` (status codes as string keys)."""
        data = self.model_dump(mode="json")
        data["error_rates"] = {str(k): v for k, v in self.error_rates.items()}
        return data


@dataclass(frozen=True)
class Decision:
    """What to do with one `/v1/*` request before (or instead of) answering it."""

    action: Literal["answer", "error", "hang", "drop", "refuse"]
    latency_s: float = 0.0
    status: int | None = None


class FaultState:
    """The live configuration, its seeded RNG and its `fail_next` queue."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.config = FaultConfig()
        self._rng = random.Random(0)
        self._fail_next: deque[int] = deque()
        self.replace(config or FaultConfig())

    def replace(self, config: FaultConfig) -> None:
        """Install a new configuration; re-seeds the RNG and refills the `fail_next` queue."""
        self.config = config
        self._rng = random.Random(config.seed)
        self._fail_next = deque(config.fail_next)

    def public(self) -> dict[str, Any]:
        """The configuration as JSON, with what is left of the `fail_next` queue."""
        data = self.config.public()
        data["fail_next"] = list(self._fail_next)
        return data

    def decide(self) -> Decision:
        """Draw the fate of the next `/v1/*` request (consumes `fail_next` and the RNG)."""
        cfg = self.config
        if cfg.down:
            return Decision(action="drop" if cfg.down_mode == "drop" else "refuse")
        if cfg.hang:
            return Decision(action="hang")
        latency = cfg.latency_ms / 1000
        if self._fail_next:
            return Decision(action="error", latency_s=latency, status=self._fail_next.popleft())
        if cfg.error_rates:
            # Exactly one draw per request: the n-th request meets the same fate on every run.
            draw = self._rng.random()
            cumulative = 0.0
            for code, rate in cfg.error_rates.items():
                cumulative += rate
                if draw < cumulative:
                    return Decision(action="error", latency_s=latency, status=code)
        return Decision(action="answer", latency_s=latency)


def parse_error_rate(text: str) -> tuple[int, float]:
    """Parse a `--error-rate` value such as `500=0.2`.

    Raises:
        ValueError: not `STATUS=PROBABILITY`.
    """
    code, sep, rate = text.partition("=")
    if not sep:
        raise ValueError(f"expected STATUS=PROBABILITY, got {text!r}")
    try:
        return int(code), float(rate)
    except ValueError:
        raise ValueError(f"expected STATUS=PROBABILITY, got {text!r}") from None
