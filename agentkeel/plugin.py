"""`AgentkeelPlugin`: the one object that configures a client, a worker or a Replayer for agentkeel.

Built on `temporalio.plugin.SimplePlugin`, as Temporal's own integrations are::

    client = await Client.connect("localhost:7233", plugins=[AgentkeelPlugin()])   # starters
    worker = Worker(client, task_queue="agentkeel")       # inherits the client's plugin
    replayer = Replayer(workflows=[], plugins=[AgentkeelPlugin()])

It brings the pydantic data converter with the platform's codec (compression,
encryption with `KEEL_ENCRYPTION_KEY`), the log-context and heartbeat
interceptor, the workflow sandbox with its pass-through list, the platform's
workflows and activities (`call_llm`, `resolve_team`), and the tools and teams
of the apps handed to it. Nothing else needs copying into a user's worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.plugin import SimplePlugin
from temporalio.worker import Interceptor, WorkerConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from agentkeel.app import ActivitySet, App, resolve_apps
from agentkeel.contracts import TeamSpec
from agentkeel.logs import get_logger
from agentkeel.mcp.contracts import MCPServerSpec
from agentkeel.names import activity_name
from agentkeel.settings import Settings, load_settings
from agentkeel.tools import sync_tool_pool

PLUGIN_NAME = "agentkeel.AgentkeelPlugin"
log = get_logger(__name__)

PASSTHROUGH_MODULES: tuple[str, ...] = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "structlog",
    "yaml",
    "jsonschema",
    "cryptography",
    # The platform's deterministic, side-effect-free core: contracts and names. Not `agentkeel`
    # as a whole: the workflows' own modules (`agentkeel.workflows.*`) run inside the sandbox.
    "agentkeel.contracts",
    "agentkeel.team_specs",
    "agentkeel.conversation",
    "agentkeel.errors",
    "agentkeel.names",
    "agentkeel.schemas",
    "agentkeel.search_attributes",
    "agentkeel.signing",
    "agentkeel.review_conditions",
    "agentkeel.validation",
    # MCP tools: the SDK's models (what temporalio-mcp's activities return) and the team's MCP specs.
    "mcp",
    "mcp_types",
    "agentkeel.mcp",
)
"""Deterministic modules imported once, outside the sandbox, instead of once per workflow run."""


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandboxed runner with the platform's pass-through modules."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


def _workflow_name(cls: type) -> str:
    defn = getattr(cls, "__temporal_workflow_definition", None)
    return str(getattr(defn, "name", None) or cls.__name__)


def _merge(existing: Sequence[Any] | None, extra: Sequence[Any], name: Callable[[Any], str]) -> list[Any]:
    """`existing` then `extra`, one per name: what the caller registered wins (a test double, an
    override), and a second AgentkeelPlugin (on the client and on the worker) adds nothing twice."""
    merged = list(existing or [])
    seen = {name(item) for item in merged}
    for item in extra:
        if name(item) not in seen:
            merged.append(item)
            seen.add(name(item))
    return merged


class AgentkeelPlugin(SimplePlugin):
    """Configures clients, workers and Replayers for agentkeel.

    Args:
        settings: Platform settings (LLM providers, teams folder, ledger...); default `load_settings()`.
        apps: `App`s or `MODULE[:ATTR]` references whose tools and teams the worker registers;
            default the `apps` of the settings (`keel.toml`, `KEEL_APPS`).
        activities: More activity callables to register.
        teams: More teams to register by name (`TeamSpec`s or team file paths).
        platform_activities: Register `call_llm` and `resolve_team` (False for tests that bring
            doubles of both, or workers that only run tools).
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        apps: Sequence[App | str] | None = None,
        activities: Sequence[Callable[..., Any]] = (),
        teams: Sequence[TeamSpec | str | Path] = (),
        platform_activities: bool = True,
    ) -> None:
        from agentkeel.codec import build_data_converter
        from agentkeel.workers.interceptors import ContextInterceptor
        from agentkeel.workflows.registry import ALL_WORKFLOWS

        self.settings = settings or load_settings()
        self.apps = resolve_apps(self.settings.apps if apps is None else apps)
        extra = App(name="plugin", teams=list(teams), activities=list(activities))
        if extra.teams or extra.activities:
            self.apps.append(extra)
        self.platform_activities = platform_activities
        self._open: list[ActivitySet] = []
        self._mcp: Any = None
        """temporalio-mcp's `MCPPlugin` for the MCP servers of the worker's teams (built with the worker)."""
        super().__init__(
            PLUGIN_NAME,
            data_converter=build_data_converter(self.settings),
            interceptors=[ContextInterceptor()],
            workflows=list(ALL_WORKFLOWS),
            workflow_runner=workflow_runner(),
            run_context=self._run_context,
        )

    def build_activities(self) -> ActivitySet:
        """Open the platform's and the apps' activities for one worker (closed after it stops)."""
        from agentkeel.activities.teams import TeamActivities

        built = ActivitySet()
        if self.platform_activities:
            from agentkeel.activities.llm import LLMActivities
            from agentkeel.activities.llm_config import LLMConfig

            llm = LLMActivities(LLMConfig.load(self.settings))
            teams = TeamActivities(self.settings.teams_dir, apps=self.apps)
            built.activities += [llm.call_llm, teams.resolve_team]
            built.closers.append(llm.aclose)
        for app in self.apps:
            part = app.build_activities(self.settings)
            built.activities += part.activities
            built.closers += part.closers
        return built

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        """Add the platform's workflows, activities, interceptor and sandbox to a worker.

        Raises:
            ValueError: the worker's client does not use the platform's data converter (a worker
                uses its client's converter, which a worker plugin cannot change).
        """
        client = config.get("client")
        if client is not None:
            converter_class = client.data_converter.payload_converter_class
            if not issubclass(converter_class, PydanticPayloadConverter):
                raise ValueError(
                    "the worker's client does not use agentkeel's data converter: connect it with "
                    "Client.connect(..., plugins=[AgentkeelPlugin()]) and build the worker from it"
                )
        existing_workflows = config.get("workflows")
        existing_activities = config.get("activities")
        config = super().configure_worker({**config, "workflows": [], "activities": []})
        config["workflows"] = _merge(existing_workflows, config.get("workflows") or [], _workflow_name)
        built = self.build_activities()
        self._open.append(built)
        config["interceptors"] = _merge(
            [],
            [*(config.get("interceptors") or []), self._store_interceptor(built)],
            lambda i: type(i).__qualname__,
        )
        config["activities"] = _merge(existing_activities, built.activities, activity_name)
        config = self._configure_mcp(config)
        # `@tool` sync functions run on the tool pool (sized here, once per process); activities
        # written as plain sync functions run on the worker's executor.
        sync_tool_pool(self.settings.max_concurrent_activities)
        if config.get("activity_executor") is None:
            config["activity_executor"] = ThreadPoolExecutor(
                max_workers=self.settings.max_concurrent_activities
            )
        return config

    def _store_interceptor(self, built: ActivitySet) -> Interceptor:
        """The worker's conversation store, behind the interceptor that resolves and stores content."""
        from agentkeel.activities.conversation import ConversationLayer
        from agentkeel.store import open_store
        from agentkeel.workers.store_interceptor import StoreInterceptor

        store = open_store(self.settings)
        built.closers.append(store.aclose)
        return StoreInterceptor(ConversationLayer(store))

    def mcp_servers(self) -> dict[str, MCPServerSpec]:
        """The MCP servers the worker's teams declare (the apps' and `teams_dir`'s), by name.

        Raises:
            MCPConfigError: Two teams declare one server differently.
        """
        from agentkeel.mcp.servers import servers_of
        from agentkeel.teams import TeamFileError, load_registry

        try:
            teams = load_registry(self.settings.teams_dir, self.apps)
        except TeamFileError as exc:
            # Runs of these teams fail at resolution with this same error; the worker still serves the rest.
            log.warning("teams not loaded: their MCP servers are not registered", error=str(exc))
            return {}
        return servers_of(teams.values())

    def _configure_mcp(self, config: WorkerConfig) -> WorkerConfig:
        """Compose temporalio-mcp's `MCPPlugin` for the teams' MCP servers, behind their circuit breakers.

        A worker only connects to servers declared by the teams it registers: a run's inline team
        names a server, and the worker's declaration of that name is the one used.
        """
        servers = self.mcp_servers()
        if not servers:
            self._mcp = None
            return config
        # Imported only here: a worker without MCP servers never loads the MCP SDK.
        from agentkeel.activities.mcp import MCPBreakerInterceptor, compensation_unresolved, mcp_plugin

        self._mcp = mcp_plugin(servers)
        # Its activities and ours are merged by name, like the platform's: with a plugin on the client
        # and another on the worker, the first one's are registered and nothing twice.
        existing = config.get("activities")
        config = self._mcp.configure_worker({**config, "activities": []})
        extra = [*(config.get("activities") or []), compensation_unresolved]
        config["activities"] = _merge(existing, extra, activity_name)
        interceptors = [*(config.get("interceptors") or []), MCPBreakerInterceptor(servers)]
        config["interceptors"] = _merge([], interceptors, lambda i: type(i).__qualname__)
        return config

    @asynccontextmanager
    async def _run_context(self) -> AsyncIterator[None]:
        try:
            if self._mcp is not None:
                async with self._mcp.run_context():  # closes the MCP connections the worker opened
                    yield
            else:
                yield
        finally:
            while self._open:
                await self._open.pop().aclose()
