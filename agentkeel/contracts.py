"""The contracts every process shares: inputs and outputs of workflows, activities, updates and queries.

This module is side-effect free and deterministic, so workflows import it
through the sandbox (`workflow.unsafe.imports_passed_through()`). Each workflow
and activity takes one request model and returns one result model, so fields
can be added compatibly: give every new field a default.

Secrets never appear here: provider API keys live in the worker's environment.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from agentkeel.conversation import ContextPolicy, ContextReport, ConversationRef, SummaryRef
from agentkeel.mcp.contracts import MCPAccess, MCPBinding, MCPCallArgs, MCPServerSpec, mcp_problems
from agentkeel.names import HANDOFF_TOOL_PREFIX
from agentkeel.review_conditions import parse_condition
from agentkeel.schemas import schema_error
from agentkeel.search_attributes import SagaStatus
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


# --------------------------------------------------------------------------- LLM


class ToolCall(_Model):
    """A tool call the model asked for. `arguments` is the raw JSON text the model produced."""

    id: str
    name: str
    arguments: str = "{}"


class ChatMessage(_Model):
    """One chat-completions message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    content_ref: str | None = None
    """When set, `content` is a preview and the whole content is stored under this reference
    (a large tool result); the store layer sends the model the whole content."""


class ToolSchema(_Model):
    """A function tool offered to the model."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class LLMRequest(_Model):
    """Input of the `call_llm` activity.

    Attributes:
        model: Model alias from `keel.toml` (`[models.ALIAS]`), never a provider name.
        messages: The conversation so far.
        tools: Function tools the model may call.
        response_schema: When set, the model must answer with JSON fitting this schema.
        temperature: Sampling temperature, provider default when unset.
        max_tokens: Output token cap, provider default when unset.
        correlation_id: Carried to logs and the `X-Correlation-ID` header.
        idempotency_key: Sent as `Idempotency-Key`; stable across retries of one step.
        agent: Name of the agent asking; sent as `X-Keel-Agent` so scripted providers can match on it.
        conversation: When set, the conversation is stored: `messages` are only the new ones since
            `conversation.head`, and the worker's store layer gives the model the whole of it.
    """

    model: str = "default"
    messages: list[ChatMessage]
    tools: list[ToolSchema] = Field(default_factory=list)
    response_schema: dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    correlation_id: str
    idempotency_key: str
    agent: str | None = None
    conversation: ConversationRef | None = None


class LLMResult(_Model):
    """Output of the `call_llm` activity.

    For a request with a stored conversation, `head` is the conversation after this answer,
    `content` is shortened to a preview when the answer also calls tools (the whole answer is
    stored), and `context` says what the model was sent.
    """

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str = "stop"
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    provider: str = ""
    model: str = ""
    attempt: int = 1
    latency_ms: float = 0.0
    head: str | None = None
    prompt_ref: str | None = None
    context: ContextReport | None = None

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


# --------------------------------------------------------------------------- tools


class ToolRequest(_Model):
    """Input of every tool activity.

    Attributes:
        arguments: Arguments, already validated against the tool's JSON schema.
        idempotency_key: `<workflow id>:<first run id>:<step>`: unique to one saga execution and step,
            stable across retries, worker crashes and continue-as-new, new for every start, redrive
            or reuse of a workflow id. The tool must do its side effect at most once per key.
        correlation_id: The run's correlation id.
        workflow_id: The run's workflow id.
        step: Step number within the run.
        agent: The agent that called the tool.
        store_result: The run keeps its conversation in the store: a large result is stored by
            the worker and returned as `output_ref` with a preview.
    """

    arguments: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str
    correlation_id: str
    workflow_id: str = ""
    step: int = 0
    agent: str = ""
    store_result: bool = False


class ToolResult(_Model):
    """Output of a tool activity: `output` goes back to the model as the tool message.

    A large output of a run that stores its conversation is stored whole by the worker:
    `output` is then empty, `output_ref` names the stored JSON text, and `summary` previews it.
    """

    output: dict[str, Any] = Field(default_factory=dict)
    summary: str = ""
    output_ref: str | None = None
    output_bytes: int = 0


class CompensationRequest(_Model):
    """Input of every compensation activity: what the original step did, and under which key."""

    idempotency_key: str
    correlation_id: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""
    result_ref: str | None = None
    """The stored result, when it was too large to carry: the worker fills `result` from it."""


class ResolveTeamRequest(_Model):
    """Input of the `resolve_team` activity: a registered team's name."""

    name: str


# --------------------------------------------------------------------------- team specs


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


# --------------------------------------------------------------------------- saga


class ConversationState(_Model):
    """A stored conversation as the workflow holds it: a head reference and what came since.

    Its size does not depend on the conversation's length: continue-as-new carries it as it is,
    so the next run's agents see the same conversation.
    """

    head: str | None = None
    """The stored conversation (a chain head); None until the first LLM turn stored it."""
    pending: list[ChatMessage] = Field(default_factory=list)
    """Messages added since `head` (tool results, handoff notes), stored by the next LLM turn."""
    pending_tokens: int = 0
    """Estimated tokens of `pending` (stored tool results counted whole)."""
    messages: int = 0
    """Messages in the stored conversation (as of `head`)."""
    prompts: dict[str, str] = Field(default_factory=dict)
    """Per agent, the stored reference of its instructions and tools."""
    summaries: dict[str, SummaryRef] = Field(default_factory=dict)
    """Per agent with a `summarize` context policy, the summary in force."""
    next_tokens: dict[str, int] = Field(default_factory=dict)
    """Per agent, the estimated tokens its next request sends (before `pending`)."""
    left_out: dict[str, int] = Field(default_factory=dict)
    """Per agent, messages its last request left out (the transcript says when this changes)."""
    summarized_at: dict[str, int] = Field(default_factory=dict)
    """Per agent, the conversation's length when its last summarize turn ran."""


class PendingCompensation(_Model):
    """A compensation registered by a finished step and not yet run."""

    step: int
    name: str
    activity: str
    request: CompensationRequest | ToolRequest | MCPCallArgs
    """A compensation activity's input, a Python tool's (undoing an MCP tool), or an MCP call's."""


SAGA_CHECKPOINT_RETIRED = frozenset({"pending_review", "pending_tool_call", "review_deadline"})
"""Fields earlier versions declared (never written) and may have put in continue-as-new inputs."""


class SagaCheckpoint(_Model):
    """The state of a saga run: what the workflow changes as it goes and continue-as-new carries.

    The workflow holds one instance for the run and hands that same model (its conversation
    compacted) to the next run, so no field can be carried on one side and forgotten on the
    other. Every field has a default, so inputs recorded by earlier versions still decode;
    fields retired since (`SAGA_CHECKPOINT_RETIRED`) are dropped when decoding.
    """

    team: TeamSpec | None = None
    """The team, once resolved (a run started by `team_name` resolves it first)."""
    correlation_id: str = ""
    active_agent: str = ""
    step: int = 0
    turns: int = 0
    handoffs: int = 0
    tool_errors: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    budget_extensions: int = 0
    """Extra budgets' worth granted by reviewers (each approved budget review is one)."""
    messages: list[ChatMessage] = Field(default_factory=list)
    compensations: list[PendingCompensation] = Field(default_factory=list)
    """Compensations registered and not yet run, oldest first (written at continue-as-new)."""
    steps: list[StepRecord] = Field(default_factory=list)
    reviews: list[ReviewRecord] = Field(default_factory=list)
    transcript: list[TranscriptEntry] = Field(default_factory=list)
    rejected_signals: list[RejectedSignal] = Field(default_factory=list)
    visits: list[str] = Field(default_factory=list)
    """Agents visited since the last tool call, for ping-pong detection."""
    escalated: bool = False
    runs: int = 1
    """How many runs (continue-as-new generations) this saga has had."""
    key_scope: str | None = None
    """Prefix of the run's idempotency keys, kept so keys stay stable across continue-as-new."""
    conversation: ConversationState | None = None
    """The stored conversation (runs since the conversation store); `messages` is then unused."""

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, data: Any) -> Any:
        if isinstance(data, dict) and SAGA_CHECKPOINT_RETIRED & data.keys():
            return {k: v for k, v in data.items() if k not in SAGA_CHECKPOINT_RETIRED}
        return data


class SagaRequest(_Model):
    """Input of `AgentSagaWorkflow`.

    Give either `team` (a full spec) or `team_name` (a team registered on the worker).
    """

    goal: str = Field(min_length=1)
    team: TeamSpec | None = None
    team_name: str | None = None
    correlation_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    checkpoint: SagaCheckpoint | None = None
    """Set only by the workflow itself when it continues as new."""

    @model_validator(mode="after")
    def _one_team(self) -> SagaRequest:
        if (self.team is None) == (self.team_name is None):
            raise ValueError("give exactly one of 'team' (a TeamSpec) or 'team_name' (a registered team)")
        return self

    @property
    def team_label(self) -> str:
        """The team's name, whichever way it was given."""
        return self.team.name if self.team else str(self.team_name)


StepKind = Literal["llm", "tool", "handoff", "review", "tool_error"]


class StepRecord(_Model):
    """One step of a run, for the result, the `status` query and the transcript."""

    step: int
    kind: StepKind
    agent: str
    name: str
    detail: str = ""
    tokens: int = 0
    cost_usd: float = 0.0
    duration_ms: float = 0.0
    provider: str | None = None
    at: datetime | None = None


class CompensationRecord(_Model):
    """A compensation that ran (or failed) while unwinding a saga."""

    step: int
    name: str
    """The step's label, usually the tool name."""
    compensation: str
    status: Literal["done", "failed"]
    error: str | None = None
    at: datetime | None = None


ReviewKind = Literal["tool", "final_answer", "budget"]


class ReviewRequest(_Model):
    """What a run waits for a person to decide."""

    request_id: str
    kind: ReviewKind
    agent: str
    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    reasoning: str = ""
    tokens: int = 0
    cost_usd: float = 0.0
    requested_at: datetime | None = None
    escalated: bool = False
    parameters: dict[str, Any] | None = None
    """JSON schema the arguments must fit (for edit-and-approve)."""


Decision = Literal["approve", "reject", "edit"]


def _check_reviewer(value: str) -> str:
    if not value.strip():
        raise ValueError("a decision needs a non-empty reviewer")
    return value.strip()


Reviewer = Annotated[str, AfterValidator(_check_reviewer)]
"""Who decided: a decision without one is refused, never applied as somebody's."""


class ReviewInput(_Model):
    """Argument of the `review` update.

    Attributes:
        decision: `approve`, `reject`, or `edit` (approve with new `arguments`).
        request_id: The pending request's id; when given it must match.
        reviewer: Who decided: required and non-empty, never assumed.
        comment: Why (the reason, for a rejection).
        arguments: New tool arguments, for `edit`; validated against the tool's schema.
        signature: Base64 Ed25519 signature of the decision (`agentkeel.signing.decision_message`),
            required when the team's review policy lists reviewer keys.
    """

    decision: Decision
    request_id: str | None = None
    reviewer: Reviewer
    comment: str | None = None
    arguments: dict[str, Any] | None = None
    signature: str | None = None

    @model_validator(mode="after")
    def _edit_has_args(self) -> ReviewInput:
        if self.decision == "edit" and self.arguments is None:
            raise ValueError("decision 'edit' needs 'arguments'")
        if self.decision != "edit" and self.arguments is not None:
            raise ValueError("'arguments' only go with decision 'edit'")
        return self


class ApproveSignal(BaseModel):
    """Payload of the `approve` signal (stock `temporal` CLI friendly): `reviewer` is required."""

    model_config = ConfigDict(extra="forbid")
    reviewer: Reviewer
    comment: str | None = None
    request_id: str | None = None
    signature: str | None = None


class RejectSignal(BaseModel):
    """Payload of the `reject` signal: `reviewer` is required."""

    model_config = ConfigDict(extra="forbid")
    reviewer: Reviewer
    reason: str | None = None
    request_id: str | None = None
    signature: str | None = None


class ReviewRecord(_Model):
    """A decision the run acted on."""

    request_id: str
    kind: ReviewKind
    tool: str | None = None
    decision: Literal["approve", "reject", "edit", "timeout", "escalate"]
    reviewer: str
    comment: str | None = None
    arguments: dict[str, Any] | None = None
    via: Literal["update", "signal", "timeout"]
    at: datetime | None = None


class ReviewOutcome(_Model):
    """What the `review` update returns to the caller."""

    request_id: str
    decision: str
    status: SagaStatus
    message: str
    refused: bool = False
    """The run recorded the decision but did not apply it (reviewer not allowed, bad signature)."""


class RejectedSignal(_Model):
    """A signal the run could not use, kept so `status` can show it."""

    name: str
    payload: str
    error: str
    at: datetime | None = None


class SagaResult(_Model):
    """Output of `AgentSagaWorkflow`."""

    status: SagaStatus
    reason: str | None = None
    output: str | None = None
    team: str = ""
    final_agent: str | None = None
    correlation_id: str = ""
    steps: list[StepRecord] = Field(default_factory=list)
    compensations: list[CompensationRecord] = Field(default_factory=list)
    uncompensated: list[str] = Field(default_factory=list)
    reviews: list[ReviewRecord] = Field(default_factory=list)
    tokens: int = 0
    cost_usd: float = 0.0


class SagaStatusView(_Model):
    """Result of the `status` query."""

    status: SagaStatus
    team: str
    goal: str
    active_agent: str
    step: int
    turns: int
    handoffs: int
    pending_review: ReviewRequest | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    correlation_id: str = ""
    escalated: bool = False
    compensations: list[CompensationRecord] = Field(default_factory=list)
    completed_steps: list[str] = Field(default_factory=list)
    """Labels of side-effecting steps whose compensations are still registered."""
    rejected_signals: list[RejectedSignal] = Field(default_factory=list)
    last_error: str | None = None
    waiting_for: str | None = None


class TranscriptEntry(_Model):
    """One line of the `transcript` query: a message, a tool call, a handoff or a decision."""

    kind: Literal[
        "message", "tool_call", "tool_result", "tool_error", "handoff", "decision", "compensation", "note"
    ]
    agent: str | None = None
    role: str | None = None
    content: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    step: int = 0


SagaCheckpoint.model_rebuild()
SagaRequest.model_rebuild()
