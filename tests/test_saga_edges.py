"""Saga correctness at the edges, end to end: reused ids, anonymous and unsigned decisions, honest endings.

Real dev server, the platform's worker, the offline provider, the `keel` CLI and the stock `temporal` CLI.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from agentkeel.examples.travel import team as travel_team
from agentkeel.examples.travel.ledger import Ledger
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings
from agentkeel.signing import write_key_pair
from agentkeel.starters.client import Keel, RunAlreadyExists
from agentkeel.workers.worker import running_worker
from tests.test_cli_runs import akeel, cli_env, server_env  # noqa: F401  (fixtures)
from tests.test_starter_api import eventually, wait_for_review

pytestmark = pytest.mark.integration

GOAL = "Trip to Lisbon, Dec 10, 3 nights"
TEMPORAL = str(Path(sys.executable).parent / "temporal")


def _temporal(*args: str, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TEMPORAL, *args, "--address", address], capture_output=True, text=True, timeout=30, check=False
    )


async def test_a_reused_id_never_touches_the_side_effects_of_the_run_that_had_it(
    dev_server: Any,
    server_env: Settings,  # noqa: F811
) -> None:
    api = Keel(dev_server.client, settings=server_env)
    workflow_id = f"keel-travel-{uuid.uuid4().hex[:12]}"
    async with running_worker(dev_server.client, server_env):
        first = await api.start("travel", GOAL, workflow_id=workflow_id)
        await wait_for_review(first)
        await first.approve(reviewer="ana")
        assert (await first.result()).status == SagaStatus.COMPLETED
        ledger = Ledger(server_env.ledger)
        before = ledger.entries(workflow_id)
        assert [e.action for e in before] == ["book_flight", "book_hotel", "charge_card"]

        with pytest.raises(RunAlreadyExists, match="already ran"):
            await api.start("travel", GOAL, workflow_id=workflow_id)
        second = await api.start("travel", GOAL, workflow_id=workflow_id, reuse_id=True)
        await wait_for_review(second)
        await second.reject(reviewer="ana", reason="changed my mind")
        result = await second.result()
        assert result.status == SagaStatus.COMPENSATED

        after = ledger.entries(workflow_id)
        ledger.close()
        # The completed run's three entries are exactly as they were: nothing reversed, nothing reused.
        assert after[:3] == before
        new = after[3:]
        assert [e.action for e in new] == ["book_flight", "book_hotel", "cancel_hotel", "cancel_flight"]
        old_keys = {e.idempotency_key for e in before}
        assert not old_keys & {e.idempotency_key for e in new}
        assert {e.reverses for e in new[2:]} == {new[0].idempotency_key, new[1].idempotency_key}


async def test_an_empty_stock_cli_signal_is_refused_and_shown_by_keel_status(
    dev_server: Any,
    server_env: Settings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = Keel(dev_server.client, settings=server_env)
    async with running_worker(dev_server.client, server_env):
        run = await api.start("travel", GOAL)
        await wait_for_review(run)
        for extra in ([], ["--input", "null"], ["--input", "{}"]):
            sent = _temporal(
                "workflow",
                "signal",
                "--workflow-id",
                run.workflow_id,
                "--name",
                "approve",
                *extra,
                address=dev_server.address,
            )
            assert sent.returncode == 0, sent.stderr
        view = await eventually(run.status, lambda v: len(v.rejected_signals) == 3)
        assert view.status == SagaStatus.AWAITING_REVIEW
        code, out, err = await akeel(capsys, "status", run.workflow_id)
        assert code == 0, err
        assert "refused decisions and signals:" in out and "non-empty reviewer" in out
        await run.reject(reviewer="ana", reason="test over")
        await run.result()


async def test_signed_review_refuses_an_unsigned_keel_approve_and_takes_a_signed_one(
    dev_server: Any,
    server_env: Settings,  # noqa: F811
    cli_env: pytest.MonkeyPatch,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "ana.key"
    public = write_key_pair(key_file)
    travel = travel_team()
    signed_team = travel.model_copy(
        update={"review": travel.review.model_copy(update={"reviewer_keys": [public]})}
    )
    (tmp_path / "signed.json").write_text(signed_team.model_dump_json())
    cli_env.setenv("KEEL_REVIEWER", "ana")
    async with running_worker(dev_server.client, server_env):
        code, out, err = await akeel(
            capsys, "start", "--team-file", str(tmp_path / "signed.json"), GOAL, "--json"
        )
        assert code == 0, err
        workflow_id = json.loads(out)["workflow_id"]
        api = Keel(dev_server.client, settings=server_env)
        run = await api.get(workflow_id)
        await wait_for_review(run)

        code, out, err = await akeel(capsys, "approve", workflow_id)
        assert code == 5, (out, err)
        assert "signed decisions only" in err
        assert (await run.status()).status == SagaStatus.AWAITING_REVIEW

        cli_env.setenv("KEEL_REVIEWER_KEY", str(key_file))
        code, out, err = await akeel(capsys, "approve", workflow_id)
        assert code == 0, err
        assert "as ana (from KEEL_REVIEWER, signed)" in out
        result = await run.result()
        assert result.status == SagaStatus.COMPLETED
        assert result.reviews[0].reviewer == "ana"
        view = await run.status()
        assert "signed decisions only" in view.rejected_signals[0].error


async def test_a_rejected_run_is_failed_for_temporal_and_listed_by_execution_status(
    dev_server: Any,
    server_env: Settings,  # noqa: F811
) -> None:
    api = Keel(dev_server.client, settings=server_env)
    async with running_worker(dev_server.client, server_env):
        run = await api.start("travel", GOAL)
        await wait_for_review(run)
        await run.reject(reviewer="ana", reason="no")
        result = await run.result()
        assert result.status == SagaStatus.COMPENSATED
        assert [c.compensation for c in result.compensations] == ["cancel_hotel", "cancel_flight"]

        async def failed_ids() -> str:
            listed = _temporal(
                "workflow",
                "list",
                "--query",
                'ExecutionStatus="Failed"',
                "-o",
                "json",
                address=dev_server.address,
            )
            return listed.stdout

        await eventually(failed_ids, lambda out: run.workflow_id in out)
        view = await run.status()
        assert view.status == SagaStatus.COMPENSATED and view.pending_review is None
        await asyncio.sleep(0)
