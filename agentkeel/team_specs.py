"""Team specs: the tools, agents, review policy and budget of a team, as YAML, JSON and Python build them.

Part of the platform's contracts (`agentkeel.contracts` re-exports every name): deterministic
and free of I/O, passed through to the workflow sandbox.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentkeel.conversation import ContextPolicy
from agentkeel.mcp.contracts import MCPAccess, MCPBinding, MCPServerSpec, mcp_problems
from agentkeel.names import HANDOFF_TOOL_PREFIX
from agentkeel.review_conditions import parse_condition
from agentkeel.schemas import schema_error
from agentkeel.signing import SigningError, parse_public_key

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{kind} name {value!r} must start with a letter and hold only letters, digits, '_' or '-'"
        )
    return value


class ToolSpec(_Model):
    """A tool agents may call.

    Attributes:
        name: Name of the tool activity registered on the worker.
        description: Told to the model.
        parameters: JSON schema of the arguments.
        compensation: Name of the activity that undoes the tool's side effect, or None.
        requires_review: A person must approve each call before it runs.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    compensation: str | None = None
    requires_review: bool = False
    review_when: str | None = None
    """A condition on the arguments (`amount_usd > 500`): calls that meet it wait for a person."""
    review_check: str | None = None
    """Set by `@tool(requires_review=<predicate>)`: the tool's predicate runs as the local activity
    `<tool>.needs_review` and its answer is recorded in history."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Start-to-close timeout of one attempt; the platform's default (60 s) when unset."""
    max_attempts: int | None = Field(default=None, ge=1)
    """Attempts before the step fails and the saga compensates; the platform's default (6) when unset."""
    mcp: MCPBinding | None = None
    """Set on the tools a run listed from an MCP server (`agentkeel.mcp`): where the tool lives."""

    @field_validator("review_when")
    @classmethod
    def _review_when(cls, v: str | None) -> str | None:
        if v is not None:
            parse_condition(v)  # a typo is refused when the team is loaded
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _check_name("tool", v)
        if v.startswith(HANDOFF_TOOL_PREFIX):
            raise ValueError(f"tool name {v!r} must not start with {HANDOFF_TOOL_PREFIX!r} (handoff tools)")
        return v

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type", "object") != "object":
            raise ValueError("tool parameters must be a JSON schema of type 'object'")
        problem = schema_error(v)
        if problem:
            raise ValueError(f"tool parameters are not a valid JSON schema: {problem}")
        return v


class AgentSpec(_Model):
    """An agent of a team.

    Attributes:
        name: Unique within the team.
        instructions: The system prompt.
        model: Model alias (`[models.ALIAS]` in `keel.toml`).
        tools: Names of team tools the agent may call.
        handoffs: Names of agents it may transfer to.
        output_schema: When set, the agent's final answer must be JSON fitting this schema.
    """

    name: str
    instructions: str
    model: str = "default"
    tools: list[str] = Field(default_factory=list)
    handoffs: list[str] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    context: ContextPolicy | None = None
    """What the model is sent of the conversation (default: all of it)."""
    mcp: list[MCPAccess] = Field(default_factory=list)
    """MCP servers whose tools the agent may call (a name for all of a server's tools)."""

    @field_validator("mcp", mode="before")
    @classmethod
    def _mcp(cls, v: Any) -> Any:
        return [{"server": a} if isinstance(a, str) else a for a in v] if isinstance(v, list) else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("agent", v)

    @field_validator("output_schema")
    @classmethod
    def _output_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        problem = schema_error(v) if v is not None else None
        if problem:
            raise ValueError(f"output_schema is not a valid JSON schema: {problem}")
        return v


class Budget(_Model):
    """Limits summed over every LLM call of a run, across agents and handoffs."""

    max_tokens: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    on_exhausted: Literal["stop", "review"] = "stop"
    """`stop` compensates and ends the run; `review` asks a person whether to continue."""


class ReviewPolicy(_Model):
    """When a person must decide, and what happens if nobody does."""

    tools: list[str] = Field(default_factory=list)
    """Tools that need approval, in addition to those whose spec says `requires_review`."""
    final_answer: bool = False
    timeout_s: float = Field(default=24 * 3600, gt=0)
    on_timeout: Literal["reject", "escalate"] = "reject"
    """`reject` compensates at the timeout; `escalate` marks the run and rejects after a second timeout."""
    escalation_timeout_s: float = Field(default=24 * 3600, gt=0)
    reviewers: list[str] = Field(default_factory=list)
    """Who may decide: names or shell-style patterns (`ana`, `ops-*`); empty lets anyone decide."""
    reviewer_keys: list[str] = Field(default_factory=list)
    """Ed25519 public keys (`ed25519:<base64>`); when set, only decisions signed by one of them count."""

    @field_validator("reviewers")
    @classmethod
    def _reviewers(cls, v: list[str]) -> list[str]:
        if any(not name.strip() for name in v):
            raise ValueError("review.reviewers must not hold empty names")
        return v

    @field_validator("reviewer_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            try:
                parse_public_key(key)
            except SigningError as exc:
                raise ValueError(f"review.reviewer_keys: {exc}") from None
        return v


class TeamSpec(_Model):
    """A team of agents that run one saga together."""

    name: str
    description: str = ""
    agents: list[AgentSpec]
    tools: list[ToolSpec] = Field(default_factory=list)
    entry: str
    max_turns: int = Field(default=24, gt=0)
    max_handoffs: int = Field(default=8, ge=0)
    max_tool_errors: int = Field(default=3, ge=0)
    """Invalid tool arguments sent back to the model before the run fails."""
    budget: Budget = Field(default_factory=Budget)
    review: ReviewPolicy = Field(default_factory=ReviewPolicy)
    mcp_servers: list[MCPServerSpec] = Field(default_factory=list)
    """MCP servers the agents take tools from (`agentkeel.mcp`)."""
    mcp_policy: Literal["warn", "strict"] = "warn"
    """`strict` refuses at start an MCP tool an agent may call that is neither read-only nor compensated."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("team", v)

    @model_validator(mode="after")
    def _consistent(self) -> TeamSpec:
        errors: list[str] = []
        agent_names = [a.name for a in self.agents]
        tool_names = [t.name for t in self.tools]
        for kind, names in (("agent", agent_names), ("tool", tool_names)):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                errors.append(f"duplicate {kind} name(s): {', '.join(dupes)}")
        if not self.agents:
            errors.append("a team needs at least one agent")
        if self.entry not in agent_names:
            errors.append(f"entry agent {self.entry!r} is not one of the team's agents {agent_names}")
        for agent in self.agents:
            for target in agent.handoffs:
                if target not in agent_names:
                    errors.append(f"agent {agent.name!r} hands off to unknown agent {target!r}")
                elif target == agent.name:
                    errors.append(f"agent {agent.name!r} cannot hand off to itself")
            for tool in agent.tools:
                if tool not in tool_names:
                    errors.append(f"agent {agent.name!r} uses unknown tool {tool!r}")
        for tool in self.review.tools:
            if tool not in tool_names:
                errors.append(f"review policy names unknown tool {tool!r}")
        errors += mcp_problems(self.mcp_servers, [(a.name, a.mcp) for a in self.agents], tool_names)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def agent(self, name: str) -> AgentSpec:
        """The agent called `name`."""
        return next(a for a in self.agents if a.name == name)

    def tool(self, name: str) -> ToolSpec:
        """The tool called `name`."""
        return next(t for t in self.tools if t.name == name)

    def needs_review(self, tool: str, arguments: dict[str, Any] | None = None) -> bool:
        """Whether this call of `tool` waits for a person's approval (its `review_when` condition is
        evaluated on `arguments`; a `review_check` predicate is asked by the workflow separately)."""
        spec = self.tool(tool)
        if tool in self.review.tools or spec.requires_review:
            return True
        return spec.review_when is not None and parse_condition(spec.review_when).evaluate(arguments or {})
