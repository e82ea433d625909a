"""Pure helpers for the agent loop: handoff tools, ping-pong detection, conversation compaction.

Deterministic and free of I/O, so the workflow sandbox can use them.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agentkeel.contracts import AgentSpec, ChatMessage, ToolSchema
    from agentkeel.names import HANDOFF_TOOL_PREFIX

PING_PONG_VISITS = 4
"""A→B→A→B with no tool call in between is a ping-pong: the agents are passing the work around."""
COMPACT_KEEP = 40
"""Messages kept verbatim (besides the goal) when a long conversation continues as new."""


def handoff_tool(target: AgentSpec) -> ToolSchema:
    """The tool an agent calls to transfer the work to `target`."""
    summary = target.instructions.strip().splitlines()[0][:200] if target.instructions.strip() else ""
    return ToolSchema(
        name=f"{HANDOFF_TOOL_PREFIX}{target.name}",
        description=f"Hand the work over to the agent '{target.name}'. {summary}".strip(),
        parameters={
            "type": "object",
            "properties": {
                "note": {"type": "string", "description": "What the next agent should do, and why."}
            },
            "required": ["note"],
        },
    )


def is_ping_pong(visits: list[str]) -> bool:
    """Whether the agents visited since the last real step bounce between the same two agents.

    Args:
        visits: Active agents in order since the last tool call, the current one first.
    """
    tail = visits[-PING_PONG_VISITS:]
    return (
        len(tail) == PING_PONG_VISITS
        and len(set(tail)) == 2
        and all(a != b for a, b in zip(tail, tail[1:], strict=False))
    )


def compact_messages(messages: list[ChatMessage], keep: int = COMPACT_KEEP) -> list[ChatMessage]:
    """Shorten a conversation for continue-as-new: the goal, a marker, and the last `keep` messages.

    The kept tail never starts with a tool result, whose assistant tool call would be cut off
    (providers refuse such a conversation).
    """
    if len(messages) <= keep + 1:
        return list(messages)
    head, tail = messages[0], messages[-keep:]
    while tail and tail[0].role == "tool":
        tail = tail[1:]
    dropped = len(messages) - 1 - len(tail)
    marker = ChatMessage(
        role="user", content=f"[{dropped} earlier messages were compacted; the work goes on.]"
    )
    return [head, marker, *tail]
