"""The Temporal Web UI, checked in a real browser: a finished `travel` run as a person would see it.

The test runs the travel example on a real dev server with its Web UI, starts it through the
starter API, approves the review, waits for `Completed`, then loads the run's pages in headless
Chromium (Debian's `chromium` package) and reads the rendered DOM: the run's page shows the
workflow id and status, the User Metadata tab the summary `travel: <goal>`, the Search Attributes
tab every `Keel*` attribute the server holds, and the workflow list finds the run by
`KeelStatus="Completed"`. Without Chromium the test is skipped.

Chromium is driven with `--dump-dom` / `--screenshot` and a virtual time budget: virtual time
only advances while the page waits on nothing, so the UI's API calls finish before the DOM is
read, with no DevTools client and no new dependency. The helpers here are also used by
`docs/make_screenshots.py`, so the README's screenshots are made the way this test reads the UI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import pytest_asyncio
from agentkeel.starters.client import Keel, RunHandle
from agentkeel.workers.worker import running_worker
from temporalio.client import Client

from agentkeel.contracts import SagaResult
from agentkeel.dev.devserver import DevServer
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.temporal import connect
from tests.fixtures.temporal import DevServerHandle

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
NO_CHROMIUM = "Chromium not installed: apt-get install chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
# Virtual milliseconds the page may run; real time is much shorter once its fetches are done.
VIRTUAL_TIME_BUDGET_MS = 15_000
CHROMIUM_TIMEOUT_S = 60.0
LOAD_ATTEMPTS = 3
WINDOW_SIZE = (1440, 1100)
GOAL = "Trip to Lisbon, Dec 10, 3 nights"
RUN_TIMEOUT_S = 30.0
# HTML elements without an end tag: never pushed on the parser's stack.
VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
HIDDEN_TAGS = frozenset({"script", "style", "noscript", "template"})
ATTRIBUTE_RE = re.compile(r'"(Keel\w+)"\s*:\s*("(?:[^"\\]|\\.)*"|-?[\d.eE+-]+|true|false|null)')


# ---------------------------------------------------------------------------------------- Chromium


def find_chromium() -> str | None:
    """Path of the Chromium binary (`/usr/bin/chromium` or on PATH), or None when it is not installed."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


async def run_chromium(binary: str, url: str, *extra: str, time_limit: float = CHROMIUM_TIMEOUT_S) -> str:
    """Load `url` in a fresh headless Chromium profile and return what it printed on stdout.

    Args:
        binary: The Chromium executable.
        url: The page to load.
        extra: More flags (`--dump-dom`, `--screenshot=PATH`, `--window-size=W,H`).
        time_limit: Seconds before the browser (and its helper processes) is killed.

    Raises:
        RuntimeError: Chromium exited non-zero or did not finish in time.
    """
    with tempfile.TemporaryDirectory(prefix="keel-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
            *extra,
            url,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own process group, so a hung browser goes down with its zygote and renderers.
            start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), time_limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise RuntimeError(f"Chromium did not finish loading {url} within {time_limit:.0f}s") from None
        if process.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"Chromium exited with {process.returncode} on {url}: " + " | ".join(tail))
        return stdout.decode(errors="replace")


async def dump_dom(binary: str, url: str) -> str:
    """The page's DOM as HTML after its scripts ran (`--dump-dom`)."""
    return await run_chromium(binary, url, "--dump-dom")


async def screenshot(binary: str, url: str, path: Path, window: tuple[int, int] = WINDOW_SIZE) -> Path:
    """Save a PNG of the page, `window` pixels wide and high."""
    _prepare(path)
    await run_chromium(binary, url, f"--screenshot={path}", f"--window-size={window[0]},{window[1]}")
    if _file_size(path) == 0:
        raise RuntimeError(f"Chromium wrote no screenshot of {url} to {path}")
    return path


def _prepare(path: Path) -> None:
    # No stale PNG from an earlier run may pass for the new one.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# Checked at collection too, so a machine without Chromium does not start servers only to skip.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(find_chromium() is None, reason=NO_CHROMIUM),
]


# ---------------------------------------------------------------------------------------- DOM reading


@dataclass
class Page:
    """What a dumped DOM shows: its visible text, text under each `data-testid`, iframe sources."""

    text: str = ""
    by_testid: dict[str, str] = field(default_factory=dict)
    iframes: dict[str, str] = field(default_factory=dict)

    def iframe_content(self, iframe_id: str) -> str | None:
        """The `content` query parameter of an iframe's source: how the UI renders user metadata."""
        src = self.iframes.get(iframe_id)
        if src is None:
            return None
        values = parse_qs(urlsplit(src).query).get("content")
        return values[0] if values else None

    def attributes(self) -> dict[str, Any]:
        """The `Keel*` search attributes in the page's JSON views, decoded."""
        return {name: json.loads(value) for name, value in ATTRIBUTE_RE.findall(self.text)}


class _DomReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.testid_chunks: dict[str, list[str]] = {}
        self.iframes: dict[str, str] = {}
        self.stack: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "iframe" and attributes.get("src"):
            self.iframes[attributes.get("id") or attributes["src"] or ""] = attributes["src"] or ""
        if tag in VOID_TAGS:
            return
        testid = attributes.get("data-testid")
        if testid is not None:
            self.testid_chunks.setdefault(testid, [])
        self.stack.append((tag, testid))

    def handle_endtag(self, tag: str) -> None:
        # Tolerate unclosed elements: pop back to the matching start tag, if there is one.
        for depth in range(len(self.stack) - 1, -1, -1):
            if self.stack[depth][0] == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        if any(tag in HIDDEN_TAGS for tag, _ in self.stack):
            return
        self.chunks.append(data)
        for _, testid in self.stack:
            if testid is not None:
                self.testid_chunks[testid].append(data)


def _squash(chunks: Sequence[str]) -> str:
    return re.sub(r"\s+", " ", " ".join(chunks)).strip()


def read_page(dom: str) -> Page:
    """Parse a dumped DOM into a `Page`."""
    reader = _DomReader()
    reader.feed(dom)
    reader.close()
    return Page(
        text=_squash(reader.chunks),
        by_testid={key: _squash(chunks) for key, chunks in reader.testid_chunks.items()},
        iframes=reader.iframes,
    )


async def load_page(binary: str, url: str, ready: Callable[[Page], bool]) -> Page:
    """Load `url` until `ready(page)` holds (a few attempts: the SPA may still be fetching on a busy machine).

    Returns the last page read, ready or not, so the caller's assertions say what is missing.
    """
    page = Page()
    for _ in range(LOAD_ATTEMPTS):
        page = read_page(await dump_dom(binary, url))
        if ready(page):
            break
    return page


# ---------------------------------------------------------------------------------------- UI addresses


def run_tab_url(handle: RunHandle, tab: str) -> str:
    """URL of one tab of a run's page (`search-attributes`, `user-metadata`, `history`, ...)."""
    return f"{handle.ui_url}/{quote(handle.run_id or '', safe='')}/{tab}"


def list_url(keel: Keel, query: str) -> str:
    """URL of the workflow list filtered by a visibility query."""
    return f"{keel.ui_url()}?query={quote(query, safe='')}"


# ---------------------------------------------------------------------------------------- the travel flow


async def wait_for_status(handle: RunHandle, status: SagaStatus, within: float = RUN_TIMEOUT_S) -> None:
    """Poll the run's status query until it reaches `status`.

    Raises:
        AssertionError: the run ended in another state, or `within` seconds passed.
    """
    deadline = asyncio.get_running_loop().time() + within
    while True:
        view = await handle.status()
        if view.status == status:
            return
        assert not view.status.is_final, f"run ended {view.status.value}: {view.last_error}"
        assert asyncio.get_running_loop().time() < deadline, f"run still {view.status.value}"
        await asyncio.sleep(0.1)


async def run_travel(
    keel: Keel, decision: str | None, goal: str = GOAL
) -> tuple[RunHandle, SagaResult | None]:
    """Start the travel team, decide its review (`approve`, `reject`, or None to leave it pending).

    Returns:
        The run's handle and, when a decision was made, its result.
    """
    handle = await keel.start("travel", goal)
    await wait_for_status(handle, SagaStatus.AWAITING_REVIEW)
    if decision is None:
        return handle, None
    if decision == "approve":
        await handle.approve(reviewer="ana", comment="looks good")
    elif decision == "reject":
        await handle.reject(reviewer="ana", reason="over budget")
    else:
        raise ValueError(f"unknown decision {decision!r}")
    return handle, await handle.result(wait=RUN_TIMEOUT_S)


async def wait_until_listed(keel: Keel, query: str, workflow_id: str, within: float = 10.0) -> None:
    """Wait until visibility (eventually consistent) returns the run for `query`."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = [
            execution.id
            async for execution in keel.client.list_workflows(f'WorkflowId="{workflow_id}" AND {query}')
        ]
        if found:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{workflow_id} not listed by {query}"
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def chromium() -> str:
    """The Chromium binary; skips the test when it is not installed."""
    binary = find_chromium()
    if binary is None:
        pytest.skip(NO_CHROMIUM)
    return binary


@dataclass
class UIServer:
    """A dev server with its Web UI, and a client connected to it."""

    client: Client
    ui_url: str


@pytest_asyncio.fixture(loop_scope="session")
async def ui_server(dev_server: DevServerHandle) -> AsyncIterator[UIServer]:
    """The session's dev server when it serves the Web UI; else one of our own with the UI on a free port."""
    if not dev_server.server.headless:
        yield UIServer(client=dev_server.client, ui_url=dev_server.ui_url)
        return
    quiet = asyncio.subprocess.DEVNULL
    async with DevServer(port=None, db_path=None, stdout=quiet, stderr=quiet) as own:
        yield UIServer(client=await connect(address=own.address, namespace="default"), ui_url=own.ui_url)


# ---------------------------------------------------------------------------------------- the test


async def test_ui_shows_finished_run_summary_and_search_attributes(
    ui_server: UIServer, chromium: str, offline_llm: Any, worker_settings: Settings, task_queue: str
) -> None:
    settings = worker_settings.model_copy(
        update={
            "llm_port": offline_llm.port,
            "llm_host": "127.0.0.1",
            "task_queue": task_queue,
            "ui_url": ui_server.ui_url,
        }
    )
    keel = Keel(ui_server.client, settings=settings)
    async with running_worker(ui_server.client, settings):
        handle, result = await run_travel(keel, "approve")
        assert result is not None and result.status == SagaStatus.COMPLETED, result
        await wait_until_listed(keel, 'KeelStatus="Completed"', handle.workflow_id)
        described = await handle.handle.describe()
        held = {key.name: value for key, value in described.typed_search_attributes}
        wid = handle.workflow_id

        run_page, metadata_page, attributes_page, list_page = await asyncio.gather(
            load_page(chromium, handle.ui_url, lambda p: wid in p.by_testid.get("workflow-id-heading", "")),
            load_page(
                chromium,
                run_tab_url(handle, "user-metadata"),
                lambda p: p.iframe_content("user-metadata-summary") is not None,
            ),
            load_page(chromium, run_tab_url(handle, "search-attributes"), lambda p: "KeelStatus" in p.text),
            load_page(chromium, list_url(keel, 'KeelStatus="Completed"'), lambda p: wid in p.text),
        )

    # The run's own page: its id as the heading, its Temporal status, its type and input.
    assert wid in run_page.by_testid.get("workflow-id-heading", ""), run_page.text[:2000]
    assert run_page.by_testid.get("execution-status", "").lower() == "completed"
    assert "AgentSagaWorkflow" in run_page.text
    assert GOAL in run_page.text

    # The summary and details the starter API set at start, rendered by the User Metadata tab.
    assert metadata_page.iframe_content("user-metadata-summary") == f"travel: {GOAL}", metadata_page.iframes
    assert wid in (metadata_page.iframe_content("user-metadata-details") or "")

    # Every Keel* search attribute the server holds, with the same value, on the Search Attributes tab.
    shown = attributes_page.attributes()
    assert shown["KeelStatus"] == "Completed", attributes_page.text[-2000:]
    assert shown["KeelTeam"] == "travel"
    assert shown["KeelCorrelationId"] == handle.correlation_id
    assert shown["KeelTokens"] == result.tokens > 0
    assert shown == {name: value for name, value in held.items() if name.startswith("Keel")}

    # The workflow list finds the run through the custom search attribute.
    assert wid in list_page.text
