"""`keel llm`: run the offline OpenAI-compatible LLM provider in the foreground.

Examples::

    keel llm                                   # 127.0.0.1:8900 (or KEEL_LLM_HOST / KEEL_LLM_PORT)
    keel llm --port 8900 --control-port 8901 --scenario my-team.yaml
    keel llm --latency-ms 200 --error-rate 500=0.2 --error-rate 429=0.1 --retry-after 2 --seed 7
    keel llm --down --down-mode refuse --control-port 8901   # start down; recover with PUT /_control/faults
    keel llm --no-journal-bodies               # journal message counts and sizes only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentkeel.app import AppError
from agentkeel.settings import Settings
from agentkeel.starters.cli_common import CliError, load_cli_settings
from agentkeel.starters.exit_codes import ExitCode
from agentkeel.validation import format_validation_error


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `llm` to the `keel` parser."""
    parser = subparsers.add_parser(
        "llm",
        help="run the offline OpenAI-compatible LLM provider (scripted answers, fault injection)",
        description="Run the offline OpenAI-compatible LLM provider: POST /v1/chat/completions, "
        "GET /v1/models, and the control API under /_control/ (faults, journal, reset).",
    )
    parser.add_argument(
        "--host", default=None, help="address to bind (default: settings llm_host, 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=None, help="API port (default: settings llm_port, 8900)")
    parser.add_argument(
        "--control-port",
        type=int,
        default=None,
        help="also serve /_control/* on this port, which stays up while the API port refuses connections",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="scenario file or folder (repeatable), matched before the apps' scenarios",
    )
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="MODULE[:ATTR]",
        help="also load this app's scenarios (repeatable; the apps of keel.toml / KEEL_APPS are loaded too)",
    )
    parser.add_argument(
        "--no-builtin-scenarios",
        action="store_true",
        help="load only --scenario files, not the scenarios of the configured apps",
    )
    parser.add_argument(
        "--no-journal-bodies",
        action="store_true",
        help="journal each request's message count and size, not its body (long conversations, benchmarks)",
    )
    _add_fault_flags(parser)
    parser.set_defaults(func=_llm)


def _add_fault_flags(parser: argparse.ArgumentParser) -> None:
    """The fault-injection flags (the fields of `FaultConfig` a command line sets)."""
    faults = parser.add_argument_group("fault injection (change at run time with PUT /_control/faults)")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="delay before every /v1 answer")
    faults.add_argument(
        "--error-rate",
        action="append",
        default=[],
        metavar="STATUS=P",
        help="answer STATUS with probability P (repeatable), e.g. 500=0.2",
    )
    faults.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds of 429 answers")
    faults.add_argument("--seed", type=int, default=0, help="seed of the error-rate draws")
    faults.add_argument("--hang", action="store_true", help="never answer /v1 requests")
    faults.add_argument("--down", action="store_true", help="start down (see --down-mode)")
    faults.add_argument(
        "--down-mode",
        choices=["drop", "refuse"],
        default="drop",
        help="down means: drop = close connections without answering, refuse = refuse connections",
    )
    faults.add_argument(
        "--fail-next",
        type=int,
        action="append",
        default=[],
        metavar="STATUS",
        help="answer the next request(s) with STATUS",
    )


def fault_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The `FaultConfig` fields given by the command-line flags.

    Raises:
        CliError: a malformed `--error-rate`.
    """
    from agentkeel.dev.offline.faults import parse_error_rate

    rates: dict[int, float] = {}
    for text in args.error_rate:
        try:
            code, rate = parse_error_rate(text)
        except ValueError as exc:
            raise CliError(f"--error-rate: {exc}") from None
        rates[code] = rate
    return {
        "latency_ms": args.latency_ms,
        "error_rates": rates,
        "retry_after_s": args.retry_after,
        "seed": args.seed,
        "hang": args.hang,
        "down": args.down,
        "down_mode": args.down_mode,
        "fail_next": args.fail_next,
    }


def _raise_fd_limit() -> None:
    # Benchmarks hold ~1,000 connections open at once: lift the soft descriptor limit to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
            )


def _app_scenarios(args: argparse.Namespace, settings: Settings) -> list[Path]:
    """Scenario files of `--app` and of the configured apps (none with `--no-builtin-scenarios`)."""
    from agentkeel.app import resolve_apps

    apps = list(args.app) + ([] if args.no_builtin_scenarios else list(settings.apps))
    return [Path(p) for app in resolve_apps(apps) for p in app.scenarios]


async def _llm(args: argparse.Namespace) -> int:
    from agentkeel.dev.offline.faults import FaultConfig
    from agentkeel.dev.offline.scenarios import ScenarioError
    from agentkeel.dev.offline.server import OfflineProvider

    settings = load_cli_settings()
    try:
        faults = FaultConfig.model_validate(fault_fields(args))
    except ValidationError as exc:
        raise CliError(f"invalid fault flags: {format_validation_error(exc)}") from None
    try:
        provider = OfflineProvider(
            host=args.host or settings.llm_host,
            port=args.port if args.port is not None else settings.llm_port,
            control_port=args.control_port,
            scenario_paths=[*args.scenario, *_app_scenarios(args, settings)],
            faults=faults,
            journal_bodies=not args.no_journal_bodies,
        )
    except (ScenarioError, AppError) as exc:
        raise CliError(str(exc)) from None
    _raise_fd_limit()
    try:
        await provider.start()
    except OSError as exc:
        raise CliError(f"cannot listen: {exc.strerror or exc}", ExitCode.SERVICE_FAILED) from None

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await provider.stop()
    return 0
