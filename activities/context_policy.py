"""Context policies: which messages of a stored conversation an agent's model is sent.

Pure functions over `ChatMessage` lists (no store, no I/O), used by the worker's store
layer (`agentkeel.activities.conversation`). Token counts are estimates
(`agentkeel.conversation.estimate_tokens`, four characters a token whatever the
provider); `max_tokens` should leave room for the model's own tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkeel.contracts import ChatMessage
from agentkeel.conversation import ContextPolicy, SummaryRef, estimate_tokens

SUMMARY_TAIL_SHARE = 0.5
"""A summary covers the oldest messages; the newest, up to this share of `max_tokens`, stay whole."""
SUMMARIZE_INSTRUCTIONS = (
    "You summarize the earlier part of a conversation between a user and AI agents that use tools, "
    "so that an agent can continue the work without it. Keep every fact, decision, identifier, "
    "amount, date and tool result the work may still need; drop chit-chat. Answer with the "
    "summary only."
)
SUMMARY_MESSAGE_CHARS = 4000
"""Each message is cut to this many characters in the text a summary is written from."""


def total_tokens(messages: list[ChatMessage]) -> int:
    """Estimated tokens of `messages`."""
    return sum(estimate_tokens(m) for m in messages)


@dataclass(frozen=True)
class Selection:
    """What a policy chose to send.

    Attributes:
        messages: The messages to send after the system prompt.
        left_out: Messages of the conversation not sent as they are (summarized or truncated).
        truncated: Of those, the ones neither sent nor summarized.
        tokens: Estimated tokens of `messages`.
    """

    messages: list[ChatMessage]
    left_out: int
    truncated: int
    tokens: int


def _marker(count: int) -> ChatMessage:
    return ChatMessage(
        role="user",
        content=f"[{count} earlier messages of this conversation were left out by the context policy; "
        "the work goes on.]",
    )


def summary_message(summary: SummaryRef, text: str) -> ChatMessage:
    """The message that stands for the first `summary.covers` messages (after the goal)."""
    return ChatMessage(
        role="user",
        content=f"[Summary of messages 2-{summary.covers} of this conversation, written for the "
        f"context policy]\n{text}",
    )


def _fit_tail(messages: list[ChatMessage], budget: int) -> int:
    """Index where the longest tail of `messages` within `budget` tokens starts.

    The tail never starts with a tool result (its tool call would be cut off, which
    providers refuse), and keeps at least the last message.
    """
    start, used = len(messages), 0
    while start > 0 and used + estimate_tokens(messages[start - 1]) <= budget:
        start -= 1
        used += estimate_tokens(messages[start])
    start = min(start, len(messages) - 1) if messages else 0
    while start < len(messages) - 1 and messages[start].role == "tool":
        start += 1
    return start


def truncate_oldest(messages: list[ChatMessage], max_tokens: int, *, head: int = 1) -> Selection:
    """The first `head` messages, a marker, and the newest messages that fit in `max_tokens`.

    Args:
        messages: The messages that would be sent.
        max_tokens: Budget of what is sent.
        head: Messages always kept at the front (the goal, or the goal and a summary).
    """
    if total_tokens(messages) <= max_tokens or len(messages) <= head + 1:
        return Selection(list(messages), 0, 0, total_tokens(messages))
    fixed = messages[:head]
    budget = max_tokens - total_tokens(fixed) - estimate_tokens(_marker(len(messages)))
    rest = messages[head:]
    start = _fit_tail(rest, max(budget, 0))
    if start == 0:
        return Selection(list(messages), 0, 0, total_tokens(messages))
    sent = [*fixed, _marker(start), *rest[start:]]
    return Selection(sent, start, start, total_tokens(sent))


def select(
    messages: list[ChatMessage],
    policy: ContextPolicy,
    summary: SummaryRef | None = None,
    summary_text: str = "",
) -> Selection:
    """The messages a policy sends of a conversation (the system prompt aside).

    Args:
        messages: The whole conversation, goal first.
        policy: The agent's policy.
        summary: The summary in force (`summarize` only).
        summary_text: Its text.
    """
    if policy.strategy == "keep_all" or policy.max_tokens is None:
        return Selection(list(messages), 0, 0, total_tokens(messages))
    if policy.strategy == "summarize" and summary is not None and 1 < summary.covers <= len(messages):
        shown = [messages[0], summary_message(summary, summary_text), *messages[summary.covers :]]
        fitted = truncate_oldest(shown, policy.max_tokens, head=2)
        summarized = summary.covers - 1
        return Selection(fitted.messages, summarized + fitted.left_out, fitted.truncated, fitted.tokens)
    return truncate_oldest(messages, policy.max_tokens)


def summary_span(messages: list[ChatMessage], policy: ContextPolicy, previous: SummaryRef | None) -> int:
    """How many messages (from the first) a new summary should cover; 0 when there is nothing to add.

    The newest messages, up to `SUMMARY_TAIL_SHARE` of the budget, stay out of the summary so the
    agent keeps its latest steps word for word.
    """
    if policy.max_tokens is None or len(messages) < 3:
        return 0
    tail_budget = int(policy.max_tokens * SUMMARY_TAIL_SHARE)
    covers = 1 + _fit_tail(messages[1:], tail_budget)
    done = previous.covers if previous is not None else 1
    return covers if covers > done else 0


def summarize_prompt(
    messages: list[ChatMessage], covers: int, previous: SummaryRef | None, previous_text: str
) -> list[ChatMessage]:
    """The messages of a summarize request: the instructions, and the text to summarize."""
    start = previous.covers if previous is not None else 1
    lines: list[str] = [f"Goal: {messages[0].content or ''}"]
    if previous is not None:
        lines.append(f"Summary so far (messages 2-{previous.covers}):\n{previous_text}")
    lines.append(f"Messages {start + 1}-{covers}:")
    for message in messages[start:covers]:
        who = message.role + (f" {message.name}" if message.name else "")
        text = (message.content or "")[:SUMMARY_MESSAGE_CHARS]
        calls = "; ".join(f"calls {c.name}({c.arguments})" for c in message.tool_calls)
        lines.append(f"- {who}: {text}" + (f" [{calls}]" if calls else ""))
    return [
        ChatMessage(role="system", content=SUMMARIZE_INSTRUCTIONS),
        ChatMessage(role="user", content="\n".join(lines)),
    ]
