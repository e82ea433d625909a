"""The chaos scenarios of `make chaos` (`benchmarks/chaos.py`), with the smaller `QUICK` figures.

Real processes: `keel worker` subprocesses, an offline provider per scenario, the session's dev
server (the restart scenario starts its own on a SQLite file). Each scenario runs once per session;
several tests read its row, so a known gap can be an `xfail` without hiding the checks that hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.workflows.policies import LLM_HEARTBEAT, LLM_RETRY
from benchmarks.chaos import QUICK, SCENARIOS, Row, format_table

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TEMPORAL_RECOVERY_S = (LLM_HEARTBEAT + LLM_RETRY.initial_interval).total_seconds() + 2.0
"""What Temporal delivers with the current policy: heartbeat timeout, then the first retry interval."""
_ROWS: dict[str, Row] = {}


@pytest.fixture
def scenario(dev_server, tmp_path_factory: pytest.TempPathFactory):
    """Run a scenario once per session (on the session's dev server unless it owns one); returns its row."""

    async def run(name: str) -> Row:
        if name not in _ROWS:
            workdir: Path = tmp_path_factory.mktemp(f"chaos-{name}")
            address = None if name == "server-restart" else dev_server.address
            _ROWS[name] = await SCENARIOS[name](workdir, QUICK, address)
            print("\n" + format_table([_ROWS[name]]))
        return _ROWS[name]

    return run


def assert_holds(row: Row, *, but: tuple[str, ...] = ()) -> None:
    """Every check of `row` holds, except those named in `but`."""
    failed = [c for c in row.failed_checks() if c not in but]
    assert not failed, f"{row.fault}: {failed}\n{format_table([row])}"


async def test_worker_killed_during_llm_calls_loses_and_repeats_nothing(scenario):
    row = await scenario("kill-llm")
    assert_holds(row, but=("recovery within limit",))
    assert row.completed == row.runs and row.lost == 0 and row.duplicated == 0
    assert row.recovery_s is not None and row.recovery_s <= TEMPORAL_RECOVERY_S


async def test_worker_killed_during_tool_calls_recovers_without_duplicates(scenario):
    row = await scenario("kill-tool")
    assert row.checks["tool calls were in flight"]
    assert row.duplicated == 0
    assert row.lost == 0, "\n".join(row.details)
    assert row.recovery_s is not None and row.recovery_s <= TEMPORAL_RECOVERY_S


async def test_llm_outage_opens_breakers_and_every_run_completes(scenario):
    row = await scenario("llm-outage")
    assert_holds(row)
    assert row.recovery_s is not None and row.recovery_s <= QUICK.outage_s + QUICK.outage_reset_s + 10


async def test_429_storm_retries_wait_for_retry_after(scenario):
    row = await scenario("429-storm")
    assert_holds(row)
    assert row.recovery_s is not None and row.recovery_s >= QUICK.storm_retry_after_s - 0.005


async def test_dev_server_restart_mid_run_completes_every_run(scenario):
    row = await scenario("server-restart")
    assert_holds(row)


async def test_two_workers_one_killed_the_other_takes_over(scenario):
    row = await scenario("two-workers")
    assert_holds(row, but=("recovery within limit",))
    assert row.recovery_s is not None and row.recovery_s <= TEMPORAL_RECOVERY_S
