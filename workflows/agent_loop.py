"""`AgentLoop`: the active agent thinks, calls tools, hands off or answers, until the goal is reached.

Each turn calls `call_llm` with the agent's tools plus one handoff tool per agent
it may transfer to (`transfer_to_<agent>`). A tool call runs the tool activity by
name, keyed `<saga execution>:<step>`, after registering its compensation; a
handoff switches the active agent and carries the conversation; a final answer
ends the loop. Risky tools (and, if the policy says so, the final answer or a
budget overrun) wait for a person's decision at the `ReviewDesk`. Anything that
must end the run raises `Halt`; the workflow then unwinds the saga.
"""

from __future__ import annotations

import json
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from agentkeel import errors
    from agentkeel.contracts import (
        AgentSpec,
        ChatMessage,
        CompensationRequest,
        LLMRequest,
        LLMResult,
        ToolCall,
        ToolRequest,
        ToolResult,
        ToolSchema,
        ToolSpec,
    )
    from agentkeel.names import CALL_LLM_ACTIVITY, HANDOFF_TOOL_PREFIX
    from agentkeel.schemas import parse_json_object
    from agentkeel.search_attributes import KEEL_AGENT, KEEL_COST_USD, KEEL_TOKENS

# The workflow's own helper modules run inside the sandbox, like the workflow itself.
from agentkeel.workflows.conversation import handoff_tool, is_ping_pong
from agentkeel.workflows.failures import Halt, application_cause, describe_failure
from agentkeel.workflows.guards import budget_problem, is_outage, through_outages
from agentkeel.workflows.optional import mcp_tools
from agentkeel.workflows.policies import (
    LLM_HEARTBEAT,
    LLM_RETRY,
    LLM_START_TO_CLOSE,
    TOOL_HEARTBEAT,
    tool_retry,
    tool_timeout,
)
from agentkeel.workflows.review import ReviewDesk
from agentkeel.workflows.runbook import RunBook
from agentkeel.workflows.saga import Compensation
from agentkeel.workflows.step_review import StepReviewer
from agentkeel.workflows.stored_conversation import StoredConversation
from agentkeel.workflows.tool_review import needs_review

_FINAL_ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}
"""What a reviewer may edit in a final answer under review."""


class AgentLoop:
    """The agent loop of one run.

    Args:
        book: The run's state and records.
        desk: Where risky steps wait for a person's decision.
    """

    def __init__(self, book: RunBook, desk: ReviewDesk) -> None:
        self._book = book
        self._state = book.state
        self._desk = desk
        self._stored = StoredConversation(book) if book.state.conversation is not None else None
        self._reviewer = StepReviewer(book, desk)

    async def run(self) -> str:
        """Run turns until an agent gives its final answer; returns it.

        Raises:
            Halt: A limit was reached, a step failed, or a person rejected a step.
        """
        book, state, team = self._book, self._state, self._book.team
        while True:
            if workflow.info().is_continue_as_new_suggested():
                await self._continue_as_new()
            if state.turns >= team.max_turns:
                raise Halt(f"max_turns reached: {team.max_turns} LLM turns without a final answer")
            await self._check_budget()
            agent = team.agent(state.active_agent)
            llm = await self._call_llm(agent)
            if self._stored is None:  # a stored conversation got the answer from `call_llm` itself
                book.add_message(
                    ChatMessage(
                        role="assistant", name=agent.name, content=llm.content, tool_calls=llm.tool_calls
                    )
                )
            book.transcript_add("message", agent=agent.name, role="assistant", content=llm.content)
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

    async def _continue_as_new(self) -> None:
        # Let in-flight update handlers finish before the history is cut.
        self._book.attrs.flush()
        await workflow.wait_condition(workflow.all_handlers_finished)
        checkpoint = self._book.checkpoint()
        workflow.logger.info("continuing as new", extra={"step": self._state.step, "runs": checkpoint.runs})
        workflow.continue_as_new(self._book.request.model_copy(update={"checkpoint": checkpoint}))

    async def _check_budget(self) -> None:
        state, budget = self._state, self._book.team.budget
        problem = budget_problem(
            budget, tokens=state.tokens, cost_usd=state.cost_usd, extensions=state.budget_extensions
        )
        if problem is None:
            return
        if budget.on_exhausted == "stop":
            raise Halt(problem)
        # Approving grants one more budget's worth; rejecting compensates.
        await self._reviewer.review("budget", state.active_agent, reasoning=problem)
        state.budget_extensions += 1

    # ------------------------------------------------------------------ LLM turns

    async def _call_llm(self, agent: AgentSpec) -> LLMResult:
        state, stored = self._state, self._stored
        if stored is not None and stored.needs_summary(agent):
            state.step += 1
            request = stored.summarize_request(agent, self._llm_request(agent, state.step))
            summary = await self._llm_turn(agent, request, f"{agent.name} is summarizing the conversation")
            stored.absorb_summary(agent, summary)
        state.step += 1
        request = self._llm_request(agent, state.step)
        if stored is not None:
            request = stored.request(agent, request)
        result = await self._llm_turn(
            agent, request, f"{agent.name} is thinking (LLM turn {state.turns + 1})"
        )
        state.turns += 1
        if stored is not None:
            stored.absorb(agent, result)
        return result

    async def _llm_turn(self, agent: AgentSpec, request: LLMRequest, doing: str) -> LLMResult:
        """Run one `call_llm` activity through outages; count its tokens and cost and record it."""
        book, state = self._book, self._state
        step = state.step
        book.waiting_for = doing
        book.update_details()
        started = workflow.now()
        try:
            result = await through_outages(
                lambda: self._execute_llm(agent, request),
                on_failure=self._llm_failed,
                on_wait=self._wait_for_provider,
            )
        except ActivityError as exc:
            if is_outage(exc):
                raise Halt(f"LLM provider unavailable for too long: {book.last_error}") from None
            raise Halt(f"LLM call of {agent.name} failed: {book.last_error}") from None
        state.tokens += result.tokens
        state.cost_usd += result.cost_usd
        book.waiting_for = None
        book.record(
            "llm",
            agent.name,
            CALL_LLM_ACTIVITY,
            step=step,
            detail=f"{result.provider}:{result.model} {result.finish_reason}",
            tokens=result.tokens,
            cost_usd=result.cost_usd,
            started=started,
            provider=result.provider,
        )
        book.attrs.set(KEEL_TOKENS.value_set(state.tokens), KEEL_COST_USD.value_set(round(state.cost_usd, 6)))
        return result

    def _llm_request(self, agent: AgentSpec, step: int) -> LLMRequest:
        team = self._book.team
        tools = [
            ToolSchema(name=t.name, description=t.description, parameters=t.parameters)
            for t in (team.tool(n) for n in agent.tools)
        ]
        tools += [handoff_tool(team.agent(target)) for target in agent.handoffs]
        # Options left unset when the agent has none: history then carries only what is said.
        options = {"response_schema": agent.output_schema, "temperature": agent.temperature}
        options["max_tokens"] = agent.max_tokens
        return LLMRequest(
            model=agent.model,
            messages=[ChatMessage(role="system", content=agent.instructions), *self._state.messages],
            tools=tools,
            correlation_id=self._state.correlation_id,
            idempotency_key=self._book.key(step),
            agent=agent.name,
            **{name: value for name, value in options.items() if value is not None},
        )

    async def _execute_llm(self, agent: AgentSpec, request: LLMRequest) -> LLMResult:
        self._book.attrs.flush()
        return await workflow.execute_activity(
            CALL_LLM_ACTIVITY,
            request,
            result_type=LLMResult,
            start_to_close_timeout=LLM_START_TO_CLOSE,
            heartbeat_timeout=LLM_HEARTBEAT,
            retry_policy=LLM_RETRY,
            summary=f"{agent.name}: {_purpose(request)}",
        )

    def _llm_failed(self, description: str) -> None:
        self._book.last_error = description

    def _wait_for_provider(self) -> None:
        # The provider is down or throttling past the activity's retries: the run waits
        # durably and tries again rather than fail a run that has done work.
        self._book.waiting_for = f"LLM provider unavailable, retrying ({self._book.last_error})"
        self._book.update_details()

    async def _final_answer(self, agent: AgentSpec, llm: LLMResult) -> str | None:
        """The answer that ends the loop, or None when the agent must answer again."""
        content = llm.content or ""
        if agent.output_schema is not None:
            _, problem = parse_json_object(content, agent.output_schema)
            if problem:
                self._count_tool_error(f"final answer of {agent.name} does not fit its schema: {problem}")
                self._book.add_message(
                    ChatMessage(
                        role="user",
                        content=f"Your answer does not fit the required JSON schema ({problem}). "
                        "Answer again with JSON only.",
                    )
                )
                return None
        if self._book.team.review.final_answer:
            record = await self._reviewer.review(
                "final_answer",
                agent.name,
                arguments={"answer": content},
                reasoning=content,
                parameters=_FINAL_ANSWER_SCHEMA,
            )
            if record.decision == "edit" and record.arguments:
                content = str(record.arguments.get("answer", content))
        self._book.note("final answer", agent=agent.name)
        return content

    # ------------------------------------------------------------------ tool calls and handoffs

    async def _handle_call(self, agent: AgentSpec, call: ToolCall, reasoning: str) -> str | None:
        """Run one tool call of the model; returns the new agent's name on a handoff."""
        team = self._book.team
        self._book.transcript_add(
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
        request = self._tool_request(agent, arguments, self._state.step + 1)
        if await needs_review(team, spec, request):
            record = await self._reviewer.review(
                "tool",
                agent.name,
                tool=spec.name,
                arguments=arguments,
                reasoning=reasoning,
                parameters=spec.parameters,
            )
            if record.decision == "edit" and record.arguments is not None:
                arguments = record.arguments
        if spec.mcp:
            await mcp_tools().run_mcp_tool(self, agent, spec, call, arguments)
        else:
            await self._run_tool(agent, spec, call, arguments)
        self._state.visits = [agent.name]
        return None

    def _handoff(self, agent: AgentSpec, call: ToolCall) -> str | None:
        book, state, team = self._book, self._state, self._book.team
        target = call.name.removeprefix(HANDOFF_TOOL_PREFIX)
        if target not in agent.handoffs:
            self._tool_message(call, f"error: {agent.name} cannot transfer to {target!r}")
            self._count_tool_error(f"{agent.name} tried to hand off to {target!r}")
            return None
        args, _ = parse_json_object(call.arguments)
        note = str(args.get("note") or args.get("reason") or "")
        state.handoffs += 1
        if state.handoffs > team.max_handoffs:
            raise Halt(f"max_handoffs reached: {team.max_handoffs} handoffs")
        if not state.visits:
            state.visits = [agent.name]
        state.visits.append(target)
        if is_ping_pong(state.visits):
            raise Halt(f"handoff ping-pong between {agent.name} and {target} with no progress")
        self._tool_message(call, f"Transferred to {target}." + (f" Note: {note}" if note else ""))
        state.step += 1
        book.record("handoff", agent.name, f"{agent.name} -> {target}", detail=note)
        book.transcript_add(
            "handoff", agent=agent.name, content=note, data={"from": agent.name, "to": target}
        )
        state.active_agent = target
        book.attrs.set(KEEL_AGENT.value_set(target))
        book.update_details()
        return target

    async def _run_tool(
        self, agent: AgentSpec, spec: ToolSpec, call: ToolCall, arguments: dict[str, Any]
    ) -> None:
        book = self._book
        self._state.step += 1
        step = self._state.step
        comp = self._register_compensation(spec, arguments, step)
        book.waiting_for = f"tool {spec.name}"
        book.update_details()
        book.attrs.flush()
        started = workflow.now()
        try:
            result = await self._execute_tool(agent, spec, arguments, step)
        except ActivityError as exc:
            self._tool_failed(exc, spec, call, comp)
            return
        finally:
            book.waiting_for = None
        if comp is not None:
            comp.arg = comp.arg.model_copy(update={"result": result.output, "result_ref": result.output_ref})
        if result.output_ref is not None:  # stored by the worker: history keeps a reference and a preview
            # No preview in the message: the store layer sends the model the stored content.
            message = ChatMessage(
                role="tool", tool_call_id=call.id, name=call.name, content_ref=result.output_ref
            )
            book.add_message(message, size=result.output_bytes)
        else:
            self._tool_message(call, json.dumps(result.output, sort_keys=True))
        book.record("tool", agent.name, spec.name, step=step, detail=result.summary, started=started)
        data = (
            result.output
            if result.output_ref is None
            else {"ref": result.output_ref, "bytes": result.output_bytes}
        )
        book.transcript_add("tool_result", agent=agent.name, content=result.summary, data=data)
        book.update_details()

    def _register_compensation(
        self, spec: ToolSpec, arguments: dict[str, Any], step: int
    ) -> Compensation | None:
        if not spec.compensation:
            return None
        # Registered before the tool runs: if the tool's result is lost (worker
        # killed after the side effect), the compensation still undoes it by key.
        return self._book.saga.add(
            spec.name,
            spec.compensation,
            CompensationRequest(
                idempotency_key=self._book.key(step),
                correlation_id=self._state.correlation_id,
                tool=spec.name,
                arguments=arguments,
            ),
            step=step,
            summary=f"{spec.compensation} (compensation)",
        )

    def _tool_request(self, agent: AgentSpec, arguments: dict[str, Any], step: int) -> ToolRequest:
        return ToolRequest(
            arguments=arguments,
            idempotency_key=self._book.key(step),
            correlation_id=self._state.correlation_id,
            # A stored conversation's tools read the workflow id from their activity's info.
            **({} if self._stored is not None else {"workflow_id": workflow.info().workflow_id}),
            step=step,
            agent=agent.name,
            store_result=self._stored is not None,
        )

    async def _execute_tool(
        self, agent: AgentSpec, spec: ToolSpec, arguments: dict[str, Any], step: int
    ) -> ToolResult:
        return await workflow.execute_activity(
            spec.name,
            self._tool_request(agent, arguments, step),
            result_type=ToolResult,
            start_to_close_timeout=tool_timeout(spec),
            heartbeat_timeout=TOOL_HEARTBEAT,
            retry_policy=tool_retry(spec),
            summary=spec.name,
            # A cancelled run waits for a running tool to finish, so its side
            # effect is known before the compensations run.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )

    def _tool_failed(
        self, exc: ActivityError, spec: ToolSpec, call: ToolCall, comp: Compensation | None
    ) -> None:
        """Give refused arguments back to the model; any other failure halts the run."""
        cause = application_cause(exc)
        self._book.last_error = describe_failure(exc)
        if cause is not None and cause.type == errors.TOOL_INVALID_ARGUMENTS:
            if comp is not None:
                self._book.saga.discard(comp)
            self._tool_message(call, f"error: {cause.message}")
            self._count_tool_error(f"{spec.name} refused its arguments: {cause.message}")
            return
        if cause is not None and cause.type == errors.ACTIVITY_NOT_REGISTERED:
            if comp is not None:
                self._book.saga.discard(comp)  # no worker ran it: there is nothing to undo
            queue = workflow.info().task_queue
            raise Halt(f"tool {spec.name} is not registered on any worker of task queue {queue}") from None
        raise Halt(f"tool {spec.name} failed: {self._book.last_error}") from None

    def _tool_message(self, call: ToolCall, content: str) -> None:
        self._book.add_message(
            ChatMessage(role="tool", tool_call_id=call.id, name=call.name, content=content)
        )

    def _count_tool_error(self, problem: str) -> None:
        book, state = self._book, self._state
        state.tool_errors += 1
        book.last_error = problem
        book.record("tool_error", state.active_agent, "invalid tool call", detail=problem)
        book.transcript_add("tool_error", agent=state.active_agent, content=problem)
        if state.tool_errors > book.team.max_tool_errors:
            raise Halt(f"too many invalid tool calls ({state.tool_errors}); last: {problem}")


def _purpose(request: LLMRequest) -> str:
    """What a `call_llm` activity is for, as the UI's activity summary says it."""
    summarizing = request.conversation is not None and request.conversation.purpose == "summarize"
    return "summarize the conversation (context policy)" if summarizing else CALL_LLM_ACTIVITY
