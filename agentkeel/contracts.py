"""The contracts every process shares: inputs and outputs of workflows, activities, updates and queries.

This module is side-effect free and deterministic, so workflows import it
through the sandbox (`workflow.unsafe.imports_passed_through()`). Each workflow
and activity takes one request model and returns one result model, so fields
can be added compatibly: give every new field a default.

Secrets never appear here: provider API keys live in the worker's environment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from agentkeel.conversation import ContextReport, ConversationRef, SummaryRef
from agentkeel.mcp.contracts import MCPCallArgs
from agentkeel.search_attributes import SagaStatus

# Team specs live in their own module; the contracts are one namespace, so they are re-exported.
from agentkeel.team_specs import AgentSpec as AgentSpec
from agentkeel.team_specs import Budget as Budget
from agentkeel.team_specs import ReviewPolicy as ReviewPolicy
from agentkeel.team_specs import TeamSpec as TeamSpec
from agentkeel.team_specs import ToolSpec as ToolSpec
from agentkeel.team_specs import _Model

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
