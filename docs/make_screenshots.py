"""Regenerate the README's screenshots of the Temporal Web UI (`docs/screenshots/*.png`).

    .venv/bin/python docs/make_screenshots.py [--out docs/screenshots]

It starts everything it needs on free ports and stops it afterwards: an in-memory Temporal dev
server with its Web UI, the offline LLM provider and a worker. It runs the `travel` example three
times through the starter API (approved, rejected, left waiting for review) and photographs the
UI pages with headless Chromium driven through the DevTools protocol, using the same helpers as
the browser test (`tests/test_ui_browser.py`): each page is photographed once what it is about
has rendered, while the worker still runs, so the pages that query the live run (the waiting
run's current details) are filled in. Needs Debian's `chromium` package.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # Run as a script from anywhere: the project's packages live at the repository root.
    sys.path.insert(0, str(REPO))

from agentkeel.dev.devserver import DevServer  # noqa: E402
from agentkeel.dev.offline.server import OfflineProvider  # noqa: E402
from agentkeel.examples import travel  # noqa: E402
from agentkeel.logs import configure_logging  # noqa: E402
from agentkeel.settings import Settings  # noqa: E402
from agentkeel.starters.client import Keel  # noqa: E402
from agentkeel.starters.cmd_demo import DEMO_GOAL  # noqa: E402
from agentkeel.temporal import connect  # noqa: E402
from agentkeel.workers.worker import running_worker  # noqa: E402
from tests.test_ui_browser import (  # noqa: E402
    Browser,
    Page,
    find_chromium,
    list_url,
    run_tab_url,
    run_travel,
    wait_until_listed,
)

DEFAULT_OUT = REPO / "docs" / "screenshots"
# Wide enough for the run page's three header columns, short enough to keep each PNG small.
DETAIL_WINDOW = (1440, 1100)
LIST_WINDOW = (1440, 560)
MAX_PNG_BYTES = 400_000


def _shows(*texts: str) -> Callable[[Page], bool]:
    """Whether a page's text holds every one of `texts`: what the photograph is about has rendered."""
    return lambda page: all(text in page.text for text in texts)


async def make_screenshots(out: Path, chromium: str) -> list[Path]:
    """Run the travel example on a fresh stack and save the UI screenshots into `out`.

    Returns:
        The PNG files written.
    """
    with tempfile.TemporaryDirectory(prefix="keel-screenshots-") as tmp:
        home = Path(tmp)
        server = DevServer(port=None, db_path=None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        provider = OfflineProvider(port=0, scenario_paths=[travel.SCENARIO_FILE])
        await server.start()
        await provider.start()
        try:
            client = await connect(address=server.address, namespace="default")
            settings = Settings(
                home=home / "keel-home",
                ledger_path=home / "ledger.db",
                llm_host="127.0.0.1",
                llm_port=provider.port,
                task_queue="agentkeel",
                ui_url=server.ui_url,
                apps=[travel.APP_REFERENCE],
            )
            keel = Keel(client, settings=settings)
            async with running_worker(client, settings):
                # The goal `keel demo` uses: the offline provider's scripted answers are about it.
                approved, _ = await run_travel(keel, "approve", goal=DEMO_GOAL)
                rejected, _ = await run_travel(keel, "reject", goal=DEMO_GOAL)
                pending, _ = await run_travel(keel, None, goal=DEMO_GOAL)
                # Compensated today; Rejected should a rejected run ever be labelled so.
                undone = 'KeelStatus IN ("Compensated", "Rejected")'
                await wait_until_listed(keel, undone, rejected.workflow_id)
                await wait_until_listed(keel, 'KeelStatus="AwaitingReview"', pending.workflow_id)
                shots: dict[str, tuple[str, tuple[int, int], Callable[[Page], bool]]] = {
                    "run-completed.png": (
                        approved.ui_url,
                        DETAIL_WINDOW,
                        _shows(approved.workflow_id, DEMO_GOAL, "charge_card"),
                    ),
                    "run-summary.png": (
                        run_tab_url(pending, "user-metadata"),
                        DETAIL_WINDOW,
                        lambda page: bool(page.iframe_content("user-metadata-current-details")),
                    ),
                    "run-search-attributes.png": (
                        run_tab_url(approved, "search-attributes"),
                        DETAIL_WINDOW,
                        _shows("KeelStatus", "KeelCostUsd"),
                    ),
                    "run-compensated.png": (
                        rejected.ui_url,
                        DETAIL_WINDOW,
                        _shows(rejected.workflow_id, "cancel_hotel", "cancel_flight"),
                    ),
                    "workflow-list.png": (
                        list_url(keel, 'KeelTeam="travel"'),
                        LIST_WINDOW,
                        _shows(approved.workflow_id, rejected.workflow_id, pending.workflow_id),
                    ),
                    "pending-reviews.png": (
                        list_url(keel, 'KeelStatus="AwaitingReview"'),
                        LIST_WINDOW,
                        _shows(pending.workflow_id),
                    ),
                }
                written: list[Path] = []
                async with Browser(chromium) as browser:
                    # One page at a time: two cores, and a starved page may render half its parts.
                    for name, (url, window, ready) in shots.items():
                        path = await browser.screenshot(url, out / name, ready, window)
                        size = path.stat().st_size
                        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                        print(f"{shown}  {size:,} bytes")
                        if size > MAX_PNG_BYTES:
                            print(f"  warning: larger than {MAX_PNG_BYTES:,} bytes", file=sys.stderr)
                        written.append(path)
                await pending.cancel(reason="screenshots taken")
            return written
        finally:
            await provider.stop()
            await server.stop()


def main() -> None:
    """Parse the command line, make the screenshots, and exit (through `os._exit`, see DESIGN.md)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNG files")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        print("Chromium not installed: apt-get install chromium", file=sys.stderr)
        os._exit(2)
    configure_logging("console", "WARNING")
    try:
        asyncio.run(make_screenshots(args.out.resolve(), chromium))
        code = 0
    except Exception as exc:  # one line for the person running the script
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # A process that used a Temporal client can abort at interpreter exit (sdk-python issue 300).
    os._exit(code)


if __name__ == "__main__":
    main()
