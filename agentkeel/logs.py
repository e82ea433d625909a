"""Structured logging: structlog over the standard library, configured once per entry point.

Every record goes through one stdlib handler on the root logger, so structlog
loggers, plain `logging` loggers, and Temporal's `workflow.logger` /
`activity.logger` all render the same way, as JSON lines or for a console.

Context comes from two places:

* structlog context variables, bound around each activity execution by
  `agentkeel.workers.interceptors.ContextInterceptor` (workflow_id, run_id,
  activity_type, attempt, correlation_id), so any logger used inside an
  activity carries them;
* the `temporal_workflow` / `temporal_activity` extras that Temporal's logger
  adapters attach, flattened into top-level fields (the adapters' habit of
  also appending them to the message text is switched off: the fields are
  there already).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]

_HANDLER_NAME = "agentkeel"

# Keys of Temporal's logger-adapter extras, renamed to the platform's field names.
_RENAMES = {"workflow_run_id": "run_id"}
# Noisy third-party loggers kept at WARNING unless the level asked for is DEBUG.
_QUIET = ("httpx", "httpcore", "openai", "asyncio")


EventDict = MutableMapping[str, Any]


def _flatten_temporal_extras(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Lift `temporal_workflow` / `temporal_activity` extras into top-level fields.

    Values already in the event (bound by the interceptor or passed by the
    caller) win, so a field never appears twice with different spellings.
    """
    for key in ("temporal_workflow", "temporal_activity"):
        details = event_dict.pop(key, None)
        if isinstance(details, dict):
            for name, value in details.items():
                event_dict.setdefault(_RENAMES.get(name, name), value)
    return event_dict


def _drop_color_message(_: Any, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)
    return event_dict


def resolve_format(fmt: str | None = None) -> LogFormat:
    """Pick the rendering: the explicit choice, else `KEEL_LOG_FORMAT`/`keel.toml`, else by TTY.

    Args:
        fmt: `json`, `console`, `auto` or None.

    Returns:
        `json` or `console` (`auto` means console on a TTY, JSON otherwise).

    Raises:
        ValueError: `fmt` itself is not a known format (a bad setting falls back to `auto`:
            the settings loader reports it, logging must still work to say so).
    """
    if fmt is not None and fmt not in ("json", "console", "auto"):
        raise ValueError(f"unknown log format {fmt!r} (expected json or console)")
    choice = fmt or _setting("log_format") or "auto"
    if choice == "json" or choice == "console":
        return choice
    return "console" if sys.stderr.isatty() else "json"


def resolve_level(level: str | None = None) -> int:
    """The numeric level for `level`, else `KEEL_LOG_LEVEL`/`keel.toml`, else INFO.

    Raises:
        ValueError: `level` itself is not a level name (a bad setting falls back to INFO).
    """
    if level is not None:
        value = logging.getLevelName(level.upper())
        if not isinstance(value, int):
            raise ValueError(f"unknown log level {level!r}")
        return value
    value = logging.getLevelName((_setting("log_level") or "INFO").upper())
    return value if isinstance(value, int) else logging.INFO


def _setting(name: str) -> str | None:
    # The environment first and cheaply; the config file only if it loads cleanly,
    # because a broken keel.toml must be reported by the command, not by logging.
    value = os.environ.get(f"KEEL_{name.upper()}")
    if value:
        return value
    try:
        from agentkeel.settings import load_settings

        return str(getattr(load_settings(), name))
    except Exception:
        return None


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that never lets a broken stream reach the code that logged.

    Without a stream of its own it writes to the *current* `sys.stderr` (which tests and
    daemons swap). A logging failure inside workflow code would otherwise fail the
    workflow task, and the run would be stuck retrying it.
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        self._fixed = value if value is not sys.stderr else None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - stdlib name
        with contextlib.suppress(Exception):
            super().handleError(record)


def configure_logging(
    fmt: str | None = None, level: str | None = None, *, stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger; safe to call again (it replaces, never stacks).

    Args:
        fmt: `json`, `console`, `auto` or None (see `resolve_format`).
        level: Level name such as `INFO` or `DEBUG`; None reads `KEEL_LOG_LEVEL` or `keel.toml`.
        stream: Where lines go; default standard error (stdout stays for command output).
    """
    rendering = resolve_format(fmt)
    numeric_level = resolve_level(level)

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if rendering == "json":
        renderer = structlog.processors.JSONRenderer()
        final = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        final = [renderer]

    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from plain stdlib loggers (Temporal's adapters included) get the same context.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _flatten_temporal_extras],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,
            _flatten_temporal_extras,
            *final,
        ],
    )
    handler = _Handler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric_level <= logging.DEBUG else logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a second configure_logging (tests, `keel dev` children) must take effect.
        cache_logger_on_first_use=False,
    )
    _quiet_temporal_adapters()


def _quiet_temporal_adapters() -> None:
    # Temporal's adapters append a dict of details to every message; we render
    # those details as fields instead, so the message text stays clean.
    from temporalio import activity, workflow

    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to `name` (and any initial fields)."""
    return structlog.stdlib.get_logger(name, **initial)
