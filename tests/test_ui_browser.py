"""The Temporal Web UI, checked in a real browser: `travel` runs as a person would see them.

Each test runs the travel example on a real dev server with its Web UI through the starter API,
then reads the run's pages in headless Chromium (Debian's `chromium` package) from the rendered
DOM. A finished run: the run's page shows the workflow id and status, the User Metadata tab the
summary `travel: <goal>`, the Search Attributes tab every `Keel*` attribute the server holds,
and the workflow list finds it by `KeelStatus="Completed"`. A run awaiting review: its page
shows it Running, the User Metadata tab its current details (what it waits for, from the live
metadata query the worker answers), the Search Attributes tab `KeelStatus="AwaitingReview"`,
and the list finds it by that status. Without Chromium the tests are skipped; `.ci/run`
installs it, so CI runs them.

Chromium is driven through the DevTools protocol over `--remote-debugging-pipe` (no websocket
client, no port, no new dependency): each page is opened in a tab and its DOM polled until what
the check waits for is there. The page of an open run keeps polling the server and never goes
idle, so `--dump-dom` with a virtual time budget never returns for it. The helpers here are also
used by `docs/make_screenshots.py`, so the README's screenshots are made the way this test reads
the UI.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import pytest_asyncio
from temporalio.client import Client

from agentkeel.contracts import SagaResult
from agentkeel.dev.devserver import DevServer
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.starters.client import Keel, KeelError, RunHandle
from agentkeel.temporal import connect
from agentkeel.workers.worker import running_worker
from tests.fixtures.temporal import DevServerHandle

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
NO_CHROMIUM = "Chromium not installed: apt-get install chromium"
REQUIRE_BROWSER_ENV = "KEEL_REQUIRE_BROWSER"
"""Set by `.ci/run` once Chromium is installed: a missing browser then fails the tests, not skips."""
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
# Seconds a page may take to show what a check waits for (the UI's first load compiles a lot of JS).
PAGE_TIMEOUT_S = 45.0
DEVTOOLS_TIMEOUT_S = 30.0
# Base64 PNG screenshots arrive as one message.
MAX_DEVTOOLS_MESSAGE = 64 * 1024 * 1024
POLL_S = 0.25
SETTLE_S = 1.0
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


_FD_LAUNCHER = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


class DevToolsError(RuntimeError):
    """Chromium answered a DevTools command with an error, exited, or did not answer in time."""


class Browser:
    """A headless Chromium driven through the DevTools protocol over `--remote-debugging-pipe`.

    The pipe (commands on the browser's fd 3, answers on its fd 4, each message JSON ended by a
    NUL byte) needs no websocket client and no port. A page is read while it runs: the DOM is
    polled until the caller's condition holds, so pages that never go idle (an open run's page
    keeps polling the server) are read as well as finished ones.
    """

    def __init__(self, binary: str) -> None:
        """Prepare to start `binary` (see `start`)."""
        self.binary = binary
        self._process: asyncio.subprocess.Process | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._to_browser: int | None = None
        self._reader: asyncio.StreamReader | None = None
        self._listener: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0

    async def __aenter__(self) -> Browser:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start Chromium with a new, empty profile."""
        self._profile = tempfile.TemporaryDirectory(prefix="keel-chromium-")
        commands_r, commands_w = os.pipe()
        answers_r, answers_w = os.pipe()
        # The browser expects the pipe on fds 3 and 4. A small Python launcher puts it there and
        # execs the browser: no preexec_fn in a process that runs threads, no shell (dash cannot
        # redirect fds above 9).
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _FD_LAUNCHER,
            str(commands_r),
            str(answers_w),
            self.binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self._profile.name}",
            "--remote-debugging-pipe",
            "about:blank",
            pass_fds=(commands_r, answers_w),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            # Its own process group, so a hung browser goes down with its zygote and renderers.
            start_new_session=True,
        )
        os.close(commands_r)
        os.close(answers_w)
        self._to_browser = commands_w
        loop = asyncio.get_running_loop()
        self._reader = asyncio.StreamReader(limit=MAX_DEVTOOLS_MESSAGE)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self._reader), os.fdopen(answers_r, "rb", buffering=0)
        )
        self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        assert self._reader is not None
        try:
            while True:
                message = json.loads((await self._reader.readuntil(b"\0"))[:-1])
                future = self._waiting.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(DevToolsError(f"Chromium closed the DevTools pipe: {exc}"))
            self._waiting.clear()

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        """Send one DevTools command and return its result.

        Raises:
            DevToolsError: the browser answered with an error, closed the pipe, or took too long.
        """
        assert self._to_browser is not None, "start() first"
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = future
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            answer = await asyncio.wait_for(future, DEVTOOLS_TIMEOUT_S)
        except TimeoutError:
            raise DevToolsError(
                f"Chromium did not answer {method} within {DEVTOOLS_TIMEOUT_S:.0f}s"
            ) from None
        if "error" in answer:
            raise DevToolsError(f"{method}: {answer['error'].get('message', answer['error'])}")
        return answer.get("result", {})

    async def open(self, url: str, window: tuple[int, int] = WINDOW_SIZE) -> str:
        """Open `url` in a new tab `window` pixels wide and high; return the tab's session id."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        session = str(attached["sessionId"])
        width, height = window
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        await self.send("Page.navigate", {"url": url}, session)
        return session

    async def html(self, session: str) -> str:
        """The tab's DOM as HTML, as it is now."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": "document.documentElement.outerHTML", "returnByValue": True},
            session,
        )
        return str(result.get("result", {}).get("value") or "")

    async def read(self, url: str, ready: Callable[[Page], bool], within: float = PAGE_TIMEOUT_S) -> Page:
        """Open `url` and read its DOM until `ready(page)` holds or `within` seconds pass.

        Returns the last page read, ready or not, so the caller's assertions say what is missing.
        """
        session = await self.open(url)
        deadline = asyncio.get_running_loop().time() + within
        page = Page()
        while True:
            page = read_page(await self.html(session))
            if ready(page) or asyncio.get_running_loop().time() > deadline:
                return page
            await asyncio.sleep(POLL_S)

    async def screenshot(
        self,
        url: str,
        path: Path,
        ready: Callable[[Page], bool],
        window: tuple[int, int] = WINDOW_SIZE,
        settle: float = SETTLE_S,
    ) -> Path:
        """Save a PNG of `url` once `ready(page)` holds (and `settle` seconds more, for the layout).

        Raises:
            DevToolsError: the page was not ready within `PAGE_TIMEOUT_S`.
        """
        _prepare(path)
        session = await self.open(url, window)
        deadline = asyncio.get_running_loop().time() + PAGE_TIMEOUT_S
        while not ready(read_page(await self.html(session))):
            if asyncio.get_running_loop().time() > deadline:
                raise DevToolsError(f"{url} was not ready within {PAGE_TIMEOUT_S:.0f}s")
            await asyncio.sleep(POLL_S)
        await asyncio.sleep(settle)
        shot = await self.send("Page.captureScreenshot", {"format": "png"}, session)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        """Stop the browser and its helper processes, and remove its profile."""
        if self._to_browser is not None:
            with contextlib.suppress(OSError):
                os.close(self._to_browser)
            self._to_browser = None
        if self._process is not None:
            # The browser leaves by itself once its pipe closes; kill it if it does not.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), 5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            await self._process.wait()
            self._process = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None


def _prepare(path: Path) -> None:
    # No stale PNG from an earlier run may pass for the new one.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)


# Checked at collection too, so a machine without Chromium does not start servers only to skip.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.skipif(
        find_chromium() is None and not os.environ.get(REQUIRE_BROWSER_ENV), reason=NO_CHROMIUM
    ),
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


@pytest_asyncio.fixture(loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium for the test; skips the test when Chromium is not installed."""
    binary = find_chromium()
    if binary is None:
        if os.environ.get(REQUIRE_BROWSER_ENV):
            pytest.fail(f"{NO_CHROMIUM} ({REQUIRE_BROWSER_ENV} is set: the browser tests must run)")
        pytest.skip(NO_CHROMIUM)
    async with Browser(binary) as started:
        yield started


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


@pytest.fixture
def ui_settings(
    ui_server: UIServer, offline_llm: Any, worker_settings: Settings, task_queue: str
) -> Settings:
    """Settings of a worker on the UI's server and the offline provider, printing links to that UI."""
    return worker_settings.model_copy(
        update={
            "llm_port": offline_llm.port,
            "llm_host": "127.0.0.1",
            "task_queue": task_queue,
            "ui_url": ui_server.ui_url,
        }
    )


def shows_run(workflow_id: str, status: str, *texts: str) -> Callable[[Page], bool]:
    """Whether a run's page shows `workflow_id` as heading, `status` as Temporal status, and `texts`."""

    def ready(page: Page) -> bool:
        heading = page.by_testid.get("workflow-id-heading", "")
        return (
            workflow_id in heading
            and page.by_testid.get("execution-status", "").lower() == status
            and all(text in page.text for text in texts)
        )

    return ready


# ---------------------------------------------------------------------------------------- the tests


async def test_ui_shows_finished_run_summary_and_search_attributes(
    ui_server: UIServer, browser: Browser, ui_settings: Settings
) -> None:
    keel = Keel(ui_server.client, settings=ui_settings)
    async with running_worker(ui_server.client, ui_settings):
        handle, result = await run_travel(keel, "approve")
        assert result is not None and result.status == SagaStatus.COMPLETED, result
        await wait_until_listed(keel, 'KeelStatus="Completed"', handle.workflow_id)
        described = await handle.handle.describe()
        held = {key.name: value for key, value in described.typed_search_attributes}
        wid = handle.workflow_id

        run_page, metadata_page, attributes_page, list_page = await asyncio.gather(
            browser.read(handle.ui_url, shows_run(wid, "completed", "AgentSagaWorkflow", GOAL)),
            browser.read(
                run_tab_url(handle, "user-metadata"),
                lambda p: p.iframe_content("user-metadata-summary") is not None,
            ),
            browser.read(run_tab_url(handle, "search-attributes"), lambda p: "KeelStatus" in p.text),
            browser.read(list_url(keel, 'KeelStatus="Completed"'), lambda p: wid in p.text),
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


async def test_ui_shows_run_awaiting_review_with_its_current_details(
    ui_server: UIServer, browser: Browser, ui_settings: Settings
) -> None:
    # The page of an open run keeps polling the server, so it never goes idle: read while it runs.
    keel = Keel(ui_server.client, settings=ui_settings)
    async with running_worker(ui_server.client, ui_settings):
        handle, _ = await run_travel(keel, None)
        wid = handle.workflow_id
        try:
            await wait_until_listed(keel, 'KeelStatus="AwaitingReview"', wid)
            run_page, metadata_page, attributes_page, list_page = await asyncio.gather(
                browser.read(handle.ui_url, shows_run(wid, "running", "AgentSagaWorkflow", GOAL)),
                # Current details come from the live metadata query, answered by the worker.
                browser.read(
                    run_tab_url(handle, "user-metadata"),
                    lambda p: bool(p.iframe_content("user-metadata-current-details")),
                ),
                browser.read(run_tab_url(handle, "search-attributes"), lambda p: "AwaitingReview" in p.text),
                browser.read(list_url(keel, 'KeelStatus="AwaitingReview"'), lambda p: wid in p.text),
            )
        finally:
            # Cancelled and its compensations done while the worker still runs: nothing left open.
            await handle.cancel(reason="browser test done")
            with contextlib.suppress(KeelError):
                await handle.result(wait=RUN_TIMEOUT_S)

    assert wid in run_page.by_testid.get("workflow-id-heading", ""), run_page.text[:2000]
    assert run_page.by_testid.get("execution-status", "").lower() == "running"
    assert "AgentSagaWorkflow" in run_page.text and GOAL in run_page.text

    assert metadata_page.iframe_content("user-metadata-summary") == f"travel: {GOAL}", metadata_page.iframes
    current = metadata_page.iframe_content("user-metadata-current-details") or ""
    # What the run waits for, in the words of the workflow's current details.
    assert "waiting for" in current.lower(), metadata_page.iframes

    shown = attributes_page.attributes()
    assert shown.get("KeelStatus") == "AwaitingReview", attributes_page.text[-2000:]
    assert shown.get("KeelAgent") == "planner"
    assert wid in list_page.text
