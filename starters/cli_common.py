"""Plumbing every `keel` command shares: errors and their exit codes, settings, the connection, output.

One module, so that the same situation prints the same line and exits the same way in
every command: `CliError` for a user's mistake, `error_code` for the starter API's
errors, `errors` for Temporal's raw ones, `load_cli_settings` and `connect` for the
two things that fail before any work.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from temporalio.service import RPCError

from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import ConfigError, Settings, load_settings
from agentkeel.starters.exit_codes import ExitCode
from agentkeel.starters.render import to_json

if TYPE_CHECKING:
    from agentkeel.starters.client import Keel

Handler = Callable[[argparse.Namespace], Awaitable[int]]
"""A command: parsed arguments in, exit code out."""


class CliError(Exception):
    """A user-facing error: printed as one line (JSON with `--json`), exit code `BAD_INPUT` unless given."""

    def __init__(self, message: str, code: int = ExitCode.BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def error_code(exc: BaseException) -> int | None:
    """The documented exit code of an error a user can act on; None for anything else (a bug).

    One mapping for every command, so the same situation exits the same way everywhere.
    """
    from agentkeel.codec import CodecConfigError, CodecError
    from agentkeel.starters import errors as api
    from agentkeel.store import MissingContentError, StoreError

    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, api.RunNotFound):
        return ExitCode.NOT_FOUND
    # Before InvalidInput, which these subclass for the Python API's sake.
    if isinstance(exc, api.RunEnded | api.RunStillRunning | api.RunAlreadyExists | api.ReviewRejected):
        return ExitCode.CONFLICT
    if isinstance(exc, api.TeamNotFound | api.InvalidInput):
        return ExitCode.BAD_INPUT
    if isinstance(exc, api.RunStuck | api.WorkerUnavailable):
        return ExitCode.NO_WORKER
    if isinstance(exc, api.KeelError):
        return ExitCode.GOAL_NOT_REACHED
    if isinstance(exc, ConnectionError):  # TemporalUnavailable and friends
        return ExitCode.UNREACHABLE
    if isinstance(exc, ConfigError | CodecConfigError | CodecError):
        # Configuration errors (keel.toml, KEEL_* variables, the encryption key: a payload encrypted
        # with a key this process lacks) come before any work, or stop it at once.
        return ExitCode.BAD_INPUT
    if isinstance(exc, MissingContentError):
        return ExitCode.NOT_FOUND
    if isinstance(exc, StoreError):
        return ExitCode.SERVICE_FAILED
    return None


def report_error(message: str, code: int, *, as_json: bool) -> None:
    """Print one error: a `keel: ...` line, or with `--json` one JSON object, on stderr."""
    if as_json:
        kind = ExitCode(code).name.lower() if code in ExitCode._value2member_map_ else "error"
        print(json.dumps({"error": {"message": message, "code": int(code), "kind": kind}}), file=sys.stderr)
    else:
        print(f"keel: {message}", file=sys.stderr)


def outcome_code(status: SagaStatus) -> int:
    """The exit code of a run's outcome: `OK` when it completed its goal, else `GOAL_NOT_REACHED`."""
    return ExitCode.OK if status == SagaStatus.COMPLETED else ExitCode.GOAL_NOT_REACHED


def load_cli_settings() -> Settings:
    """The settings, or a one-line `CliError` (exit `BAD_INPUT`) naming what is wrong in them."""
    try:
        return load_settings()
    except ConfigError as exc:
        raise CliError(str(exc), ExitCode.BAD_INPUT) from None


@asynccontextmanager
async def connect(settings: Settings | None = None) -> AsyncIterator[Keel]:
    """A connected `Keel`; an unreachable server becomes a one-line error (exit `UNREACHABLE`)."""
    from agentkeel.starters.client import Keel  # the client's imports are paid by commands that connect

    try:
        keel = await Keel.connect(settings=settings or load_cli_settings())
    except ConnectionError as exc:
        raise CliError(str(exc), ExitCode.UNREACHABLE) from None
    yield keel


def errors(fn: Handler) -> Handler:
    """Turn raw Temporal errors into one-line `CliError`s (the starter API's own errors are mapped
    to exit codes by `error_code`, the same for every command)."""

    @functools.wraps(fn)
    async def wrapper(args: argparse.Namespace) -> int:
        try:
            return await fn(args)
        except RPCError as exc:
            first = exc.message.strip().splitlines()[0] if exc.message.strip() else exc.status.name
            code = ExitCode.UNREACHABLE if exc.status.name == "UNAVAILABLE" else ExitCode.CONFLICT
            raise CliError(f"Temporal refused the request ({exc.status.name}): {first}", code) from None

    return wrapper


def out(text: str) -> None:
    """Print one result to stdout at once (a script reading it line by line sees it as it comes)."""
    print(text, flush=True)


def print_started(started: dict[str, Any], *, as_json: bool, note: str = "") -> None:
    """Say a run started: its JSON (`workflow_id`, `ui_url`...), or two lines for people."""
    if as_json:
        out(to_json(started))
    else:
        out(f"started {started['workflow_id']}{note}")
        out(f"ui: {started['ui_url']}")


def json_flag() -> argparse.ArgumentParser:
    """A parent parser adding `--json` (machine-readable output)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    return parent


def parse_limit(args: argparse.Namespace) -> int:
    """`--limit` as a positive whole number (checked here, so a bad value is one line, not usage)."""
    try:
        value = int(args.limit)
    except ValueError:
        raise CliError(f"--limit must be a whole number, got {args.limit!r}", ExitCode.BAD_INPUT) from None
    if value < 1:
        raise CliError(f"--limit must be at least 1, got {value}", ExitCode.BAD_INPUT)
    return value


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    """Decode a JSON object given on the command line.

    Raises:
        CliError: not JSON, or JSON that is not an object.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise CliError(f"{option} is not valid JSON: {exc.msg} ({where})", ExitCode.BAD_INPUT) from None
    if not isinstance(value, dict):
        raise CliError(f"{option} must be a JSON object, got {type(value).__name__}", ExitCode.BAD_INPUT)
    return value


def parse_metadata(items: list[str] | None) -> dict[str, str]:
    """`KEY=VALUE` pairs from repeated `--meta` options.

    Raises:
        CliError: an item without `=` or with an empty key.
    """
    metadata: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--meta wants KEY=VALUE, got {item!r}", ExitCode.BAD_INPUT)
        metadata[key.strip()] = value
    return metadata
