"""`AgentSagaWorkflow`: a team of agents runs one saga.

The active agent calls `call_llm` with its tools plus one handoff tool per
agent it may transfer to (`transfer_to_<agent>`). A tool call runs the tool
activity by name, keyed `<workflow id>:<step>`, after registering its
compensation; a handoff switches the active agent and carries the conversation;
a final answer ends the run. Risky tools (and, if the policy says so, the final
answer or a budget overrun) wait for a person's decision, which arrives by the
`review` update or the `approve` / `reject` signals. On failure, rejection,
cancellation or budget exhaustion the saga compensates in reverse order.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RawValue
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from agentkeel import errors
    from agentkeel.contracts import (
        AgentSpec,
        ApproveSignal,
        ChatMessage,
        CompensationRecord,
        CompensationRequest,
        LLMRequest,
        LLMResult,
        PendingCompensation,
        RejectedSignal,
        RejectSignal,
        ResolveTeamRequest,
        ReviewInput,
        ReviewKind,
        ReviewOutcome,
        ReviewRecord,
        ReviewRequest,
        SagaCheckpoint,
        SagaRequest,
        SagaResult,
        SagaStatusView,
        StepKind,
        StepRecord,
        TeamSpec,
        ToolCall,
        ToolRequest,
        ToolResult,
        ToolSchema,
        ToolSpec,
        TranscriptEntry,
    )
    from agentkeel.names import AGENT_SAGA_WORKFLOW, HANDOFF_TOOL_PREFIX, RESOLVE_TEAM_ACTIVITY
    from agentkeel.schemas import parse_json_object, validation_error
    from agentkeel.search_attributes import (
        KEEL_AGENT,
        KEEL_CORRELATION_ID,
        KEEL_COST_USD,
        KEEL_ESCALATED,
        KEEL_STATUS,
        KEEL_TEAM,
        KEEL_TOKENS,
        SagaStatus,
    )

# The workflow's own helper modules run inside the sandbox, like the workflow itself.
from agentkeel.workflows.attributes import SearchAttributeWriter
from agentkeel.workflows.conversation import compact_messages, handoff_tool, is_ping_pong
from agentkeel.workflows.policies import (
    LLM_HEARTBEAT,
    LLM_OUTAGE_MAX,
    LLM_OUTAGE_PAUSE,
    LLM_RETRY,
    LLM_START_TO_CLOSE,
    RESOLVE_RETRY,
    RESOLVE_START_TO_CLOSE,
    TOOL_HEARTBEAT,
    TOOL_RETRY,
    TOOL_START_TO_CLOSE,
)
from agentkeel.workflows.review import authority_problem, describe_request
from agentkeel.workflows.saga import Saga

_LLM_OUTAGE_ERRORS = {errors.LLM_UNAVAILABLE, errors.CIRCUIT_OPEN, errors.LLM_RATE_LIMITED}
_COALESCED_ATTRIBUTES = "coalesce-search-attributes"
"""Patch id: search attributes written once per workflow task, only when changed (histories
recorded before it replay with one upsert per change)."""
_EXECUTION_KEYS = "execution-scoped-keys"
"""Patch id: idempotency keys are `<workflow id>:<first run id>:<step>`, unique to one saga execution
(before it, `<workflow id>:<step>`, which a run reusing a closed run's id shared with that run)."""
_FAILED_OUTCOMES = "failed-outcomes"
"""Patch id: runs that did not reach their goal end as Temporal *Failed* with a typed error."""
_OUTCOME_ERRORS = {
    SagaStatus.REJECTED: errors.SAGA_REJECTED,
    SagaStatus.COMPENSATED: errors.SAGA_COMPENSATED,
    SagaStatus.FAILED: errors.SAGA_FAILED,
}
_TRANSCRIPT_KEEP = 400
"""Transcript entries carried across continue-as-new (earlier runs keep the full record)."""


class _Halt(Exception):
    """Ends the agent loop: the saga compensates and the run ends with `reason`."""

    def __init__(self, reason: str, *, rejected: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rejected = rejected


@dataclass
class _Decision:
    request_id: str
    decision: Literal["approve", "reject", "edit", "timeout"]
    reviewer: str
    comment: str | None
    arguments: dict[str, Any] | None
    via: Literal["update", "signal", "timeout"]
    signature: str | None = None


def _cause(exc: BaseException) -> ApplicationError | None:
    cause: BaseException | None = exc
    while isinstance(cause, ActivityError):
        cause = cause.cause
    return cause if isinstance(cause, ApplicationError) else None


def _describe(exc: BaseException) -> str:
    cause = _cause(exc)
    if cause is not None:
        return f"{cause.type or 'ApplicationError'}: {cause.message}"
    inner: BaseException = exc
    while isinstance(inner, ActivityError) and inner.cause is not None:
        inner = inner.cause
    return f"{type(inner).__name__}: {inner}"


@workflow.defn(name=AGENT_SAGA_WORKFLOW)
class AgentSagaWorkflow:
    """A team of agents working towards one goal, as a saga with human review."""

    @workflow.init
    def __init__(self, request: SagaRequest) -> None:
        self._request = request
        cp = request.checkpoint
        self._team: TeamSpec | None = cp.team if cp else request.team
        self._correlation_id = (cp.correlation_id if cp else request.correlation_id) or str(workflow.uuid4())
        self._status = SagaStatus.RUNNING
        self._active = cp.active_agent if cp else (request.team.entry if request.team else "")
        self._step = cp.step if cp else 0
        self._turns = cp.turns if cp else 0
        self._handoffs = cp.handoffs if cp else 0
        self._tool_errors = cp.tool_errors if cp else 0
        self._tokens = cp.tokens if cp else 0
        self._cost = cp.cost_usd if cp else 0.0
        self._budget_extensions = cp.budget_extensions if cp else 0
        self._messages: list[ChatMessage] = list(cp.messages) if cp else []
        self._steps: list[StepRecord] = list(cp.steps) if cp else []
        self._reviews: list[ReviewRecord] = list(cp.reviews) if cp else []
        self._transcript: list[TranscriptEntry] = list(cp.transcript) if cp else []
        self._rejected_signals: list[RejectedSignal] = list(cp.rejected_signals) if cp else []
        self._visits: list[str] = list(cp.visits) if cp else []
        self._escalated = cp.escalated if cp else False
        self._generation = cp.runs if cp else 1
        self._key_scope: str | None = cp.key_scope if cp else None
        self._compensations: list[CompensationRecord] = []
        self._saga = Saga(on_record=self._compensation_done)
        for pending in cp.compensations if cp else []:
            self._saga.add(pending.name, pending.activity, pending.request, step=pending.step)
        self._pending: ReviewRequest | None = None
        self._attrs = SearchAttributeWriter(coalesce=False)  # decided by the patch in `run`
        self._decision: _Decision | None = None
        self._outcomes: dict[str, ReviewOutcome] = {}
        self._last_error: str | None = None
        self._waiting_for: str | None = None
        self._output: str | None = None
        self._uncompensated: list[str] = []

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, request: SagaRequest) -> SagaResult:
        """Run the team until a final answer, a rejection, a failure or a cancellation."""
        self._attrs.coalesce = workflow.patched(_COALESCED_ATTRIBUTES)
        if self._key_scope is None:
            info = workflow.info()
            scoped = workflow.patched(_EXECUTION_KEYS)
            self._key_scope = (
                f"{info.workflow_id}:{info.first_execution_run_id}" if scoped else info.workflow_id
            )
        try:
            if self._team is None:
                self._team = await self._resolve_team(request)
                self._active = self._team.entry
            self._announce()
            output = await self._agent_loop()
            self._output = output
            self._set_status(SagaStatus.COMPLETED)
            return self._result(SagaStatus.COMPLETED)
        except asyncio.CancelledError:
            self._last_error = "cancelled"
            await self._unwind(final_ok=SagaStatus.CANCELLED, final_nothing=SagaStatus.CANCELLED)
            raise
        except _Halt as halt:
            self._last_error = halt.reason
            workflow.logger.warning("saga halted", extra={"reason": halt.reason})
            if halt.rejected:
                status = await self._unwind(
                    final_ok=SagaStatus.COMPENSATED, final_nothing=SagaStatus.REJECTED
                )
            else:
                status = await self._unwind(final_ok=SagaStatus.COMPENSATED, final_nothing=SagaStatus.FAILED)
            result = self._result(status, reason=halt.reason)
            if workflow.patched(_FAILED_OUTCOMES):
                # The goal was not reached: say so in Temporal itself (UI list, ExecutionStatus
                # queries, the SDK's metrics), with the whole result in the error's details.
                raise ApplicationError(
                    f"{status.value}: {halt.reason}", result, type=_OUTCOME_ERRORS[status], non_retryable=True
                ) from None
            return result

    async def _resolve_team(self, request: SagaRequest) -> TeamSpec:
        try:
            return await workflow.execute_activity(
                RESOLVE_TEAM_ACTIVITY,
                ResolveTeamRequest(name=str(request.team_name)),
                result_type=TeamSpec,
                start_to_close_timeout=RESOLVE_START_TO_CLOSE,
                retry_policy=RESOLVE_RETRY,
                summary=f"resolve team {request.team_name}",
            )
        except ActivityError as exc:
            raise _Halt(f"cannot resolve team {request.team_name!r}: {_describe(exc)}") from None

    def _announce(self) -> None:
        team = self._require_team()
        self._attrs.set(
            KEEL_STATUS.value_set(self._status.value),
            KEEL_TEAM.value_set(team.name),
            KEEL_AGENT.value_set(self._active),
            KEEL_CORRELATION_ID.value_set(self._correlation_id),
            KEEL_TOKENS.value_set(self._tokens),
            KEEL_COST_USD.value_set(round(self._cost, 6)),
        )
        if self._generation == 1:
            self._note(f"goal: {self._request.goal}")
            self._messages.append(ChatMessage(role="user", content=self._request.goal))
        workflow.logger.info(
            "saga started",
            extra={"team": team.name, "agent": self._active, "correlation_id": self._correlation_id},
        )
        self._update_details()

    def _require_team(self) -> TeamSpec:
        assert self._team is not None, "team is resolved before the loop starts"
        return self._team

    # ------------------------------------------------------------------ agent loop

    async def _agent_loop(self) -> str:
        team = self._require_team()
        while True:
            if workflow.info().is_continue_as_new_suggested():
                await self._continue_as_new()
            if self._turns >= team.max_turns:
                raise _Halt(f"max_turns reached: {team.max_turns} LLM turns without a final answer")
            await self._check_budget()
            agent = team.agent(self._active)
            llm = await self._call_llm(agent)
            self._messages.append(
                ChatMessage(role="assistant", name=agent.name, content=llm.content, tool_calls=llm.tool_calls)
            )
            self._transcript_add("message", agent=agent.name, role="assistant", content=llm.content)
            if not llm.tool_calls:
                output = await self._final_answer(agent, llm)
                if output is not None:
                    return output
                continue
            handed_to: str | None = None
            for call in llm.tool_calls:
                if handed_to is not None:
                    self._tool_message(call, f"not run: control passed to {handed_to}")
                    continue
                handed_to = await self._handle_call(agent, call, llm.content or "")

    async def _call_llm(self, agent: AgentSpec) -> LLMResult:
        team = self._require_team()
        tools = [
            ToolSchema(name=t.name, description=t.description, parameters=t.parameters)
            for t in (team.tool(n) for n in agent.tools)
        ]
        tools += [handoff_tool(team.agent(target)) for target in agent.handoffs]
        self._step += 1
        step = self._step
        request = LLMRequest(
            model=agent.model,
            messages=[ChatMessage(role="system", content=agent.instructions), *self._messages],
            tools=tools,
            response_schema=agent.output_schema,
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
            correlation_id=self._correlation_id,
            idempotency_key=self._key(step),
            agent=agent.name,
        )
        self._waiting_for = f"{agent.name} is thinking (LLM turn {self._turns + 1})"
        self._update_details()
        started = workflow.now()
        outage_started = None
        while True:
            self._attrs.flush()
            try:
                result = await workflow.execute_activity(
                    "call_llm",
                    request,
                    result_type=LLMResult,
                    start_to_close_timeout=LLM_START_TO_CLOSE,
                    heartbeat_timeout=LLM_HEARTBEAT,
                    retry_policy=LLM_RETRY,
                    summary=f"{agent.name}: call_llm",
                )
                break
            except ActivityError as exc:
                cause = _cause(exc)
                self._last_error = _describe(exc)
                if cause is None or cause.type not in _LLM_OUTAGE_ERRORS:
                    raise _Halt(f"LLM call of {agent.name} failed: {self._last_error}") from None
                # The provider is down or throttling past the activity's retries: wait
                # durably and try again rather than fail a run that has done work.
                outage_started = outage_started or workflow.now()
                if workflow.now() - outage_started >= LLM_OUTAGE_MAX:
                    raise _Halt(f"LLM provider unavailable for too long: {self._last_error}") from None
                self._waiting_for = f"LLM provider unavailable, retrying ({self._last_error})"
                self._update_details()
                await workflow.sleep(LLM_OUTAGE_PAUSE, summary="wait for LLM provider")
        self._turns += 1
        self._tokens += result.tokens
        self._cost += result.cost_usd
        self._waiting_for = None
        self._record(
            "llm",
            agent.name,
            "call_llm",
            step=step,
            detail=f"{result.provider}:{result.model} {result.finish_reason}",
            tokens=result.tokens,
            cost_usd=result.cost_usd,
            started=started,
            provider=result.provider,
        )
        self._attrs.set(KEEL_TOKENS.value_set(self._tokens), KEEL_COST_USD.value_set(round(self._cost, 6)))
        return result

    async def _final_answer(self, agent: AgentSpec, llm: LLMResult) -> str | None:
        team = self._require_team()
        content = llm.content or ""
        if agent.output_schema is not None:
            _, problem = parse_json_object(content, agent.output_schema)
            if problem:
                self._count_tool_error(f"final answer of {agent.name} does not fit its schema: {problem}")
                self._messages.append(
                    ChatMessage(
                        role="user",
                        content=f"Your answer does not fit the required JSON schema ({problem}). "
                        "Answer again with JSON only.",
                    )
                )
                return None
        if team.review.final_answer:
            record = await self._review(
                "final_answer",
                agent.name,
                arguments={"answer": content},
                reasoning=content,
                parameters={
                    "type": "object",
                    "properties": {"answer": {"type": "string"}},
                    "required": ["answer"],
                },
            )
            if record.decision == "edit" and record.arguments:
                content = str(record.arguments.get("answer", content))
        self._transcript_add("note", agent=agent.name, content="final answer")
        return content

    async def _handle_call(self, agent: AgentSpec, call: ToolCall, reasoning: str) -> str | None:
        """Run one tool call of the model; returns the new agent's name on a handoff."""
        team = self._require_team()
        self._transcript_add(
            "tool_call", agent=agent.name, data={"name": call.name, "arguments": call.arguments}
        )
        if call.name.startswith(HANDOFF_TOOL_PREFIX):
            return self._handoff(agent, call)
        if call.name not in agent.tools:
            self._tool_message(call, f"error: {agent.name} has no tool {call.name!r}")
            self._count_tool_error(f"{agent.name} called unknown tool {call.name!r}")
            return None
        spec = team.tool(call.name)
        arguments, problem = parse_json_object(call.arguments, spec.parameters)
        if problem:
            self._tool_message(call, f"error: invalid arguments for {spec.name}: {problem}")
            self._count_tool_error(f"invalid arguments for {spec.name}: {problem}")
            return None
        if team.needs_review(spec.name):
            record = await self._review(
                "tool",
                agent.name,
                tool=spec.name,
                arguments=arguments,
                reasoning=reasoning,
                parameters=spec.parameters,
            )
            if record.decision == "edit" and record.arguments is not None:
                arguments = record.arguments
        await self._run_tool(agent, spec, call, arguments)
        self._visits = [agent.name]
        return None

    def _handoff(self, agent: AgentSpec, call: ToolCall) -> str | None:
        team = self._require_team()
        target = call.name.removeprefix(HANDOFF_TOOL_PREFIX)
        if target not in agent.handoffs:
            self._tool_message(call, f"error: {agent.name} cannot transfer to {target!r}")
            self._count_tool_error(f"{agent.name} tried to hand off to {target!r}")
            return None
        args, _ = parse_json_object(call.arguments)
        note = str(args.get("note") or args.get("reason") or "")
        self._handoffs += 1
        if self._handoffs > team.max_handoffs:
            raise _Halt(f"max_handoffs reached: {team.max_handoffs} handoffs")
        if not self._visits:
            self._visits = [agent.name]
        self._visits.append(target)
        if is_ping_pong(self._visits):
            raise _Halt(f"handoff ping-pong between {agent.name} and {target} with no progress")
        self._tool_message(call, f"Transferred to {target}." + (f" Note: {note}" if note else ""))
        self._step += 1
        self._record("handoff", agent.name, f"{agent.name} -> {target}", detail=note)
        self._transcript_add(
            "handoff", agent=agent.name, content=note, data={"from": agent.name, "to": target}
        )
        self._active = target
        self._attrs.set(KEEL_AGENT.value_set(target))
        self._update_details()
        return target

    async def _run_tool(
        self, agent: AgentSpec, spec: ToolSpec, call: ToolCall, arguments: dict[str, Any]
    ) -> None:
        self._step += 1
        step = self._step
        key = self._key(step)
        comp = None
        if spec.compensation:
            # Registered before the tool runs: if the tool's result is lost (worker
            # killed after the side effect), the compensation still undoes it by key.
            comp = self._saga.add(
                spec.name,
                spec.compensation,
                CompensationRequest(
                    idempotency_key=key,
                    correlation_id=self._correlation_id,
                    tool=spec.name,
                    arguments=arguments,
                ),
                step=step,
                summary=f"{spec.compensation} (compensation)",
            )
        self._waiting_for = f"tool {spec.name}"
        self._update_details()
        self._attrs.flush()
        started = workflow.now()
        try:
            result = await workflow.execute_activity(
                spec.name,
                ToolRequest(
                    arguments=arguments,
                    idempotency_key=key,
                    correlation_id=self._correlation_id,
                    workflow_id=workflow.info().workflow_id,
                    step=step,
                    agent=agent.name,
                ),
                result_type=ToolResult,
                start_to_close_timeout=TOOL_START_TO_CLOSE,
                heartbeat_timeout=TOOL_HEARTBEAT,
                retry_policy=TOOL_RETRY,
                summary=spec.name,
                # A cancelled run waits for a running tool to finish, so its side
                # effect is known before the compensations run.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except ActivityError as exc:
            cause = _cause(exc)
            self._last_error = _describe(exc)
            if cause is not None and cause.type == errors.TOOL_INVALID_ARGUMENTS:
                if comp is not None:
                    self._saga.discard(comp)
                self._tool_message(call, f"error: {cause.message}")
                self._count_tool_error(f"{spec.name} refused its arguments: {cause.message}")
                return
            if cause is not None and cause.type == errors.ACTIVITY_NOT_REGISTERED:
                if comp is not None:
                    self._saga.discard(comp)  # no worker ran it: there is nothing to undo
                queue = workflow.info().task_queue
                raise _Halt(
                    f"tool {spec.name} is not registered on any worker of task queue {queue}"
                ) from None
            raise _Halt(f"tool {spec.name} failed: {self._last_error}") from None
        finally:
            self._waiting_for = None
        if comp is not None:
            comp.arg = comp.arg.model_copy(update={"result": result.output})
        self._tool_message(call, json.dumps(result.output, sort_keys=True))
        self._record("tool", agent.name, spec.name, step=step, detail=result.summary, started=started)
        self._transcript_add("tool_result", agent=agent.name, content=result.summary, data=result.output)
        self._update_details()

    def _tool_message(self, call: ToolCall, content: str) -> None:
        self._messages.append(ChatMessage(role="tool", tool_call_id=call.id, name=call.name, content=content))

    def _count_tool_error(self, problem: str) -> None:
        team = self._require_team()
        self._tool_errors += 1
        self._last_error = problem
        self._record("tool_error", self._active, "invalid tool call", detail=problem)
        self._transcript_add("tool_error", agent=self._active, content=problem)
        if self._tool_errors > team.max_tool_errors:
            raise _Halt(f"too many invalid tool calls ({self._tool_errors}); last: {problem}")

    # ------------------------------------------------------------------ budget

    def _budget_problem(self) -> str | None:
        budget = self._require_team().budget
        factor = 1 + self._budget_extensions
        if budget.max_tokens is not None and self._tokens >= budget.max_tokens * factor:
            return f"token budget exhausted: {self._tokens} of {budget.max_tokens * factor} tokens"
        if budget.max_cost_usd is not None and self._cost >= budget.max_cost_usd * factor:
            return f"cost budget exhausted: ${self._cost:.4f} of ${budget.max_cost_usd * factor:.4f}"
        return None

    async def _check_budget(self) -> None:
        problem = self._budget_problem()
        if problem is None:
            return
        if self._require_team().budget.on_exhausted == "stop":
            raise _Halt(problem)
        # Approving grants one more budget's worth; rejecting compensates.
        await self._review("budget", self._active, reasoning=problem)
        self._budget_extensions += 1

    # ------------------------------------------------------------------ human review

    async def _review(
        self,
        kind: ReviewKind,
        agent: str,
        *,
        tool: str | None = None,
        arguments: dict[str, Any] | None = None,
        reasoning: str = "",
        parameters: dict[str, Any] | None = None,
    ) -> ReviewRecord:
        team = self._require_team()
        request = ReviewRequest(
            request_id=f"rv-{self._step + 1}-{str(workflow.uuid4())[:8]}",
            kind=kind,
            agent=agent,
            tool=tool,
            arguments=arguments or {},
            reasoning=reasoning,
            tokens=self._tokens,
            cost_usd=round(self._cost, 6),
            requested_at=workflow.now(),
            parameters=parameters,
        )
        self._pending = request
        self._decision = None
        what = f"{tool}({json.dumps(arguments or {}, sort_keys=True)})" if tool else kind.replace("_", " ")
        self._waiting_for = f"a reviewer: {describe_request(request)} (review {request.request_id})"
        self._set_status(SagaStatus.AWAITING_REVIEW)
        workflow.logger.info("awaiting review", extra={"request_id": request.request_id, "tool": tool})
        decision = await self._wait_for_decision(request, team)
        record = ReviewRecord(
            request_id=request.request_id,
            kind=kind,
            tool=tool,
            decision=decision.decision,
            reviewer=decision.reviewer,
            comment=decision.comment,
            arguments=decision.arguments,
            via=decision.via,
            at=workflow.now(),
        )
        self._reviews.append(record)
        self._pending = None
        self._decision = None
        self._waiting_for = None
        self._transcript_add(
            "decision",
            agent=agent,
            content=decision.comment,
            data={
                "request_id": request.request_id,
                "decision": decision.decision,
                "reviewer": decision.reviewer,
                **({"arguments": decision.arguments} if decision.arguments is not None else {}),
            },
        )
        self._step += 1
        self._record(
            "review", agent, f"review {tool or kind}", detail=f"{decision.decision} by {decision.reviewer}"
        )
        approved = decision.decision in ("approve", "edit")
        if approved:
            self._set_status(SagaStatus.RUNNING)
            message = "approved: the run continues"
        else:
            self._set_status(SagaStatus.COMPENSATING)
            message = "rejected: compensating the steps already done"
        self._outcomes[request.request_id] = ReviewOutcome(
            request_id=request.request_id, decision=decision.decision, status=self._status, message=message
        )
        if not approved:
            why = decision.comment or "no reason given"
            raise _Halt(f"{what} rejected by {decision.reviewer}: {why}", rejected=True)
        return record

    async def _wait_for_decision(self, request: ReviewRequest, team: TeamSpec) -> _Decision:
        policy = team.review
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None,
                timeout=timedelta(seconds=policy.timeout_s),
                timeout_summary="review deadline",
            )
            assert self._decision is not None
            return self._decision
        except TimeoutError:
            pass
        if policy.on_timeout == "escalate":
            self._escalated = True
            request.escalated = True
            self._attrs.set(KEEL_ESCALATED.value_set(True))
            workflow.logger.warning(
                "review timed out: escalated", extra={"request_id": request.request_id, "tool": request.tool}
            )
            self._transcript_add("note", content=f"review {request.request_id} escalated after timeout")
            self._update_details()
            self._attrs.flush()
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None,
                    timeout=timedelta(seconds=policy.escalation_timeout_s),
                    timeout_summary="escalated review deadline",
                )
                assert self._decision is not None
                return self._decision
            except TimeoutError:
                pass
        return _Decision(
            request.request_id, "timeout", "timeout", "no decision before the review timeout", None, "timeout"
        )

    @workflow.update(name="review")
    async def review(self, decision: ReviewInput) -> ReviewOutcome:
        """Approve, reject or edit-and-approve the pending review; returns what the run did."""
        if decision.request_id in self._outcomes:
            return self._outcomes[decision.request_id]  # a duplicate: same answer again
        assert self._pending is not None
        request_id = self._pending.request_id
        # Refusals of authority are accepted updates, not validator rejections: a decision
        # from someone who may not decide is an audit event and must stay in the history.
        problem = self._authority_problem(
            decision.decision, decision.reviewer, decision.arguments, decision.signature
        )
        if problem is not None:
            self._refuse_signal("review", decision.model_dump_json(exclude={"signature"})[:500], problem)
            return ReviewOutcome(
                request_id=request_id,
                decision=decision.decision,
                status=self._status,
                message=f"refused: {problem}",
                refused=True,
            )
        self._decision = _Decision(
            request_id=request_id,
            decision=decision.decision,
            reviewer=decision.reviewer,
            comment=decision.comment,
            arguments=decision.arguments,
            via="update",
            signature=decision.signature,
        )
        await workflow.wait_condition(lambda: request_id in self._outcomes or self._status.is_final)
        if request_id in self._outcomes:
            return self._outcomes[request_id]
        return ReviewOutcome(
            request_id=request_id,
            decision=decision.decision,
            status=self._status,
            message=f"the run ended ({self._status.value}) before the decision was applied",
        )

    @review.validator
    def _validate_review(self, decision: ReviewInput) -> None:
        if decision.request_id is not None and decision.request_id in self._outcomes:
            return
        if self._status.is_final:
            raise ValueError(f"the run has ended ({self._status.value}); nothing to review")
        pending = self._pending
        if pending is None:
            raise ValueError("no review is pending")
        if decision.request_id is not None and decision.request_id != pending.request_id:
            raise ValueError(
                f"review {decision.request_id!r} is not the pending one (pending: {pending.request_id!r})"
            )
        if self._decision is not None:
            raise ValueError(f"review {pending.request_id!r} already has a decision being applied")
        if decision.decision == "edit":
            if pending.parameters is None:
                raise ValueError(f"a {pending.kind} review cannot be edited, only approved or rejected")
            problem = validation_error(pending.parameters, decision.arguments)
            if problem:
                raise ValueError(
                    f"edited arguments do not fit the schema of {pending.tool or pending.kind}: {problem}"
                )

    @workflow.signal(name="approve")
    def approve(self, payload: RawValue = None) -> None:  # type: ignore[assignment]
        """Approve the pending review (payload: reviewer, comment, optional request_id)."""
        self._signal_decision("approve", payload)

    @workflow.signal(name="reject")
    def reject(self, payload: RawValue = None) -> None:  # type: ignore[assignment]
        """Reject the pending review (payload: reviewer, reason, optional request_id)."""
        self._signal_decision("reject", payload)

    def _signal_decision(self, name: Literal["approve", "reject"], payload: RawValue | None) -> None:
        # Signals are decoded here, not by the SDK: a payload that does not fit would
        # otherwise be dropped with only a log line. Every refusal is kept for `status`.
        text = ""
        try:
            data: Any = {} if payload is None else workflow.payload_converter().from_payload(payload.payload)
            text = json.dumps(data, default=str)[:500]
            if data is None:
                data = {}
            model = ApproveSignal if name == "approve" else RejectSignal
            parsed = model.model_validate(data)
        except (ValidationError, ValueError, TypeError) as exc:
            error = str(exc).splitlines()[0] if isinstance(exc, ValidationError) else str(exc)
            if isinstance(exc, ValidationError):
                error = "; ".join(
                    'a decision needs a non-empty reviewer ({"reviewer": "NAME"})'
                    if e["loc"] == ("reviewer",)
                    else f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}"
                    for e in exc.errors()
                )
            error = f"malformed payload: {error}"
            self._refuse_signal(name, text, error)
            return
        pending = self._pending
        if parsed.request_id is not None and parsed.request_id in self._outcomes:
            return  # a duplicate of a decision already applied
        if pending is None:
            self._refuse_signal(name, text, "no review is pending")
            return
        if parsed.request_id is not None and parsed.request_id != pending.request_id:
            self._refuse_signal(
                name, text, f"request {parsed.request_id!r} is not pending ({pending.request_id!r} is)"
            )
            return
        if self._decision is not None:
            return  # first decision wins; later duplicates are idempotent no-ops
        problem = self._authority_problem(name, parsed.reviewer, None, parsed.signature)
        if problem is not None:
            self._refuse_signal(name, text, problem)
            return
        comment = parsed.comment if isinstance(parsed, ApproveSignal) else parsed.reason
        self._decision = _Decision(
            pending.request_id, name, parsed.reviewer, comment, None, "signal", parsed.signature
        )

    def _authority_problem(
        self, decision: str, reviewer: str, arguments: dict[str, Any] | None, signature: str | None
    ) -> str | None:
        assert self._pending is not None
        return authority_problem(
            self._require_team().review,
            workflow_id=workflow.info().workflow_id,
            request=self._pending,
            decision=decision,
            reviewer=reviewer,
            arguments=arguments,
            signature=signature,
        )

    def _refuse_signal(self, name: str, payload: str, error: str) -> None:
        workflow.logger.warning("signal refused", extra={"signal": name, "error": error})
        self._rejected_signals.append(
            RejectedSignal(name=name, payload=payload, error=error, at=workflow.now())
        )

    # ------------------------------------------------------------------ queries

    @workflow.query(name="status")
    def status(self) -> SagaStatusView:
        """Where the run is: status, active agent, pending review, spend, compensations, errors."""
        return SagaStatusView(
            status=self._status,
            team=self._team.name if self._team else self._request.team_label,
            goal=self._request.goal,
            active_agent=self._active,
            step=self._step,
            turns=self._turns,
            handoffs=self._handoffs,
            pending_review=self._pending,
            tokens=self._tokens,
            cost_usd=round(self._cost, 6),
            correlation_id=self._correlation_id,
            escalated=self._escalated,
            compensations=list(self._compensations),
            completed_steps=[f"{c.name} (step {c.step})" for c in self._saga.pending],
            rejected_signals=list(self._rejected_signals),
            last_error=self._last_error,
            waiting_for=self._waiting_for,
        )

    @workflow.query(name="transcript")
    def transcript(self) -> list[TranscriptEntry]:
        """Messages, tool calls, handoffs and decisions, in order."""
        return list(self._transcript)

    # ------------------------------------------------------------------ unwinding

    async def _unwind(self, *, final_ok: SagaStatus, final_nothing: SagaStatus) -> SagaStatus:
        had_work = len(self._saga) > 0
        self._pending = None
        if had_work:
            self._set_status(SagaStatus.COMPENSATING)
            self._waiting_for = "compensations"
            self._update_details()
        outcome = await self._saga.compensate()
        self._waiting_for = None
        if outcome.uncompensated:
            status = SagaStatus.FAILED
            self._last_error = f"left uncompensated: {', '.join(outcome.uncompensated)}"
        else:
            status = final_ok if had_work else final_nothing
        self._uncompensated = outcome.uncompensated
        self._set_status(status)
        return status

    def _compensation_done(self, record: CompensationRecord) -> None:
        self._compensations.append(record)
        self._transcript_add(
            "compensation",
            content=f"{record.compensation} for {record.name} (step {record.step}): {record.status}",
            data={"status": record.status, "error": record.error},
        )
        self._update_details()

    # ------------------------------------------------------------------ continue-as-new

    async def _continue_as_new(self) -> None:
        # Let in-flight update handlers finish before the history is cut.
        self._attrs.flush()
        await workflow.wait_condition(workflow.all_handlers_finished)
        checkpoint = SagaCheckpoint(
            team=self._require_team(),
            correlation_id=self._correlation_id,
            active_agent=self._active,
            step=self._step,
            turns=self._turns,
            handoffs=self._handoffs,
            tool_errors=self._tool_errors,
            tokens=self._tokens,
            cost_usd=self._cost,
            budget_extensions=self._budget_extensions,
            messages=compact_messages(self._messages),
            compensations=[
                PendingCompensation(step=c.step, name=c.name, activity=c.activity_name, request=c.arg)
                for c in self._saga.pending
            ],
            steps=self._steps,
            reviews=self._reviews,
            transcript=self._transcript[-_TRANSCRIPT_KEEP:],
            rejected_signals=self._rejected_signals,
            visits=self._visits,
            escalated=self._escalated,
            runs=self._generation + 1,
            key_scope=self._key_scope,
        )
        workflow.logger.info("continuing as new", extra={"step": self._step, "runs": self._generation + 1})
        workflow.continue_as_new(self._request.model_copy(update={"checkpoint": checkpoint}))

    # ------------------------------------------------------------------ bookkeeping

    def _key(self, step: int) -> str:
        """The idempotency key of `step`: unique to this saga execution, stable across retries."""
        return f"{self._key_scope}:{step}"

    def _set_status(self, status: SagaStatus) -> None:
        self._status = status
        self._attrs.set(KEEL_STATUS.value_set(status.value))
        self._attrs.flush()
        self._update_details()

    def _record(
        self,
        kind: StepKind,
        agent: str,
        name: str,
        *,
        step: int | None = None,
        detail: str = "",
        tokens: int = 0,
        cost_usd: float = 0.0,
        started: Any = None,
        provider: str | None = None,
    ) -> None:
        now = workflow.now()
        duration = (now - started).total_seconds() * 1000 if started is not None else 0.0
        self._steps.append(
            StepRecord(
                step=self._step if step is None else step,
                kind=kind,
                agent=agent,
                name=name,
                detail=detail,
                tokens=tokens,
                cost_usd=cost_usd,
                duration_ms=round(duration, 1),
                provider=provider,
                at=now,
            )
        )

    def _note(self, text: str) -> None:
        self._transcript_add("note", content=text)

    def _transcript_add(
        self,
        kind: Any,
        *,
        agent: str | None = None,
        role: str | None = None,
        content: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self._transcript.append(
            TranscriptEntry(
                kind=kind, agent=agent, role=role, content=content, data=data or {}, step=self._step
            )
        )

    def _update_details(self) -> None:
        lines = [
            f"**{self._status.value}** · agent `{self._active}` · step {self._step}",
            f"tokens {self._tokens} · cost ${self._cost:.4f}",
        ]
        if self._pending is not None:
            # First, so the UI's one-line view of the details says what a person must decide.
            escalated = " (escalated)" if self._pending.escalated else ""
            lines.insert(0, f"waiting for a reviewer{escalated}: {describe_request(self._pending)}")
            lines.append(f"review `{self._pending.request_id}` ({self._pending.kind})")
        elif self._waiting_for:
            lines.append(f"waiting for: {self._waiting_for}")
        if self._saga.pending:
            lines.append("compensations registered: " + ", ".join(c.name for c in self._saga.pending))
        workflow.set_current_details("\n\n".join(lines))

    def _result(self, status: SagaStatus, reason: str | None = None) -> SagaResult:
        return SagaResult(
            status=status,
            reason=reason,
            output=self._output,
            team=self._require_team().name if self._team else self._request.team_label,
            final_agent=self._active or None,
            correlation_id=self._correlation_id,
            steps=self._steps,
            compensations=self._compensations,
            uncompensated=list(self._uncompensated),
            reviews=self._reviews,
            tokens=self._tokens,
            cost_usd=round(self._cost, 6),
        )
