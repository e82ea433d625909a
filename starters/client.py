"""The Python starter API: start agent sagas, steer them, and find them again.

A script connects once and works with `RunHandle`s::

    from agentkeel.starters.client import Keel

    async with Keel() as keel:
        run = await keel.start("travel", "Book Lisbon to Berlin on 2025-06-01, 2 nights")
        print(run.workflow_id, run.ui_url)
        async for view in run.watch():
            if view.pending_review:
                await run.approve(reviewer="ana", comment="fine")
        print((await run.result()).status)

The connection follows Temporal's own env config (`TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, profiles) through
`agentkeel.temporal.connect`, with the pydantic data converter.

Everything a user can act on surfaces as a `KeelError` subclass with a
one-line message: `RunNotFound`, `TeamNotFound`, `InvalidInput`,
`ReviewRejected` (the workflow's validator refused a decision), `RunAlreadyExists`,
`RunEnded`, `RunStillRunning`, `RunStuck` (its workflow task keeps failing) and
`WorkerUnavailable` (nobody answered a query or update in time).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from agentkeel import search_attributes as sa
from agentkeel.contracts import SagaRequest, TeamSpec
from agentkeel.search_attributes import SagaStatus
from agentkeel.settings import Settings, load_settings
from agentkeel.signing import SigningError
from agentkeel.starters.errors import (
    DecisionRefused,
    InvalidInput,
    KeelError,
    ReviewRejected,
    Rpc,
    RunAlreadyExists,
    RunEnded,
    RunNotFound,
    RunStillRunning,
    RunStuck,
    TeamNotFound,
    WorkerUnavailable,
    rpc_errors,
)
from agentkeel.starters.handle import CLOSED_QUERY_TIMEOUT, WATCH_INTERVAL, RunHandle
from agentkeel.starters.listing import LISTING_QUERY_TIMEOUT, RunListing, RunSummary
from agentkeel.starters.reviewer import reviewer_key
from agentkeel.starters.start_input import (
    DETAILS_GOAL_MAX,
    DETAILS_META_MAX,
    MAX_DECISION_BYTES,
    MAX_GOAL_BYTES,
    MAX_METADATA_BYTES,
    MAX_REQUEST_BYTES,
    SUMMARY_MAX,
    check_goal_and_metadata,
    check_request_size,
    new_workflow_id,
)
from agentkeel.starters.start_input import details as _details
from agentkeel.starters.start_input import summary as _summary
from agentkeel.starters.statuses import execution_status_name, parse_status
from agentkeel.teams import TeamFileError, load_registry, load_team_file
from agentkeel.validation import format_validation_error
from agentkeel.workflows.agent_saga import AgentSagaWorkflow

if TYPE_CHECKING:
    from agentkeel.store import ContentStore

__all__ = [
    "CLOSED_QUERY_TIMEOUT",
    "DETAILS_GOAL_MAX",
    "DETAILS_META_MAX",
    "LISTING_QUERY_TIMEOUT",
    "MAX_DECISION_BYTES",
    "MAX_GOAL_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_REQUEST_BYTES",
    "QUERY_TIMEOUT",
    "SUMMARY_MAX",
    "WATCH_INTERVAL",
    "DecisionRefused",
    "InvalidInput",
    "Keel",
    "KeelError",
    "ReviewRejected",
    "RunAlreadyExists",
    "RunEnded",
    "RunHandle",
    "RunNotFound",
    "RunStillRunning",
    "RunStuck",
    "RunSummary",
    "TeamNotFound",
    "WorkerUnavailable",
    "check_goal_and_metadata",
    "check_request_size",
    "new_workflow_id",
    "parse_status",
]

QUERY_TIMEOUT = timedelta(seconds=10)
"""How long a query or update waits for a worker to answer before `WorkerUnavailable`."""

# --------------------------------------------------------------------------- client


class Keel(RunListing):
    """Entry point of the starter API: start runs, get handles, list runs, read the team registry.

    Use as an async context manager (connects on entry) or connect explicitly::

        async with Keel() as keel: ...
        keel = await Keel.connect()

    Args:
        client: A connected Temporal client (with the pydantic data converter); None connects on entry.
        settings: Platform settings; None reads `KEEL_*` and `keel.toml`.
        address: Temporal address overriding env config, used when connecting.
        namespace: Temporal namespace overriding env config, used when connecting.
        query_timeout: How long queries and updates wait for a worker.
        reviewer_key: Private key file that signs review decisions; None uses `KEEL_REVIEWER_KEY`.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        settings: Settings | None = None,
        address: str | None = None,
        namespace: str | None = None,
        query_timeout: timedelta = QUERY_TIMEOUT,
        reviewer_key: str | Path | None = None,
    ) -> None:
        self._client = client
        self.settings = settings or load_settings()
        self._address = address
        self._namespace = namespace
        self.query_timeout = query_timeout
        self._reviewer_key_path = reviewer_key
        self._store: ContentStore | None = None

    def store_url(self) -> str:
        """The conversation store this client reads, its password masked (for messages)."""
        from agentkeel.store import masked_url, store_url

        return masked_url(store_url(self.settings))

    def store(self) -> ContentStore:
        """The conversation store of `settings` (opened on first use, closed with the client).

        Raises:
            agentkeel.store.StoreConfigError: the store URL is invalid.
        """
        if self._store is None:
            from agentkeel.store import open_store

            self._store = open_store(self.settings)
        return self._store

    def signing_key(self) -> Ed25519PrivateKey | None:
        """The key that signs this client's review decisions, or None.

        Raises:
            InvalidInput: the key file is missing or is not an Ed25519 private key.
        """
        try:
            return reviewer_key(self._reviewer_key_path)
        except SigningError as exc:
            raise InvalidInput(str(exc)) from None

    @classmethod
    async def connect(
        cls,
        *,
        settings: Settings | None = None,
        address: str | None = None,
        namespace: str | None = None,
        query_timeout: timedelta = QUERY_TIMEOUT,
    ) -> Keel:
        """Connect to Temporal the platform's way and return a ready `Keel`.

        Raises:
            agentkeel.temporal.TemporalUnavailable: the server does not answer (a `ConnectionError`).
            agentkeel.settings.ConfigError: `keel.toml` or a `KEEL_*` variable is invalid.
        """
        keel = cls(settings=settings, address=address, namespace=namespace, query_timeout=query_timeout)
        await keel._ensure_client()
        return keel

    async def _ensure_client(self) -> Client:
        if self._client is None:
            from agentkeel.temporal import connect

            self._client = await connect(address=self._address, namespace=self._namespace)
        return self._client

    async def __aenter__(self) -> Keel:
        await self._ensure_client()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Temporal clients hold no per-use resources to release; the runtime outlives them.
        if self._store is not None:
            await self._store.aclose()
            self._store = None

    @property
    def client(self) -> Client:
        """The Temporal client (connect first)."""
        if self._client is None:
            raise RuntimeError("Keel is not connected: use `async with Keel()` or `await Keel.connect()`")
        return self._client

    def ui_url(self, workflow_id: str | None = None) -> str:
        """Link to a run (or the workflow list) in the Temporal Web UI."""
        from agentkeel.temporal import ui_url

        namespace = self._client.namespace if self._client is not None else self._namespace
        return ui_url(workflow_id, namespace=namespace, base=self.settings.ui_url)

    # ------------------------------------------------------------------ teams

    def teams(self) -> dict[str, TeamSpec]:
        """The registered teams by name: the built-in ones, the apps' (the settings' and those of an
        `AgentkeelPlugin` the client was connected with) and those in `Settings.teams_dir`.

        Raises:
            InvalidInput: a team file in the registry is invalid.
        """
        apps: list[Any] = list(self.settings.apps)
        if self._client is not None:
            from agentkeel.plugin import AgentkeelPlugin

            for plugin in self._client.config().get("plugins", []):
                if isinstance(plugin, AgentkeelPlugin):
                    apps += [app for app in plugin.apps if app not in apps]
        try:
            return load_registry(self.settings.teams_dir, apps)
        except TeamFileError as exc:
            raise InvalidInput(str(exc)) from None

    def resolve_team(self, team: str | TeamSpec | Path) -> tuple[str | None, TeamSpec]:
        """Check a team before starting: a registered name, a `TeamSpec`, or a team file.

        Returns:
            `(team_name, spec)`: `team_name` is set for a registered team (the worker resolves it,
            so the spec it used lands in the run's history), None for a spec or a file.

        Raises:
            TeamNotFound: a name that is neither registered nor an existing file.
            InvalidInput: the team file or spec is invalid.
        """
        if isinstance(team, TeamSpec):
            return None, team
        if isinstance(team, Path):
            return None, _load_file(team)
        registry = self.teams()
        if team in registry:
            return team, registry[team]
        path = Path(team)
        if path.suffix in (".yaml", ".yml", ".json") or path.exists():
            return None, _load_file(path)
        raise TeamNotFound(team, list(registry))

    # ------------------------------------------------------------------ starting

    async def start(
        self,
        team: str | TeamSpec | Path,
        goal: str,
        *,
        workflow_id: str | None = None,
        correlation_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        reuse_id: bool = False,
    ) -> RunHandle:
        """Start an agent saga.

        Everything is validated before the start: workflow input that fails validation in the
        worker would make the run's first task retry forever.

        Args:
            team: A registered team name, a `TeamSpec`, or the path of a YAML/JSON team file.
            goal: What the team should achieve.
            workflow_id: Default `keel-<team>-<12 hex chars>`.
            correlation_id: Default a fresh uuid4 hex; carried to every activity, log line and HTTP call.
            metadata: String key/values stored with the request (shown in the UI's details).
            reuse_id: Allow `workflow_id` to be the id of a closed run (the new run gets its own
                idempotency keys, so it never shares side effects with the old one).

        Returns:
            A handle on the started run.

        Raises:
            TeamNotFound: unknown team name.
            InvalidInput: bad team file, empty goal, non-string metadata, a goal or metadata over
                its size limit, a model alias the settings do not define, server-side validation.
            RunAlreadyExists: `workflow_id` is running, or has run and `reuse_id` is False.
        """
        team_name, spec = self.resolve_team(team)
        try:
            request = SagaRequest(
                goal=goal,
                team=None if team_name else spec,
                team_name=team_name,
                correlation_id=correlation_id or uuid.uuid4().hex,
                metadata=dict(metadata or {}),
            )
        except ValidationError as exc:
            raise InvalidInput(f"invalid request: {format_validation_error(exc)}") from None
        self.check_models(spec)
        return await self.start_request(request, workflow_id=workflow_id, entry=spec.entry, reuse_id=reuse_id)

    def check_models(self, spec: TeamSpec) -> None:
        """Refuse a team whose agents name a model alias the loaded settings do not define.

        Checked at start, so a typo fails at once rather than at the run's first LLM call.
        The worker reads the same `keel.toml`; a worker configured differently is not seen here.

        Raises:
            InvalidInput: an unknown alias (with the configured ones), or an invalid `keel.toml`.
        """
        from agentkeel.activities.llm_config import LLMConfig

        try:
            config = LLMConfig.load(self.settings)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        unknown = sorted({a.model for a in spec.agents if a.model not in config.models})
        if unknown:
            agents = ", ".join(f"{a.name} ({a.model})" for a in spec.agents if a.model in unknown)
            raise InvalidInput(
                f"team {spec.name!r}: unknown model alias {', '.join(map(repr, unknown))} used by {agents}; "
                f"configured aliases: {', '.join(sorted(config.models))}"
            )

    async def start_request(
        self,
        request: SagaRequest,
        *,
        workflow_id: str | None = None,
        entry: str | None = None,
        reuse_id: bool = False,
    ) -> RunHandle:
        """Start a run from a prepared `SagaRequest` (used by `start` and `redrive`).

        Args:
            request: The run's input.
            workflow_id: Default `keel-<team>-<12 hex chars>`.
            entry: The team's entry agent, shown from the start.
            reuse_id: Allow the id of a run that has ended (see `start`).

        Raises:
            InvalidInput: the request is over a size limit, or the server refused the start
                (for instance unknown search attributes).
            RunAlreadyExists: `workflow_id` is running, or has run and `reuse_id` is False.
        """
        if request.checkpoint is not None:
            raise InvalidInput("a request with a checkpoint is the workflow's own continue-as-new input")
        check_request_size(request)
        if request.correlation_id is None:
            request = request.model_copy(update={"correlation_id": uuid.uuid4().hex})
        team = request.team_label
        workflow_id = workflow_id or new_workflow_id(team)
        # Every attribute the run would set in its first task, set here instead: the run writes
        # only what differs, so a fresh run starts without an upsert of its own, and the
        # filters of the UI (`KeelCostUsd > 0.1`, `KeelAgent = "..."`) see it from its start.
        pairs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(sa.KEEL_STATUS, SagaStatus.RUNNING.value),
            SearchAttributePair(sa.KEEL_TEAM, team),
            SearchAttributePair(sa.KEEL_CORRELATION_ID, str(request.correlation_id)),
            SearchAttributePair(sa.KEEL_TOKENS, 0),
            SearchAttributePair(sa.KEEL_COST_USD, 0.0),
        ]
        if entry:
            pairs.append(SearchAttributePair(sa.KEEL_AGENT, entry))
        attributes = TypedSearchAttributes(pairs)
        try:
            with rpc_errors(Rpc(refused="start")):
                handle = await self.client.start_workflow(
                    AgentSagaWorkflow.run,
                    request,
                    id=workflow_id,
                    task_queue=self.settings.task_queue,
                    search_attributes=attributes,
                    static_summary=_summary(team, request.goal),
                    static_details=_details(request, entry, workflow_id),
                    id_reuse_policy=(
                        WorkflowIDReusePolicy.ALLOW_DUPLICATE
                        if reuse_id
                        else WorkflowIDReusePolicy.REJECT_DUPLICATE
                    ),
                )
        except WorkflowAlreadyStartedError:
            raise await self._already_exists(workflow_id) from None
        return self.handle(
            workflow_id,
            handle.first_execution_run_id or handle.result_run_id,
            correlation_id=request.correlation_id,
        )

    async def _already_exists(self, workflow_id: str) -> RunAlreadyExists:
        try:
            execution = await self.handle(workflow_id).execution_status()
        except (RunNotFound, RPCError):
            execution = WorkflowExecutionStatus.RUNNING
        if execution == WorkflowExecutionStatus.RUNNING:
            return RunAlreadyExists(f"a run with id {workflow_id} is already running")
        return RunAlreadyExists(
            f"a run with id {workflow_id} already ran ({execution_status_name(execution)}); "
            "pass --reuse-id (reuse_id=True) to start a new run with this id and fresh idempotency keys"
        )

    async def get(self, workflow_id: str) -> RunHandle:
        """A handle on an existing run.

        Raises:
            RunNotFound: no such workflow id.
        """
        handle = self.handle(workflow_id)
        await handle.execution_status()
        return handle

    def handle(
        self, workflow_id: str, run_id: str | None = None, *, correlation_id: str | None = None
    ) -> RunHandle:
        """A handle on a run without asking the server anything: the first call on it finds out
        whether the run exists (`RunNotFound`). For one-RPC work such as `approve`."""
        return RunHandle(self, workflow_id, run_id, correlation_id=correlation_id)

    async def redrive(
        self,
        workflow_id: str,
        *,
        new_workflow_id: str | None = None,
        correlation_id: str | None = None,
        reuse_id: bool = False,
    ) -> RunHandle:
        """Start a new run with the same request as a finished one (the dead-letter redrive).

        The new run keeps the correlation id (both runs belong to one business transaction)
        and records the old one in `metadata["redrive_of"]`. Redriving under the old run's own id
        (`new_workflow_id=workflow_id`) needs `reuse_id=True`.

        Args:
            workflow_id: The finished run.
            new_workflow_id: Id of the new run (default a fresh one).
            correlation_id: Default the old run's.
            reuse_id: Allow `new_workflow_id` to be the id of a run that has ended (the old run's own
                id included); the new run gets side effects of its own.

        Raises:
            RunNotFound: no such workflow id.
            RunStillRunning: the run is still going (cancel it first).
            RunAlreadyExists: `new_workflow_id` is taken (see `reuse_id`).
        """
        old = await self.get(workflow_id)
        execution = await old.execution_status()
        if execution == WorkflowExecutionStatus.RUNNING:
            raise RunStillRunning(f"run {workflow_id} is still running; cancel it before redriving")
        request = await old.request()
        team: TeamSpec | None = request.team
        if request.checkpoint is not None and request.team_name is None:
            team = request.checkpoint.team
        redriven = SagaRequest(
            goal=request.goal,
            team=team,
            team_name=request.team_name,
            correlation_id=correlation_id
            or request.correlation_id
            or (request.checkpoint.correlation_id if request.checkpoint else None),
            metadata={**request.metadata, "redrive_of": workflow_id},
        )
        if redriven.team_name is not None and redriven.team_name not in self.teams():
            raise TeamNotFound(redriven.team_name, list(self.teams()))
        entry = team.entry if team else self.teams()[str(redriven.team_name)].entry
        return await self.start_request(redriven, workflow_id=new_workflow_id, entry=entry, reuse_id=reuse_id)


def _load_file(path: Path) -> TeamSpec:
    try:
        return load_team_file(path)
    except TeamFileError as exc:
        raise InvalidInput(str(exc)) from None
