"""Provider errors -> `ApplicationError`s with the stable types of `agentkeel.errors`.

| what the provider did                      | type                | retry                                |
| ------------------------------------------ | ------------------- | ------------------------------------ |
| 429                                        | `LLMRateLimited`    | yes, after `Retry-After` / reset hdr |
| 5xx, 408, 409, timeout, connection error   | `LLMUnavailable`    | yes, the retry policy's backoff      |
| 400/401/403/404/422 (any other 4xx)        | `LLMBadRequest`     | no                                   |
| ... saying the context is too long         | `LLMContextTooLong` | no                                   |

Only provider failures (5xx, 408, timeouts, connection errors) count towards a
provider's circuit breaker: a 4xx or a 429 proves the provider is up.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from datetime import timedelta

import openai
from temporalio.exceptions import ApplicationError

from agentkeel import errors

MAX_RETRY_AFTER_S = 300.0
"""A longer wait asked by a provider is capped: the workflow's outage handling takes over from there."""
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_RESET_HEADERS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
_CONTEXT_HINTS = ("context_length", "context length", "context window", "maximum context")


def parse_duration(text: str) -> float | None:
    """Seconds in `"2"`, `"1.5"`, `"2s"`, `"1m30s"`, `"250ms"` or `"1h2m3s"`; None when not a duration."""
    text = text.strip().lower()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        value = sum(float(n) * _UNIT_S[u] for n, u in parts)
    return value if math.isfinite(value) and value >= 0 else None


def parse_retry_after(value: str, now: float | None = None) -> float | None:
    """Seconds of a `Retry-After` value: delta-seconds or an HTTP date (RFC 9110)."""
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """How long the provider asks callers to wait, capped at `MAX_RETRY_AFTER_S`.

    Reads `retry-after-ms`, then `Retry-After` (seconds or HTTP date), then the longest of
    `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (`"2s"`, `"1m30s"`, `"250ms"`).
    Header names are matched case-insensitively. None when there is no usable header.
    """
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    wait: float | None = None
    if lower.get("retry-after-ms"):
        ms = parse_duration(lower["retry-after-ms"])
        wait = ms / 1000 if ms is not None else None
    if wait is None and lower.get("retry-after"):
        wait = parse_retry_after(lower["retry-after"], now)
    if wait is None:
        resets = [parse_duration(lower[h]) for h in _RESET_HEADERS if lower.get(h)]
        found = [r for r in resets if r is not None]
        wait = max(found) if found else None
    return None if wait is None else min(wait, MAX_RETRY_AFTER_S)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an openai error, None for transport errors."""
    return exc.status_code if isinstance(exc, openai.APIStatusError) else None


def is_provider_failure(exc: BaseException) -> bool:
    """Whether `exc` says the provider is unwell: counts towards its breaker, and the chain fails over."""
    if isinstance(exc, openai.APIConnectionError):  # timeouts included
        return True
    if isinstance(exc, openai.APIResponseValidationError):  # garbage instead of a completion
        return True
    status = status_of(exc)
    return status is not None and (status >= 500 or status == 408)


def is_context_too_long(exc: openai.APIError) -> bool:
    """Whether a 4xx says the conversation does not fit the model's context window."""
    if (exc.code or "") == "context_length_exceeded":
        return True
    text = f"{exc.code or ''} {exc.message or ''}".lower()
    return any(hint in text for hint in _CONTEXT_HINTS)


def _reason(exc: openai.APIStatusError) -> str:
    # The client's message is "Error code: 429 - {whole body}"; the body's own message reads better.
    body = exc.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message


def to_application_error(exc: BaseException, provider: str, model: str) -> ApplicationError:
    """The `ApplicationError` the `call_llm` activity raises for an error of `provider`.

    The details carry `{"provider", "model", "status"}` (never a key or a request body).
    """
    status = status_of(exc)
    where = f"{provider}:{model}"
    details = {"provider": provider, "model": model, "status": status}
    if isinstance(exc, openai.APITimeoutError):
        return ApplicationError(f"{where} timed out", details, type=errors.LLM_UNAVAILABLE)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return ApplicationError(
            f"{where} unreachable: {type(cause).__name__}: {cause}", details, type=errors.LLM_UNAVAILABLE
        )
    if isinstance(exc, openai.APIStatusError):
        message = f"{where} answered {exc.status_code}: {_reason(exc)}"
        if exc.status_code == 429:
            wait = retry_after_seconds(exc.response.headers)
            return ApplicationError(
                message,
                details,
                type=errors.LLM_RATE_LIMITED,
                next_retry_delay=timedelta(seconds=wait) if wait else None,
            )
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return ApplicationError(message, details, type=errors.LLM_UNAVAILABLE)
        if is_context_too_long(exc):
            return ApplicationError(message, details, type=errors.LLM_CONTEXT_TOO_LONG, non_retryable=True)
        return ApplicationError(message, details, type=errors.LLM_BAD_REQUEST, non_retryable=True)
    # Malformed answers and anything else from the client library: the provider's fault, retry.
    return ApplicationError(f"{where}: {type(exc).__name__}: {exc}", details, type=errors.LLM_UNAVAILABLE)
