"""The workflow's side of a stored conversation: a head reference, what came since, and the policy.

Runs since the `conversation-store` patch never hold their conversation: `call_llm` gets
the chain's head and the messages added since (tool results, handoff notes), and returns
the new head, so what each turn adds to history does not depend on the conversation's
length, and continue-as-new carries the whole conversation by reference. When an
agent's context policy is `summarize` and its next request would go over its budget,
a summarize turn (a `call_llm` activity of its own) writes a stored summary first.
Whatever a policy leaves out is written in the transcript.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentkeel.contracts import (
        AgentSpec,
        ConversationState,
        LLMRequest,
        LLMResult,
    )
    from agentkeel.conversation import ContextPolicy, ConversationRef

# The workflow's own helper modules run inside the sandbox, like the workflow itself.
from agentkeel.workflows.runbook import RunBook


class StoredConversation:
    """The conversation of a run that stores it.

    Args:
        book: The run's state and records; `book.state.conversation` is set.
    """

    def __init__(self, book: RunBook) -> None:
        self._book = book

    @property
    def state(self) -> ConversationState:
        """The conversation's head, pending messages and per-agent context state."""
        conversation = self._book.state.conversation
        assert conversation is not None, "a stored conversation is set when the run starts"
        return conversation

    def request(self, agent: AgentSpec, plain: LLMRequest) -> LLMRequest:
        """`plain` (the request with the whole conversation) as sent: by reference."""
        conv = self.state
        prompt_ref = conv.prompts.get(agent.name)
        # Only what is known is set: unset fields are not written to history.
        ref: dict[str, object] = {"head": conv.head}
        if prompt_ref:
            ref["prompt_ref"] = prompt_ref
        else:
            ref["system"] = agent.instructions
        if agent.context is not None:
            ref["policy"] = agent.context
        if agent.name in conv.summaries:
            ref["summary"] = conv.summaries[agent.name]
        return plain.model_copy(
            update={
                "messages": list(conv.pending),
                "tools": [] if prompt_ref else plain.tools,
                "conversation": ConversationRef.model_validate(ref),
            }
        )

    def _advance(self, result: LLMResult) -> ConversationState:
        """The conversation after any `call_llm` result: its new head, the pending messages stored."""
        conv = self.state
        if result.head is not None:
            conv.head = result.head
        conv.pending, conv.pending_tokens = [], 0
        if result.context is not None:
            conv.messages = result.context.messages
        return conv

    def absorb(self, agent: AgentSpec, result: LLMResult) -> None:
        """Take in a turn's result: the new head, and what the policy sent and left out."""
        conv = self._advance(result)
        if result.prompt_ref:
            conv.prompts[agent.name] = result.prompt_ref
        context = result.context
        if context is None:
            return
        conv.next_tokens[agent.name] = context.next_tokens
        if context.left_out != conv.left_out.get(agent.name, 0):
            conv.left_out[agent.name] = context.left_out
            self._book.note(self._left_out_note(agent, result), agent=agent.name)

    def _left_out_note(self, agent: AgentSpec, result: LLMResult) -> str:
        context = result.context
        assert context is not None
        if context.left_out == 0:
            return (
                f"context policy: {agent.name} was sent the whole conversation ({context.messages} messages)"
            )
        policy = agent.context or ContextPolicy()
        summarized = context.left_out - context.truncated
        parts = []
        if summarized:
            parts.append(f"{summarized} summarized")
        if context.truncated:
            parts.append(f"{context.truncated} oldest left out")
        so_far = context.messages - 1  # the answer just stored was not sent
        return (
            f"context policy {policy.strategy} (max {policy.max_tokens} tokens): {agent.name} was sent "
            f"{so_far - context.left_out} of the {so_far} messages so far ({', '.join(parts)}); "
            "the whole conversation stays stored"
        )

    def needs_summary(self, agent: AgentSpec) -> bool:
        """Whether the agent's next request would go over its `summarize` budget."""
        policy = agent.context
        if policy is None or policy.strategy != "summarize" or policy.max_tokens is None:
            return False
        conv = self.state
        if conv.head is None or conv.messages <= conv.summarized_at.get(agent.name, 0) + 2:
            return False
        return conv.next_tokens.get(agent.name, 0) + conv.pending_tokens > policy.max_tokens

    def summarize_request(self, agent: AgentSpec, plain: LLMRequest) -> LLMRequest:
        """The request of a summarize turn for `agent` (it stores the pending messages too)."""
        request = self.request(agent, plain)
        assert request.conversation is not None
        return request.model_copy(
            update={
                "tools": [],
                "conversation": request.conversation.model_copy(update={"purpose": "summarize"}),
            }
        )

    def absorb_summary(self, agent: AgentSpec, result: LLMResult) -> None:
        """Take in a summarize turn's result: the summary now in force for the agent."""
        conv = self._advance(result)
        conv.summarized_at[agent.name] = conv.messages
        summary = result.context.summary if result.context else None
        if summary is None or summary == conv.summaries.get(agent.name):
            return  # nothing more to summarize: the turn sends what fits, truncating if need be
        conv.summaries[agent.name] = summary
        self._book.transcript_add(
            "note",
            agent=agent.name,
            content=f"context policy summarize: messages 2-{summary.covers} summarized for {agent.name}: "
            f"{summary.preview}",
            data={"summary_ref": summary.ref, "covers": summary.covers},
        )
