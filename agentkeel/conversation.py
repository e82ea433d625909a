"""Contracts of a stored conversation: context policies, references sent to `call_llm`, reports back.

A run's conversation lives in the conversation store (`agentkeel.store`) as a chain of
content references. The workflow holds only the chain's head and the messages added
since the last LLM turn; `call_llm` receives a `ConversationRef`, and the worker's store
layer (`agentkeel.activities.conversation`) appends, reads, applies the agent's
`ContextPolicy` and hands the model the whole conversation. What it did comes back as a
`ContextReport`, which the workflow writes in the transcript when anything was left out.

Deterministic and free of I/O: passed through to the workflow sandbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from agentkeel.contracts import ChatMessage

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
"""Role, separators and names: what a chat format adds per message, roughly."""

ContextStrategy = Literal["keep_all", "truncate_oldest", "summarize"]


def estimate_tokens(message: ChatMessage, size: int | None = None) -> int:
    """Estimated tokens of one message as sent: its content, its tool calls, the format's overhead.

    The same estimate everywhere (the workflow's summarize decision, the worker's context policies),
    at four characters a token whatever the provider, so a policy behaves the same on every model.

    Args:
        message: The message.
        size: Characters of its stored content, when `message` holds a reference instead.
    """
    chars = size if size is not None else len(message.content or "")
    chars += sum(len(c.name) + len(c.arguments) + len(c.id) for c in message.tool_calls)
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContextPolicy(_Model):
    """What an agent's model is sent of the conversation, which is always stored whole.

    Attributes:
        max_tokens: Budget of the request's messages, estimated at 4 characters a token.
            None: no budget (every strategy sends everything).
        strategy: `keep_all` sends every message whatever its size; `truncate_oldest` leaves out
            the oldest messages after the goal until the rest fits, with a marker saying how many;
            `summarize` replaces the oldest messages by a summary an LLM writes (stored, and
            recorded in the transcript), and falls back to truncating if the rest still does not fit.
    """

    max_tokens: int | None = Field(default=None, gt=0)
    strategy: ContextStrategy = "keep_all"


class SummaryRef(_Model):
    """A stored summary of the first `covers` messages of a conversation.

    Attributes:
        ref: The summary text's content reference.
        covers: How many messages, from the conversation's first, the summary stands for
            (the goal, message 0, is always sent as it is).
        preview: The summary's first characters, for the transcript and the UI.
    """

    ref: str
    covers: int = Field(ge=0)
    preview: str = ""


class ConversationRef(_Model):
    """The conversation of one `call_llm` request, by reference.

    The request's `messages` are only those the workflow added since `head` was stored.

    Attributes:
        head: The stored conversation so far (a chain head), None before the first turn.
        system: The agent's instructions, sent inline until their stored `prompt_ref` is known.
        prompt_ref: The agent's stored instructions and tools (`tools` of the request is then empty).
        policy: The agent's context policy.
        summary: The summary in force for this agent, if any.
        purpose: `turn` asks the model for the agent's next step; `summarize` asks it to
            summarize the conversation's older part under `policy` (no tools offered).
    """

    head: str | None = None
    system: str | None = None
    prompt_ref: str | None = None
    policy: ContextPolicy = Field(default_factory=ContextPolicy)
    summary: SummaryRef | None = None
    purpose: Literal["turn", "summarize"] = "turn"


class ContextReport(_Model):
    """What the store layer did with a stored conversation for one `call_llm` request.

    Attributes:
        messages: Messages in the whole conversation, after this turn's answer was appended.
        sent: Messages the model was sent (the system prompt not counted).
        left_out: Messages of the conversation the model was not sent (covered by the summary,
            or truncated).
        truncated: Of `left_out`, those truncated (neither sent nor summarized).
        tokens: Estimated tokens of what was sent.
        next_tokens: Estimated tokens the next request would send before any new message
            (what was sent plus this turn's answer), for the workflow's summarize decision.
        summary: The summary written by a `summarize` request.
    """

    messages: int = 0
    sent: int = 0
    left_out: int = 0
    truncated: int = 0
    tokens: int = 0
    next_tokens: int = 0
    summary: SummaryRef | None = None
