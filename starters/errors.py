"""The errors a user of the starter API can act on, and the one translation of Temporal's errors into them.

Every RPC the client makes runs inside `rpc_errors(...)`, which says once what a
missing run, a run that has ended, a stuck run, a worker that does not answer, a
refused update and a refused request mean; the call sites only say what they were
doing, so the messages can name it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from temporalio.client import (
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

__all__ = [
    "DecisionRefused",
    "InvalidInput",
    "KeelError",
    "ReviewRejected",
    "RunAlreadyExists",
    "RunEnded",
    "RunNotFound",
    "RunStillRunning",
    "RunStuck",
    "TeamNotFound",
    "WorkerUnavailable",
    "Rpc",
    "failure_message",
    "first_line",
    "no_worker_answered",
    "rpc_errors",
]


class KeelError(Exception):
    """Base of the errors a user can act on; the message is one line meant for people."""


class RunNotFound(KeelError):
    """No run has this workflow id in the namespace."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no run with workflow id {workflow_id!r}")
        self.workflow_id = workflow_id


class TeamNotFound(KeelError):
    """The team name is not registered (and is not a team file)."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown team {name!r} (registered teams: {listed}); or give a team file")
        self.name = name
        self.known = known


class InvalidInput(KeelError):
    """The request is malformed: a bad team file, an empty goal, arguments that are not an object..."""


class ReviewRejected(KeelError):
    """The run refused a review decision; the message is the workflow validator's reason."""


class DecisionRefused(ReviewRejected):
    """The run recorded the decision and did not apply it: the reviewer may not decide, or the
    signature is missing or wrong. `keel status` lists it under refused decisions."""


class RunStuck(KeelError):
    """The run cannot make progress: its workflow task keeps failing (a bug, a bad deployment,
    a worker without the encryption key). `worker_error` is the worker's own message, if known."""

    def __init__(self, message: str, worker_error: str | None = None) -> None:
        super().__init__(message)
        self.worker_error = worker_error


class RunAlreadyExists(KeelError):
    """A run with this workflow id is running, or has run and `reuse_id` was not given."""


class RunEnded(InvalidInput):
    """The run has already ended: it can no longer be cancelled or decided."""


class RunStillRunning(InvalidInput):
    """The run is still going: it cannot be redriven (cancel it first)."""


class WorkerUnavailable(KeelError):
    """No worker answered a query or update in time."""


def first_line(text: str) -> str:
    """The first line of a message (server and worker errors can run to many lines)."""
    return text.strip().splitlines()[0] if text.strip() else text


def failure_message(exc: BaseException) -> str:
    """The innermost message of a failure chain, which is the one that explains it.

    Temporal failures carry the original error's message in `.message`; `str()` of them
    prefixes the error type (`ValueError: ...`), which means nothing to a reviewer.
    """
    cause: BaseException | None = exc
    message = str(exc)
    while cause is not None:
        text = getattr(cause, "message", None) or str(cause)
        if text:
            message = text
        cause = cause.__cause__
    return first_line(message)


def no_worker_answered(exc: RPCError) -> bool:
    """Whether a query or update failed because no worker took it: it timed out, or the
    server said at once that no worker polled the task queue lately (a run left behind by a
    worker that is gone)."""
    if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
        return True
    return exc.status == RPCStatusCode.FAILED_PRECONDITION and "no poller" in exc.message.lower()


_SEARCH_ATTRIBUTE_HINT = " (start the server with `keel server`, which registers the Keel* attributes)"


@dataclass(frozen=True)
class Rpc:
    """What an RPC was doing, so that its errors can say so.

    Attributes:
        workflow_id: The run it addressed; a NOT_FOUND then means `RunNotFound`.
        what: What was asked, for messages: `the 'status' query of keel-travel-1`.
        no_worker: The `WorkerUnavailable` message when no worker answered; None lets such
            errors through (for calls no worker takes part in).
        refused: What the server refused on INVALID_ARGUMENT (`start`, `query`), as `InvalidInput`.
        decision: A review decision: a run that has ended, or a validator that said no, is a
            `ReviewRejected`.
    """

    workflow_id: str | None = None
    what: str = "the request"
    no_worker: str | None = None
    refused: str | None = None
    decision: bool = False


@contextmanager
def rpc_errors(rpc: Rpc) -> Iterator[None]:
    """Raise the `KeelError` a failed RPC means for people; anything else passes through unchanged.

    Raises:
        RunNotFound: the run does not exist.
        ReviewRejected: a decision for a run that has ended, or one its validator refused.
        RunStuck: the run cannot answer because its workflow task is failing.
        WorkerUnavailable: no worker answered (`rpc.no_worker` says what was asked).
        InvalidInput: the server refused the request's arguments (`rpc.refused`).
    """
    try:
        yield
    except WorkflowUpdateFailedError as exc:
        # The update's validator (or handler) said no: its reason is the message.
        raise ReviewRejected(failure_message(exc)) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        if rpc.no_worker is None:
            raise
        raise WorkerUnavailable(rpc.no_worker) from None
    except WorkflowQueryFailedError as exc:
        raise WorkerUnavailable(f"{rpc.what} failed: {exc}") from None
    except RPCError as exc:
        error = _translated(rpc, exc)
        if error is None:
            raise
        raise error from None


def _translated(rpc: Rpc, exc: RPCError) -> KeelError | None:
    message = exc.message or ""
    if exc.status == RPCStatusCode.NOT_FOUND and rpc.workflow_id is not None:
        if rpc.decision and "completed" in message.lower():
            return ReviewRejected("the run has ended; nothing to review")
        return RunNotFound(rpc.workflow_id)
    if exc.status == RPCStatusCode.INVALID_ARGUMENT and rpc.refused is not None:
        text = first_line(message)
        if rpc.refused == "start" and "search attribute" in text.lower():
            text += _SEARCH_ATTRIBUTE_HINT
        return InvalidInput(f"the server refused the {rpc.refused}: {text}")
    if (
        rpc.workflow_id is not None
        and exc.status == RPCStatusCode.FAILED_PRECONDITION
        and "failed state" in message
    ):
        return RunStuck(
            f"run {rpc.workflow_id} cannot answer: its workflow task is failing "
            "(its history in the Temporal UI shows why)"
        )
    if rpc.no_worker is not None and no_worker_answered(exc):
        return WorkerUnavailable(rpc.no_worker)
    return None
