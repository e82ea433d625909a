"""The Python starter API (`agentkeel.starters.client`): validation before starting, and review end to end.

The end-to-end tests run the shipped `travel` team on the session's dev server with a real
worker (`agentkeel.workers.worker.build_worker`) and the offline LLM provider.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from agentkeel.contracts import SagaRequest, SagaStatusView
from agentkeel.examples.travel import APP_REFERENCE as TRAVEL_APP
from agentkeel.examples.travel import team as travel_team
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.starters.client import (
    SUMMARY_MAX,
    InvalidInput,
    Keel,
    ReviewRejected,
    RunAlreadyExists,
    RunHandle,
    RunNotFound,
    TeamNotFound,
    WorkerUnavailable,
    _summary,
    new_workflow_id,
    parse_status,
)
from agentkeel.workers.worker import running_worker

GOAL = "Trip to Lisbon, Dec 10, 3 nights"
T = TypeVar("T")


# ------------------------------------------------------------------- helpers, shared with test_cli_runs


def make_keel_settings(
    worker_settings: Settings, offline_llm: Any, task_queue: str, dev_server: Any
) -> Settings:
    """Settings for the worker and the starters of one test: its own task queue and ledger."""
    return worker_settings.model_copy(
        update={
            "llm_port": offline_llm.port,
            "llm_host": "127.0.0.1",
            "task_queue": task_queue,
            "ui_url": dev_server.ui_url,
        }
    )


@pytest.fixture
def keel_settings(worker_settings: Settings, offline_llm: Any, task_queue: str, dev_server: Any) -> Settings:
    """See `make_keel_settings`."""
    return make_keel_settings(worker_settings, offline_llm, task_queue, dev_server)


async def eventually(
    probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], *, within: float = 20.0
) -> T:
    """Poll `probe` until `check` accepts its value (visibility and run progress are asynchronous)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if check(value):
            return value
        assert asyncio.get_running_loop().time() < deadline, (
            f"condition not met in {within}s; last: {value!r}"
        )
        await asyncio.sleep(0.1)


async def wait_for_review(run: RunHandle) -> SagaStatusView:
    """Watch the run until it asks for a review; fail if it ends first."""
    async for view in run.watch(interval=0.1):
        if view.pending_review is not None:
            return view
        assert not view.status.is_final, f"run ended {view.status}: {view.last_error}"
    raise AssertionError("the run ended without asking for a review")


# --------------------------------------------------------------------------- unit


@pytest.mark.unit
def test_new_workflow_ids_are_business_prefix_plus_unique_part() -> None:
    ids = {new_workflow_id("travel") for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"keel-travel-[0-9a-f]{12}", i) for i in ids)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("AwaitingReview", SagaStatus.AWAITING_REVIEW),
        ("awaiting-review", SagaStatus.AWAITING_REVIEW),
        ("awaiting_review", SagaStatus.AWAITING_REVIEW),
        ("failed", SagaStatus.FAILED),
    ],
)
def test_parse_status_is_lenient(text: str, status: SagaStatus) -> None:
    assert parse_status(text) is status


@pytest.mark.unit
def test_parse_status_lists_the_choices() -> None:
    with pytest.raises(InvalidInput, match="unknown status 'done'.*AwaitingReview"):
        parse_status("done")


@pytest.mark.unit
def test_summary_is_one_line_and_bounded() -> None:
    assert _summary("travel", "Trip\n to   Lisbon") == "travel: Trip to Lisbon"
    long = _summary("travel", "x" * 500)
    assert len(long) == SUMMARY_MAX and long.endswith("…")


@pytest.mark.unit
def test_resolve_team_by_name_spec_and_file(tmp_path: Path) -> None:
    keel = Keel(settings=Settings(home=tmp_path, apps=[TRAVEL_APP]))
    name, spec = keel.resolve_team("travel")
    assert name == "travel" and spec.entry == "planner"
    # A spec or a file is sent whole: the worker does not need to know it.
    custom = travel_team().model_copy(update={"name": "trips"})
    assert keel.resolve_team(custom) == (None, custom)
    path = tmp_path / "trips.yaml"
    path.write_text(yaml.safe_dump(custom.model_dump(mode="json")))
    for given in (path, str(path)):
        name, spec = keel.resolve_team(given)
        assert name is None and spec.name == "trips"


@pytest.mark.unit
def test_unknown_team_names_the_registered_ones(tmp_path: Path) -> None:
    keel = Keel(settings=Settings(home=tmp_path, apps=[TRAVEL_APP]))
    with pytest.raises(TeamNotFound, match=r"unknown team 'travle' \(registered teams: .*travel"):
        keel.resolve_team("travle")


@pytest.mark.unit
def test_bad_team_file_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "team.yaml"
    path.write_text("name: t\nentry: ghost\nagents:\n  - name: a\n    instructions: hi\n    handoffs: [b]\n")
    keel = Keel(settings=Settings(home=tmp_path, apps=[TRAVEL_APP]))
    with pytest.raises(InvalidInput) as err:
        keel.resolve_team(path)
    message = str(err.value)
    assert "entry agent 'ghost'" in message and "unknown agent 'b'" in message
    assert "\n" not in message
    with pytest.raises(InvalidInput, match="cannot read team file"):
        keel.resolve_team(tmp_path / "missing.yaml")


@pytest.mark.unit
async def test_start_validates_before_touching_the_server(tmp_path: Path) -> None:
    keel = Keel(
        settings=Settings(home=tmp_path, apps=[TRAVEL_APP])
    )  # not connected: any network use would raise
    with pytest.raises(InvalidInput, match="goal"):
        await keel.start("travel", "")
    with pytest.raises(TeamNotFound):
        await keel.start("nope", GOAL)
    with pytest.raises(InvalidInput, match="metadata"):
        await keel.start("travel", GOAL, metadata={"n": 1})  # type: ignore[dict-item]


# --------------------------------------------------------------------------- end to end


@pytest.mark.integration
async def test_start_review_approve_and_find(dev_server: Any, keel_settings: Settings) -> None:
    keel = Keel(dev_server.client, settings=keel_settings)
    async with running_worker(dev_server.client, keel_settings):
        run = await keel.start("travel", GOAL, metadata={"ticket": "T-1"})
        assert re.fullmatch(r"keel-travel-[0-9a-f]{12}", run.workflow_id)
        assert run.ui_url.startswith(dev_server.ui_url) and run.workflow_id in run.ui_url
        assert run.correlation_id and run.run_id

        view = await wait_for_review(run)
        assert view.status == SagaStatus.AWAITING_REVIEW
        assert view.pending_review is not None and view.pending_review.tool == "charge_card"
        assert view.correlation_id == run.correlation_id

        # Listable through the search attributes (set at start, then upserted by the run).
        listed = await eventually(
            lambda: keel.list_runs(correlation_id=run.correlation_id),
            lambda runs: [r.status for r in runs] == ["AwaitingReview"],
        )
        assert listed[0].workflow_id == run.workflow_id and listed[0].team == "travel"
        by_status = await keel.list_runs(status="awaiting-review", team="travel")
        assert run.workflow_id in [r.workflow_id for r in by_status]
        pending = await keel.pending(team="travel")
        mine = next(r for r in pending if r.workflow_id == run.workflow_id)
        assert mine.pending_review is not None
        assert mine.pending_review.request_id == view.pending_review.request_id

        outcome = await run.approve(reviewer="ana", comment="ok")
        assert outcome.decision == "approve"
        assert outcome.request_id == view.pending_review.request_id
        result = await run.result(wait=30)
        assert result.status == SagaStatus.COMPLETED, result.reason
        assert [r.reviewer for r in result.reviews] == ["ana"]

        # The run ended: a second decision is refused with the reason, not lost or hung.
        with pytest.raises(ReviewRejected, match="ended"):
            await run.approve(reviewer="bob")
        final = await (await keel.get(run.workflow_id)).status()
        assert final.status == SagaStatus.COMPLETED
        assert any(e.kind == "handoff" for e in await run.transcript())

        desc = await run.handle.describe()
        assert await desc.static_summary() == f"travel: {GOAL}"
        details = await desc.static_details()
        assert details is not None and run.correlation_id in details and "ticket: T-1" in details
        request = await run.request()
        assert request.team_name == "travel" and request.metadata == {"ticket": "T-1"}

    # With no worker left to replay the finished run, status comes from its history and result.
    offline = await run.status()
    assert offline.status == SagaStatus.COMPLETED and offline.goal == GOAL
    assert offline.tokens == result.tokens and offline.correlation_id == run.correlation_id


@pytest.mark.integration
async def test_reject_then_dead_letter_and_redrive(dev_server: Any, keel_settings: Settings) -> None:
    keel = Keel(dev_server.client, settings=keel_settings)
    async with running_worker(dev_server.client, keel_settings):
        run = await keel.start("travel", GOAL, correlation_id=f"corr-{uuid.uuid4().hex[:8]}")
        await wait_for_review(run)
        outcome = await run.reject(reviewer="ana", reason="too expensive")
        assert outcome.decision == "reject"
        result = await run.result(wait=30)
        assert result.status == SagaStatus.COMPENSATED
        assert [c.compensation for c in result.compensations] == ["cancel_hotel", "cancel_flight"]

        failed = await eventually(
            lambda: keel.failed(team="travel"), lambda runs: run.workflow_id in [r.workflow_id for r in runs]
        )
        dead = next(r for r in failed if r.workflow_id == run.workflow_id)
        assert dead.status == "Compensated" and dead.reason and "too expensive" in dead.reason
        assert dead.uncompensated == []

        again = await keel.redrive(run.workflow_id)
        assert again.workflow_id != run.workflow_id
        request: SagaRequest = await again.request()
        assert request.metadata["redrive_of"] == run.workflow_id
        assert request.correlation_id == run.correlation_id == again.correlation_id
        assert request.goal == GOAL and request.team_name == "travel"

        # Cancelling the redriven run while it waits compensates and ends it Cancelled.
        await wait_for_review(again)
        await again.cancel(reason="test")
        final = await eventually(again.status, lambda v: v.status.is_final)
        assert final.status == SagaStatus.CANCELLED
        with pytest.raises(InvalidInput, match="already ended"):
            await again.cancel()


@pytest.mark.integration
async def test_edit_is_checked_by_the_run(dev_server: Any, keel_settings: Settings) -> None:
    keel = Keel(dev_server.client, settings=keel_settings)
    async with running_worker(dev_server.client, keel_settings):
        run = await keel.start("travel", GOAL)
        view = await wait_for_review(run)
        assert view.pending_review is not None
        with pytest.raises(ReviewRejected, match="amount_usd"):
            await run.edit({"amount_usd": -5, "description": "trip"}, reviewer="ana")
        with pytest.raises(ReviewRejected, match="not the pending one"):
            await run.approve(reviewer="ana", request_id="no-such-request")
        outcome = await run.edit({"amount_usd": 900.0, "description": "trip, discounted"}, reviewer="ana")
        assert outcome.decision == "edit"
        result = await run.result(wait=30)
        assert result.status == SagaStatus.COMPLETED
        assert result.reviews[0].arguments == {"amount_usd": 900.0, "description": "trip, discounted"}


@pytest.mark.integration
async def test_a_review_whose_worker_is_gone_is_still_listed(
    dev_server: Any, keel_settings: Settings
) -> None:
    # A short query timeout: the server may answer "no poller seen" at once or let the query
    # wait; either way the reader gets WorkerUnavailable and `pending` still lists the run.
    keel = Keel(dev_server.client, settings=keel_settings, query_timeout=timedelta(seconds=2))
    async with running_worker(dev_server.client, keel_settings):
        run = await keel.start("travel", GOAL)
        await wait_for_review(run)
    try:
        with pytest.raises(WorkerUnavailable, match=run.workflow_id):
            await run.status()
        pending = await eventually(
            lambda: keel.pending(team="travel"),
            lambda runs: run.workflow_id in [r.workflow_id for r in runs],
        )
        orphan = next(r for r in pending if r.workflow_id == run.workflow_id)
        assert orphan.waiting_for is not None and orphan.waiting_for.startswith("unknown:")
    finally:
        await run.handle.terminate(reason="test cleanup")


@pytest.mark.integration
async def test_unknown_ids_and_duplicate_ids(dev_server: Any, keel_settings: Settings) -> None:
    keel = Keel(dev_server.client, settings=keel_settings)
    with pytest.raises(RunNotFound, match="no run with workflow id 'keel-nope'"):
        await keel.get("keel-nope")
    with pytest.raises(RunNotFound):
        await RunHandle(keel, "keel-nope").signal_approve(reviewer="ana")
    with pytest.raises(RunNotFound):
        await keel.redrive("keel-nope")
    workflow_id = f"keel-test-{uuid.uuid4().hex[:12]}"
    # No worker polls this task queue: the run just sits there, which is all this test needs.
    run = await keel.start("travel", GOAL, workflow_id=workflow_id)
    try:
        assert run.workflow_id == workflow_id
        with pytest.raises(RunAlreadyExists, match=workflow_id):
            await keel.start("travel", GOAL, workflow_id=workflow_id)
        with pytest.raises(InvalidInput, match="still running"):
            await keel.redrive(workflow_id)
    finally:
        await run.handle.terminate(reason="test cleanup")


@pytest.mark.integration
async def test_the_examples_start_wait_and_review(
    dev_server: Any, keel_settings: Settings, tmp_path: Path
) -> None:
    examples = Path(__file__).parent.parent / "examples"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "KEEL_TASK_QUEUE": keel_settings.task_queue,
        "KEEL_HOME": str(tmp_path),
    }
    env.pop("KEEL_CONFIG", None)
    keel = Keel(dev_server.client, settings=keel_settings)
    async with running_worker(dev_server.client, keel_settings):
        starter = await asyncio.create_subprocess_exec(
            sys.executable,
            str(examples / "start_and_wait.py"),
            "Trip to Porto",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        # Decide once the script says what it waits for, as the person reading it would.
        assert starter.stdout is not None
        printed: list[str] = []
        while not any("waiting for a review of charge_card" in line for line in printed):
            line = await asyncio.wait_for(starter.stdout.readline(), 30)
            assert line, f"the script ended first: {printed}"
            printed.append(line.decode())
        # The dev server is shared by the session: find this test's run by its task queue.
        waiting = await eventually(
            lambda: keel.list_runs(
                status=SagaStatus.AWAITING_REVIEW, query=f"TaskQueue = '{keel_settings.task_queue}'"
            ),
            lambda runs: len(runs) == 1,
        )
        run = waiting[0]
        reviewer = await asyncio.create_subprocess_exec(
            sys.executable,
            str(examples / "review.py"),
            run.workflow_id,
            "approve",
            "--reviewer",
            "ana",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(reviewer.communicate(), 30)
        assert reviewer.returncode == 0, err.decode()
        assert "approve: " in out.decode() and "charge_card" in out.decode()
        out, err = await asyncio.wait_for(starter.communicate(), 30)
        assert starter.returncode == 0, err.decode()
        text = "".join(printed) + out.decode()
        assert f"started {run.workflow_id}" in text
        assert "waiting for a review of charge_card" in text and "status: Completed" in text
        request = await (await keel.get(run.workflow_id)).request()
        assert request.goal == "Trip to Porto"
