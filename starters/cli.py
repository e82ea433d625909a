"""The `keel` command line: one entry point, one module per group of sub-commands.

Each command module exposes `register(subparsers)`, which adds its sub-commands
and sets `func` (a callable taking the parsed args and returning an exit code,
or a coroutine function doing so).

Every command leaves through `os._exit` after flushing its output: a process
that used a Temporal client can abort at interpreter exit (sdk-python #300),
which would make exit codes untrustworthy.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

# Modules holding sub-commands; each has `register(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = (
    "starters.cmd_stack",
    "starters.cmd_llm",
    "starters.cmd_runs",
    "starters.cmd_demo",
    "starters.cmd_codec",
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2 unless given."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (the `--help` text stays complete)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full `keel` parser with every available sub-command."""
    parser = _Parser(
        prog="keel",
        description="agentkeel: durable workflows for LLM agents on Temporal.",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "console"],
        default=None,
        help="log rendering (default: console on a TTY, JSON otherwise)",
    )
    parser.add_argument("--log-level", default=None, help="log level (default INFO or KEEL_LOG_LEVEL)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command group not built yet
            raise
        module.register(subparsers)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the command, and return its exit code (never raises for user errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or usage error (2)
        return int(exc.code or 0)
    from agentkeel.logs import configure_logging

    configure_logging(fmt=args.log_format, level=args.log_level)
    try:
        result = args.func(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except CliError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return exc.code
    except ConnectionError as exc:  # TemporalUnavailable and friends: one line, no stack trace
        print(f"keel: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        # Configuration errors (keel.toml, KEEL_* variables, the encryption key) are ValueErrors
        # raised before any work is done.
        from agentkeel.codec import CodecConfigError
        from agentkeel.settings import ConfigError

        if not isinstance(exc, ConfigError | CodecConfigError):
            raise
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main() -> None:
    """Console-script entry point: run, flush, and leave with `os._exit`."""
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
