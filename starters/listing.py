"""Finding runs: visibility queries over the Keel* search attributes, and the pending and dead-letter views.

`RunListing` is the part of `Keel` that lists; `RunSummary` is one row of a listing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError

from agentkeel import search_attributes as sa
from agentkeel.contracts import ReviewRequest
from agentkeel.names import AGENT_SAGA_WORKFLOW
from agentkeel.search_attributes import SagaStatus
from agentkeel.starters.errors import (
    InvalidInput,
    KeelError,
    Rpc,
    RunNotFound,
    RunStuck,
    WorkerUnavailable,
    rpc_errors,
)
from agentkeel.starters.statuses import TEMPORAL_ONLY, execution_status_name, parse_status, run_status

if TYPE_CHECKING:
    from agentkeel.starters.handle import RunHandle

LISTING_QUERY_TIMEOUT = timedelta(seconds=3)
"""How long `pending` waits for each run's worker: one run whose worker is gone must not
hold up the list (it is shown as unknown)."""


class RunSummary(BaseModel):
    """One run as seen by a visibility query, plus what the `pending`/`failed` views add.

    Attributes:
        workflow_id: The run's workflow id.
        run_id: The latest run id of the workflow id.
        status: `KeelStatus` (a `SagaStatus` value), or Temporal's own status when the run ended
            without setting one (`Terminated`, `TimedOut`, `Cancelled`, `Failed`).
        execution_status: Temporal's execution status (`Running`, `Completed`, `Failed`, ...).
        team: `KeelTeam`.
        agent: `KeelAgent`, the active agent last upserted.
        correlation_id: `KeelCorrelationId`.
        tokens: `KeelTokens`.
        cost_usd: `KeelCostUsd`.
        started_at: When the run started.
        closed_at: When it ended, if it did.
        ui_url: Link to the run in the Temporal Web UI.
        pending_review: For `Keel.pending()`: what the run waits for.
        waiting_for: For `Keel.pending()`: the run's own description of what it waits for.
        reason: For `Keel.failed()`: why the run ended.
        uncompensated: For `Keel.failed()`: steps whose compensation did not succeed.
        stuck: For live runs whose workflow task keeps failing: the worker's error.
    """

    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    run_id: str
    status: str
    execution_status: str
    team: str | None = None
    agent: str | None = None
    correlation_id: str | None = None
    tokens: int | None = None
    cost_usd: float | None = None
    started_at: datetime | None = None
    closed_at: datetime | None = None
    ui_url: str = ""
    pending_review: ReviewRequest | None = None
    waiting_for: str | None = None
    reason: str | None = None
    uncompensated: list[str] = Field(default_factory=list)
    stuck: str | None = None


def quote(value: str) -> str:
    """A visibility-query string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RunListing:
    """The listing half of `Keel`: `list_runs`, `pending` and `failed`."""

    if TYPE_CHECKING:
        client: Client
        query_timeout: timedelta

        def ui_url(self, workflow_id: str | None = None) -> str: ...

        def handle(self, workflow_id: str, run_id: str | None = None) -> RunHandle: ...

    async def list_runs(
        self,
        *,
        status: SagaStatus | str | None = None,
        team: str | None = None,
        correlation_id: str | None = None,
        limit: int = 50,
        query: str | None = None,
    ) -> list[RunSummary]:
        """Runs of `AgentSagaWorkflow`, newest first, found through the Keel* search attributes.

        Args:
            status: Only runs whose `KeelStatus` is this.
            team: Only runs of this team.
            correlation_id: Only runs with this correlation id.
            limit: At most this many runs.
            query: Extra visibility-query clause, ANDed with the rest.

        Raises:
            InvalidInput: an unknown status, a limit below 1, or a query the server refuses.
        """
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        clauses = [f"WorkflowType = {quote(AGENT_SAGA_WORKFLOW)}"]
        if status is not None:
            wanted = status if isinstance(status, SagaStatus) else parse_status(status)
            if wanted in TEMPORAL_ONLY:
                # Never upserted by a run: only Temporal's own status knows it.
                clauses.append(f"ExecutionStatus = {quote(TEMPORAL_ONLY[wanted])}")
            else:
                clauses.append(f"{sa.KEEL_STATUS.name} = {quote(wanted.value)}")
        if team:
            clauses.append(f"{sa.KEEL_TEAM.name} = {quote(team)}")
        if correlation_id:
            clauses.append(f"{sa.KEEL_CORRELATION_ID.name} = {quote(correlation_id)}")
        if query:
            clauses.append(f"({query})")
        runs = await self._list(" AND ".join(clauses), limit)
        return await self._mark_stuck(runs)

    async def _list(self, query: str, limit: int) -> list[RunSummary]:
        """Runs matching `query`, newest start first.

        SQL visibility (the dev server's) refuses `ORDER BY` and lists open runs first, then closed
        ones by close time. Open and closed runs are read separately, `limit` of each, and merged by
        start time.
        """
        runs: list[RunSummary] = []
        with rpc_errors(Rpc(refused="query")):
            for part in ("ExecutionStatus = 'Running'", "ExecutionStatus != 'Running'"):
                async for execution in self.client.list_workflows(
                    f"({query}) AND {part}", limit=limit, page_size=min(limit, 1000)
                ):
                    runs.append(self._summarize(execution))
        oldest = datetime.min.replace(tzinfo=UTC)
        runs.sort(key=lambda r: (r.started_at or oldest, r.workflow_id), reverse=True)
        return runs[:limit]

    async def _mark_stuck(self, runs: list[RunSummary]) -> list[RunSummary]:
        """Add the worker's error to the live runs whose workflow task keeps failing."""
        gate = asyncio.Semaphore(16)

        async def check(run: RunSummary) -> RunSummary:
            if run.execution_status != "Running":
                return run
            async with gate:
                try:
                    problem = await self.handle(run.workflow_id).stuck()
                except (KeelError, RPCError):
                    return run  # gone since the listing, or not readable: shown as listed
            return run.model_copy(update={"stuck": problem}) if problem else run

        return list(await asyncio.gather(*(check(run) for run in runs)))

    def _summarize(self, execution: WorkflowExecution) -> RunSummary:
        attrs = execution.typed_search_attributes
        keel_status = attrs.get(sa.KEEL_STATUS)
        return RunSummary(
            workflow_id=execution.id,
            run_id=execution.run_id,
            status=run_status(keel_status, execution.status),
            execution_status=execution_status_name(execution.status),
            team=attrs.get(sa.KEEL_TEAM),
            agent=attrs.get(sa.KEEL_AGENT),
            correlation_id=attrs.get(sa.KEEL_CORRELATION_ID),
            tokens=attrs.get(sa.KEEL_TOKENS),
            cost_usd=attrs.get(sa.KEEL_COST_USD),
            started_at=execution.start_time,
            closed_at=execution.close_time,
            ui_url=self.ui_url(execution.id),
        )

    async def pending(self, *, team: str | None = None, limit: int = 50) -> list[RunSummary]:
        """Live runs waiting for a person: those waiting for a review, each with the review it waits
        for (from the status query), and those stuck (their workflow task keeps failing, with the
        worker's error in `stuck`), which need someone to fix the worker.

        A run whose worker does not answer is still listed, with `waiting_for` saying so.
        """
        live = "ExecutionStatus = 'Running'"
        awaiting = await self.list_runs(status=SagaStatus.AWAITING_REVIEW, team=team, limit=limit, query=live)
        # A run stuck before its first task completed still has the `Running` set at its start.
        running = await self.list_runs(status=SagaStatus.RUNNING, team=team, limit=limit, query=live)
        stuck = [run for run in [*awaiting, *running] if run.stuck]
        runs = [run for run in awaiting if not run.stuck]

        async def fill(run: RunSummary) -> RunSummary:
            try:
                view = await self.handle(run.workflow_id, run.run_id).status(
                    worker_wait=min(self.query_timeout, LISTING_QUERY_TIMEOUT)
                )
            except (WorkerUnavailable, RunNotFound, RunStuck) as exc:
                return run.model_copy(update={"waiting_for": f"unknown: {exc}"})
            return run.model_copy(
                update={
                    "status": view.status.value,
                    "pending_review": view.pending_review,
                    "waiting_for": view.waiting_for,
                }
            )

        filled = await asyncio.gather(*(fill(run) for run in runs))
        # A review decided since the visibility record was written is no longer pending.
        waiting = [run for run in filled if run.status == SagaStatus.AWAITING_REVIEW.value]
        oldest = datetime.min.replace(tzinfo=UTC)
        both = sorted([*stuck, *waiting], key=lambda r: r.started_at or oldest, reverse=True)
        return both[:limit]

    async def failed(self, *, team: str | None = None, limit: int = 50) -> list[RunSummary]:
        """The dead-letter view: runs that ended Failed or Compensated, or that Temporal ended abnormally.

        Each comes with the reason and the steps left uncompensated, read from the run's result
        (or its failure, for runs that ended without one).
        """
        keel = sa.KEEL_STATUS.name
        finals = ", ".join(quote(s.value) for s in (SagaStatus.FAILED, SagaStatus.COMPENSATED))
        clause = (
            f"ExecutionStatus != 'Running' AND ({keel} IN ({finals}) "
            "OR ExecutionStatus IN ('Failed', 'Terminated', 'TimedOut'))"
        )
        runs = await self.list_runs(team=team, limit=limit, query=clause)

        async def fill(run: RunSummary) -> RunSummary:
            try:
                result = await self.handle(run.workflow_id, run.run_id).result(wait=10)
            except (KeelError, TimeoutError) as exc:
                return run.model_copy(update={"reason": str(exc)})
            return run.model_copy(
                update={
                    "status": result.status.value,
                    "reason": result.reason,
                    "uncompensated": list(result.uncompensated),
                }
            )

        return list(await asyncio.gather(*(fill(run) for run in runs)))
