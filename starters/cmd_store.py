"""`keel store`: look at the conversation store and reclaim what no retained run needs.

    keel store stats                 # contents, bytes, owners, and the store's URL (password masked)
    keel store gc --dry-run          # what a gc would reclaim now
    keel store gc [--grace 1h]       # reclaim it

A gc keeps the content of every run the Temporal namespace still lists: open
runs, and closed runs within the namespace's retention period. When Temporal
deletes a run (its retention has ended, or someone deleted it), the next gc
forgets the run as an owner and deletes the content no other run owns. Content
and owners younger than the grace period are spared: a run started while the
listing was taken, an activity that has just written.

The store comes from `KEEL_STORE_URL`, `[store] url` in `keel.toml`, else
`sqlite:///<home>/store.db`; the Temporal connection from Temporal's env config.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError

from agentkeel.settings import Settings
from agentkeel.starters.cli_common import CliError, connect, errors, json_flag, load_cli_settings, out
from agentkeel.starters.exit_codes import ExitCode
from agentkeel.starters.render import to_json
from agentkeel.store import ContentStore, StoreConfigError, StoreError, masked_url, open_store, store_url

DEFAULT_GRACE = "1h"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `store stats` and `store gc` to the `keel` parser."""
    js = json_flag()
    store = subparsers.add_parser(
        "store",
        help="the conversation store: stats, gc",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    commands = store.add_subparsers(dest="store_command", metavar="SUBCOMMAND")
    commands.required = True
    stats = commands.add_parser(
        "stats",
        parents=[js],
        help="contents, bytes and owners in the store",
        description="Show what the "
        "conversation store holds: contents, their plaintext bytes, owners (runs), and its URL.",
    )
    stats.set_defaults(func=cmd_stats)
    gc = commands.add_parser(
        "gc",
        parents=[js],
        help="delete content no retained run owns",
        description="Forget runs the Temporal namespace no longer lists (their retention has ended) and "
        "delete the content no listed run owns, sparing what is younger than the grace period.",
    )
    gc.add_argument(
        "--grace",
        default=DEFAULT_GRACE,
        help="spare content and runs first seen within this long: 90s, 30m, 1h, 2d "
        f"(default {DEFAULT_GRACE})",
    )
    gc.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    gc.add_argument(
        "--allow-empty",
        action="store_true",
        help="go on when the namespace lists no run at all (refused by default: a wrong "
        "TEMPORAL_NAMESPACE looks the same, and would have every run's content deleted)",
    )
    gc.set_defaults(func=cmd_gc)


def parse_grace(text: str) -> float:
    """A duration such as `90s`, `30m`, `1h`, `2d` (a bare number is seconds), in seconds.

    Raises:
        CliError: anything else.
    """
    match = _DURATION.match(text)
    if not match:
        raise CliError(
            f"--grace wants a duration such as 90s, 30m, 1h or 2d, got {text!r}", ExitCode.BAD_INPUT
        )
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@asynccontextmanager
async def _open(settings: Settings) -> AsyncIterator[ContentStore]:
    """The configured store, its errors as one-line `CliError`s."""
    try:
        store = open_store(settings, cache_bytes=0)
    except StoreConfigError as exc:
        raise CliError(str(exc), ExitCode.BAD_INPUT) from None
    except StoreError as exc:
        raise CliError(str(exc), ExitCode.SERVICE_FAILED) from None
    try:
        yield store
    except StoreError as exc:
        raise CliError(f"store {masked_url(store_url(settings))}: {exc}", ExitCode.SERVICE_FAILED) from None
    finally:
        await store.aclose()


async def cmd_stats(args: argparse.Namespace) -> int:
    """`keel store stats`."""
    settings = load_cli_settings()
    async with _open(settings) as store:
        stats = await store.stats()
    url = masked_url(store_url(settings))
    if args.json:
        out(to_json({"url": url, **stats.as_dict()}))
    else:
        out(f"store:    {url}")
        out(f"contents: {stats.contents:,}")
        out(f"bytes:    {stats.bytes:,} (before encryption)")
        out(f"owners:   {stats.owners:,} runs")
    return ExitCode.OK


async def retained_workflow_ids(client: Client) -> set[str]:
    """Every workflow id the namespace lists: open runs and closed runs within retention.

    Raises:
        temporalio.service.RPCError: the listing failed part-way; never an incomplete set.
    """
    return {execution.id async for execution in client.list_workflows()}


async def _retention(client: Client) -> timedelta | None:
    """The namespace's retention period, when the server says (shown with the report only: a key
    allowed to list runs but not to describe the namespace must not stop the gc)."""
    try:
        described = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=client.namespace)
        )
    except RPCError:
        return None
    ttl = described.config.workflow_execution_retention_ttl
    return ttl.ToTimedelta() if described.config.HasField("workflow_execution_retention_ttl") else None


@errors
async def cmd_gc(args: argparse.Namespace) -> int:
    """`keel store gc`: list the namespace, then collect; never collect without a full listing."""
    grace = parse_grace(args.grace)
    settings = load_cli_settings()
    started = time.time()
    async with connect(settings) as keel:  # unreachable: exit UNREACHABLE before the store is opened
        retained = await retained_workflow_ids(keel.client)
        retention = await _retention(keel.client)
        namespace = keel.client.namespace
    async with _open(settings) as store:
        if not retained and not args.allow_empty and await store.owners():
            raise CliError(
                f"the namespace {namespace!r} lists no run at all, so every run's content would go: "
                "check TEMPORAL_NAMESPACE, or pass --allow-empty",
                ExitCode.CONFLICT,
            )
        # The cutoff is taken before the listing: a run it missed has only rows younger than this.
        report = await store.gc(retained, created_before=started - grace, dry_run=args.dry_run)
        left = await store.stats()
    summary: dict[str, Any] = {
        "url": masked_url(store_url(settings)),
        "namespace": namespace,
        "retention_s": retention.total_seconds() if retention is not None else None,
        "retained_runs": len(retained),
        "grace_s": grace,
        **report.as_dict(),
        "left": left.as_dict(),
    }
    if args.json:
        out(to_json(summary))
    else:
        _print_report(summary)
    return ExitCode.OK


def _print_report(summary: dict[str, Any]) -> None:
    retention = summary["retention_s"]
    kept = f"{retention / 86400:g} d" if retention is not None else "unknown"
    verb = "would remove" if summary["dry_run"] else "removed"
    left = summary["left"]
    out(f"store:    {summary['url']}")
    listed = f"{summary['retained_runs']:,} runs listed in namespace {summary['namespace']}"
    out(f"retained: {listed} (retention {kept})")
    out(f"grace:    {summary['grace_s']:g} s")
    out(
        f"{verb}: {summary['owners_removed']:,} runs, {summary['contents_removed']:,} contents, "
        f"{summary['bytes_reclaimed']:,} bytes"
    )
    out(f"left:     {left['contents']:,} contents, {left['bytes']:,} bytes, {left['owners']:,} runs")
