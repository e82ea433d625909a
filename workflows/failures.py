"""What went wrong in an activity, unwrapped once for every workflow module.

Temporal wraps an activity's failure in `ActivityError` (and a child workflow's
or a retried one's in further layers); the workflow decides by the innermost
`ApplicationError`'s type and shows people its message.
"""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError


class Halt(Exception):
    """Ends the agent loop: the saga compensates and the run ends with `reason`.

    Attributes:
        reason: Why the run stops, as shown in its result and in `status`.
        rejected: A person rejected a review (the run ends Rejected or Compensated, not Failed).
    """

    def __init__(self, reason: str, *, rejected: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rejected = rejected


def innermost(exc: BaseException) -> BaseException:
    """The first failure below the `ActivityError` layers (the error itself when it is not one)."""
    inner = exc
    while isinstance(inner, ActivityError) and inner.cause is not None:
        inner = inner.cause
    return inner


def application_cause(exc: BaseException) -> ApplicationError | None:
    """The `ApplicationError` an activity raised (or Temporal raised for it), if that is the cause."""
    inner = innermost(exc)
    return inner if isinstance(inner, ApplicationError) else None


def describe_failure(exc: BaseException) -> str:
    """`<error type>: <message>` of the innermost failure, for results, logs and `status`."""
    inner = innermost(exc)
    if isinstance(inner, ApplicationError):
        return f"{inner.type or 'ApplicationError'}: {inner.message}"
    return f"{type(inner).__name__}: {inner}"
