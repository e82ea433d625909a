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
import contextlib
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from agentkeel.starters.cli_common import CliError, error_code, report_error
from agentkeel.starters.exit_codes import ExitCode, help_text

__all__ = ["COMMAND_MODULES", "CliError", "build_parser", "error_code", "main", "report_error", "run"]

# Modules holding sub-commands; each has `register(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = (
    "agentkeel.starters.cmd_stack",
    "agentkeel.starters.cmd_llm",
    "agentkeel.starters.cmd_runs",
    "agentkeel.starters.cmd_demo",
    "agentkeel.starters.cmd_codec",
    "agentkeel.starters.cmd_keys",
    "agentkeel.starters.cmd_init",
    "agentkeel.starters.cmd_store",
)


class _UsageError(Exception):
    """Raised by the parser instead of exiting, so usage errors follow `--json` like every other error."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (the `--help` text stays complete)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The full `keel` parser with every available sub-command."""
    parser = _Parser(
        prog="keel",
        description="agentkeel: durable workflows for LLM agents on Temporal.",
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    """Parse `argv`, run the command, and return its exit code (see `agentkeel.starters.exit_codes`).

    User errors are one line on stderr (one JSON object with `--json`); only a bug prints a
    traceback, and it exits `INTERNAL`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except _UsageError as exc:
        if as_json:
            report_error(str(exc), ExitCode.BAD_INPUT, as_json=True)
        else:  # already names the (sub-)command: `keel start: ...`
            print(exc, file=sys.stderr)
        return ExitCode.BAD_INPUT
    from agentkeel.logs import configure_logging

    as_json = bool(getattr(args, "json", False))
    configure_logging(fmt=args.log_format, level=args.log_level)
    try:
        result = args.func(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`keel ... | head`): nothing left to say, and nobody to say it to.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed stream until exit
        return ExitCode.OK
    except Exception as exc:
        code = error_code(exc)
        if code is None:
            traceback.print_exc()
            report_error(f"internal error: {type(exc).__name__}: {exc}", ExitCode.INTERNAL, as_json=as_json)
            return ExitCode.INTERNAL
        report_error(str(exc), code, as_json=as_json)
        return code


def main() -> None:
    """Console-script entry point: run, flush, and leave with `os._exit`."""
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
