"""The exit codes of every `keel` command: one table, used by every command and shown by `keel --help`.

Scripts branch on these numbers, so they never change meaning. The README's
table is this module's `TABLE`; a test keeps the two equal.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a `keel` command's exit status means (the same in every command)."""

    OK = 0
    """The command did what was asked (for `watch` and `start --wait`: the run completed its goal)."""
    GOAL_NOT_REACHED = 1
    """The run ended without reaching its goal: Rejected, Compensated, Failed, Cancelled, Terminated."""
    BAD_INPUT = 2
    """Usage error or invalid input: arguments, JSON, team file, `keel.toml`, a goal over the size limit."""
    NOT_FOUND = 3
    """No run has this workflow id (or, for `keel ping`, no such namespace)."""
    UNREACHABLE = 4
    """The Temporal server cannot be reached."""
    CONFLICT = 5
    """The run's state does not allow it: it has ended, waits for no review, its id is taken,
    or the run's validator refused the decision."""
    NO_WORKER = 6
    """No worker answered in time, or the run is stuck (its workflow task keeps failing)."""
    SERVICE_FAILED = 7
    """A local service could not start or died: a port in use, the dev server exited."""
    INTERNAL = 70
    """A bug in keel: the traceback is printed; please report it."""
    INTERRUPTED = 130
    """Ctrl-C."""


TABLE: tuple[tuple[int, str], ...] = (
    (ExitCode.OK, "success (watch, start --wait: the run completed)"),
    (ExitCode.GOAL_NOT_REACHED, "the run ended without reaching its goal (rejected, compensated, failed...)"),
    (ExitCode.BAD_INPUT, "bad input or usage (arguments, JSON, team file, keel.toml, size limits)"),
    (ExitCode.NOT_FOUND, "no run with that workflow id"),
    (ExitCode.UNREACHABLE, "the Temporal server cannot be reached"),
    (
        ExitCode.CONFLICT,
        "the run's state or policy does not allow it (ended, no review pending, id taken, decision refused)",
    ),
    (ExitCode.NO_WORKER, "no worker answered, or the run is stuck (its workflow task keeps failing)"),
    (ExitCode.SERVICE_FAILED, "a local service could not start or died (port in use...)"),
    (ExitCode.INTERNAL, "a bug in keel (traceback printed)"),
    (ExitCode.INTERRUPTED, "interrupted (Ctrl-C)"),
)
"""`(code, meaning)` rows, in the order `keel --help` and the README list them."""


def help_text() -> str:
    """The exit-code table as shown at the end of `keel --help`."""
    lines = ["exit codes (the same for every command):"]
    lines += [f"  {int(code):>3}  {meaning}" for code, meaning in TABLE]
    return "\n".join(lines)


def markdown_table() -> str:
    """The exit-code table as the README shows it."""
    lines = ["| code | meaning |", "| --- | --- |"]
    lines += [f"| {int(code)} | {meaning} |" for code, meaning in TABLE]
    return "\n".join(lines)
