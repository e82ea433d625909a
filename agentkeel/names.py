"""Names shared by workers, starters and tests: task queues, workflow, message and activity names.

The one wire contract: the workflow's decorators, its activity calls, the client and
the tests all use these constants. Workflow, update, signal, query and activity names
are part of recorded histories and of what users type into the stock `temporal` CLI:
never rename one.
"""

from __future__ import annotations

TASK_QUEUE = "agentkeel"
"""The default task queue every `keel worker` polls."""

NAMESPACE_DEFAULT = "default"

AGENT_SAGA_WORKFLOW = "AgentSagaWorkflow"
CALL_LLM_ACTIVITY = "call_llm"
RESOLVE_TEAM_ACTIVITY = "resolve_team"

REVIEW_UPDATE = "review"
"""Update of `AgentSagaWorkflow`: approve, reject or edit the pending review; returns what the run did."""
APPROVE_SIGNAL = "approve"
"""Signal of `AgentSagaWorkflow` (stock `temporal` CLI friendly): approve the pending review."""
REJECT_SIGNAL = "reject"
"""Signal of `AgentSagaWorkflow`: reject the pending review (the saga compensates)."""
STATUS_QUERY = "status"
"""Query of `AgentSagaWorkflow`: status, active agent, pending review, spend, compensations, errors."""
TRANSCRIPT_QUERY = "transcript"
CONVERSATION_QUERY = "conversation"
"""Query of `AgentSagaWorkflow`: messages, tool calls, handoffs and decisions, in order."""

WORKFLOW_ID_PREFIX = "keel"
"""Workflow ids are `<prefix>-<team>-<unique part>`: a business prefix plus a unique part."""

HANDOFF_TOOL_PREFIX = "transfer_to_"
"""Each allowed handoff target of an agent is offered to the model as the tool `transfer_to_<agent>`."""

CORRELATION_HEADER = "X-Correlation-ID"
IDEMPOTENCY_HEADER = "Idempotency-Key"
AGENT_HEADER = "X-Keel-Agent"
"""Tells the offline provider which agent is asking, so scenario rules can match on it."""

# Default ports of the local stack: one definition for the servers, the settings and the links.
FRONTEND_PORT = 7233
"""Temporal's gRPC frontend (the dev server's and every SDK's default)."""
UI_PORT = 8233
"""Temporal's Web UI on the dev server."""
OFFLINE_LLM_PORT = 8900
"""The offline OpenAI-compatible provider's API (`keel llm`)."""
CODEC_PORT = 8888
"""The codec server (`keel codec`) that decrypts payloads for the UI and the `temporal` CLI."""


def activity_name(fn: object, default: str = "activity") -> str:
    """The name an `@activity.defn` callable is registered under (its `__name__` when undecorated)."""
    defn = getattr(fn, "__temporal_activity_definition", None)
    return str(getattr(defn, "name", None) or getattr(fn, "__name__", default))


SUMMARIZE_AGENT_SUFFIX = ":summarize"
"""Appended to the agent's name (`X-Keel-Agent`) in a context policy's summarize request, so
providers and test doubles can tell it from one of the agent's turns."""
