"""The contracts of MCP servers in a team: how a team declares them, and what a run records of them.

A team declares each MCP server by name (`MCPServerSpec`): over streamable HTTP (`url`, with
`headers` naming environment variables, never holding values) or over stdio (`command`, `args`,
`env` names). Agents say which servers' tools they may use (`MCPAccess`), and the team says per
tool what undoes it and whether a person must approve it (`MCPToolPolicy`). When a run resolves
its team it lists each server's tools once; every tool an agent may call becomes a `ToolSpec`
whose `mcp` field (`MCPBinding`) says where it lives and what its annotations were.

Like `agentkeel.contracts`, this module is deterministic and side-effect free: workflows import it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentkeel.review_conditions import parse_condition

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SERVER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_REFERENCE = re.compile(r"^\$(args|result)(\.[A-Za-z0-9_\-]+)*$|^\$key$")

DEFAULT_IDEMPOTENCY_META = "io.agentkeel/idempotency-key"
"""The `_meta` field an MCP tool call carries its idempotency key in (servers that know it dedupe)."""
UNRESOLVED_COMPENSATION_ACTIVITY = "mcp_compensation_unresolved"
"""Stands in for an MCP compensation whose arguments need a result that never came back."""
COMPENSATION_META = "io.agentkeel/undoes"
"""The `_meta` field a compensating call carries the key of the step it undoes in."""
STORE_RESULT_META = "io.agentkeel/store-result"
"""Set in a call's `_meta` by a run that stores its conversation: the worker stores a large result
(and takes the flag out before the server sees the request)."""
STORED_OUTPUT_META = "io.agentkeel/output-ref"
"""In a stored result's `_meta`: the reference of the tool output's JSON text, as the model gets it."""
STORED_BYTES_META = "io.agentkeel/output-bytes"
"""In a stored result's `_meta`: that text's size in bytes."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MCPCompensation(_Model):
    """What undoes an MCP tool call: another tool, and how its arguments are built.

    Attributes:
        tool: The undoing tool: a tool of `server` (default: the same MCP server), or, with
            `server: python`, a Python tool of the team.
        server: Another MCP server of the team, `python` for a Python tool, or None (the same server).
        arguments: The undoing call's arguments. A string value `$result.a.b` is taken from the
            original call's result, `$args.a` from its arguments, `$key` is its idempotency key;
            anything else is a literal.
    """

    tool: str
    server: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arguments")
    @classmethod
    def _references(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name, value in v.items():
            if isinstance(value, str) and value.startswith("$") and not _REFERENCE.match(value):
                raise ValueError(
                    f"compensation argument {name!r}: {value!r} is not $args.<path>, $result.<path> or $key"
                )
        return v

    @property
    def needs_result(self) -> bool:
        """Some argument comes from the original call's result."""
        return any(isinstance(v, str) and v.startswith("$result") for v in self.arguments.values())


class MCPToolPolicy(_Model):
    """What the team says about one MCP tool.

    Attributes:
        compensation: What undoes it (None: nothing; a read-only tool needs nothing).
        review: True or False overrides the annotations' default (a `destructiveHint` tool is
            reviewed); a string is a condition on the arguments (`priority == "urgent"`).
    """

    compensation: MCPCompensation | None = None
    review: bool | str | None = None

    @field_validator("review")
    @classmethod
    def _condition(cls, v: bool | str | None) -> bool | str | None:
        if isinstance(v, str):
            parse_condition(v)  # a typo is refused when the team is loaded
        return v


class MCPServerSpec(_Model):
    """An MCP server a team's agents take tools from.

    Give `url` (streamable HTTP) or `command` (stdio). Secrets never appear here: `headers` maps a
    header to the NAME of the worker's environment variable holding its value, and `env` lists the
    names of the variables the stdio process inherits. A worker only ever connects to the servers
    declared by the teams registered on it; a team sent with a run names them, and the worker's
    declaration of that name is the one used.

    Attributes:
        name: Unique within the team; the worker registers the server's activities under it.
        url: Streamable HTTP endpoint (`http://127.0.0.1:8000/mcp`).
        headers: Header name -> environment variable name.
        command: Executable of a stdio server.
        args: Its arguments.
        env: Names of environment variables passed to the stdio process.
        tools: Per-tool policy (compensation, review), by the server's tool name.
        prefix: Put before each tool's name in what the model sees (two servers with a `search`).
        timeout_s: One MCP operation's timeout (each attempt).
        idempotency_meta: The `_meta` field the idempotency key is sent in; None sends none
            (the key is recorded in history all the same).
        breaker_fail_max: Failures in a row that open the server's circuit breaker.
        breaker_reset_s: Seconds it stays open before a probe.
        listed_tools: Set by a run when it lists the server: the tools it offered then.
    """

    name: str
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: list[str] = Field(default_factory=list)
    tools: dict[str, MCPToolPolicy] = Field(default_factory=dict)
    prefix: str = ""
    timeout_s: float = Field(default=30.0, gt=0)
    idempotency_meta: str | None = DEFAULT_IDEMPOTENCY_META
    breaker_fail_max: int = Field(default=3, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)
    listed_tools: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _SERVER_NAME.match(v) or v == "python":
            raise ValueError(
                f"MCP server name {v!r} must start with a letter, hold only letters, digits, '_' "
                "or '-', and not be 'python'"
            )
        return v

    @field_validator("headers")
    @classmethod
    def _header_env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for header, env_name in v.items():
            if not _ENV_NAME.match(env_name):
                raise ValueError(
                    f"header {header!r} must name an environment variable (like TICKETS_TOKEN), "
                    "never hold its value"
                )
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: list[str]) -> list[str]:
        bad = [name for name in v if not _ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"env lists names of environment variables, not {bad}")
        return v

    @model_validator(mode="after")
    def _one_transport(self) -> MCPServerSpec:
        if (self.url is None) == (self.command is None):
            raise ValueError(f"MCP server {self.name!r}: give exactly one of 'url' or 'command'")
        if self.url is not None and (self.args or self.env):
            raise ValueError(f"MCP server {self.name!r}: 'args' and 'env' go with 'command' (stdio)")
        if self.command is not None and self.headers:
            raise ValueError(f"MCP server {self.name!r}: 'headers' go with 'url' (streamable HTTP)")
        return self

    @property
    def transport(self) -> Literal["http", "stdio"]:
        """`http` or `stdio`."""
        return "http" if self.url is not None else "stdio"

    def connection(self) -> MCPServerSpec:
        """How the worker reaches the server: what two teams declaring it must agree on (each team
        keeps its own tool policies, prefix and `_meta` field)."""
        return self.model_copy(
            update={
                "listed_tools": None,
                "tools": {},
                "prefix": "",
                "idempotency_meta": DEFAULT_IDEMPOTENCY_META,
            }
        )


class MCPAccess(_Model):
    """Which tools of an MCP server an agent may call.

    Attributes:
        server: The server's name.
        tools: The server's names of the tools the agent may call; None for all of them.
    """

    server: str
    tools: list[str] | None = None


class MCPBinding(_Model):
    """Where an MCP tool of a resolved team lives, and what the server said about it when listed."""

    server: str
    tool: str
    """The server's name of the tool (the model sees it with the server's prefix)."""
    read_only: bool = False
    destructive: bool = True
    """MCP's default when a tool that is not read-only does not say."""
    idempotent: bool = False
    open_world: bool = True
    undo: MCPCompensation | None = None
    """What undoes a call, its `server` filled in (`python` for a Python tool)."""
    idempotency_meta: str | None = DEFAULT_IDEMPOTENCY_META
    timeout_s: float = 30.0

    @property
    def hints(self) -> str:
        """The annotations, as `keel teams` shows them."""
        if self.read_only:
            return "read-only"
        words = ["destructive" if self.destructive else "additive"]
        words += ["idempotent"] if self.idempotent else []
        words += ["open-world"] if self.open_world else ["closed-world"]
        return ", ".join(words)


class MCPCallArgs(_Model):
    """The input of temporalio-mcp's `call-tool` activity, as a model (a compensation is checkpointed)."""

    factory_argument: None = None
    name: str
    arguments: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None


def mcp_problems(
    servers: list[MCPServerSpec], agents: list[tuple[str, list[MCPAccess]]], tool_names: list[str]
) -> list[str]:
    """What is inconsistent in a team's MCP declarations (for `TeamSpec` validation)."""
    errors: list[str] = []
    names = [s.name for s in servers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        errors.append(f"duplicate MCP server name(s): {', '.join(dupes)}")
    for agent, accesses in agents:
        for access in accesses:
            if access.server not in names:
                errors.append(f"agent {agent!r} uses unknown MCP server {access.server!r}")
    for server in servers:
        for tool, policy in server.tools.items():
            comp = policy.compensation
            if comp is None:
                continue
            if comp.server == "python" and comp.tool not in tool_names:
                errors.append(
                    f"MCP tool {tool!r} of {server.name!r} is undone by unknown Python tool {comp.tool!r}"
                )
            elif comp.server not in (None, "python") and comp.server not in names:
                errors.append(
                    f"MCP tool {tool!r} of {server.name!r} is undone on unknown server {comp.server!r}"
                )
    return errors
