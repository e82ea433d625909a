"""agentkeel: durable workflows for LLM agents on Temporal.

The public API is importable from here::

    from agentkeel import Keel, TeamSpec, ToolRequest, ToolResult, CompensationRequest

Names are resolved on first use (PEP 562), so importing `agentkeel.contracts`
from a workflow's sandbox does not drag in the client or the worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # starting and steering runs
    "Keel": "agentkeel.starters.client",
    "RunHandle": "agentkeel.starters.client",
    "RunSummary": "agentkeel.starters.client",
    "saga_result": "agentkeel.outcomes",
    # your own worker, client and apps
    "AgentkeelPlugin": "agentkeel.plugin",
    "ActivitySet": "agentkeel.app",
    "App": "agentkeel.app",
    "Agent": "agentkeel.agents",
    "Team": "agentkeel.agents",
    "Tool": "agentkeel.tools",
    "ToolContext": "agentkeel.tools",
    "tool": "agentkeel.tools",
    "tool_context": "agentkeel.tools",
    # sagas in your own workflows
    "Saga": "agentkeel.workflows.saga",
    "SagaOutcome": "agentkeel.workflows.saga",
    # the contracts tools and teams are written against
    "AgentSpec": "agentkeel.contracts",
    "Budget": "agentkeel.contracts",
    "ChatMessage": "agentkeel.contracts",
    "ContextPolicy": "agentkeel.conversation",
    "CompensationRequest": "agentkeel.contracts",
    "ReviewOutcome": "agentkeel.contracts",
    "ReviewPolicy": "agentkeel.contracts",
    "ReviewRequest": "agentkeel.contracts",
    "SagaRequest": "agentkeel.contracts",
    "SagaResult": "agentkeel.contracts",
    "SagaStatusView": "agentkeel.contracts",
    "TeamSpec": "agentkeel.contracts",
    "ToolRequest": "agentkeel.contracts",
    "ToolResult": "agentkeel.contracts",
    "ToolSpec": "agentkeel.contracts",
    "TranscriptEntry": "agentkeel.contracts",
    "SagaStatus": "agentkeel.search_attributes",
    # errors a user can act on
    "KeelError": "agentkeel.starters.client",
    "DecisionRefused": "agentkeel.starters.client",
    "InvalidInput": "agentkeel.starters.client",
    "ReviewRejected": "agentkeel.starters.client",
    "RunAlreadyExists": "agentkeel.starters.client",
    "RunNotFound": "agentkeel.starters.client",
    "RunStuck": "agentkeel.starters.client",
    "TeamNotFound": "agentkeel.starters.client",
    "WorkerUnavailable": "agentkeel.starters.client",
}

__all__ = [
    "Agent",
    "Team",
    "Tool",
    "ToolContext",
    "tool",
    "tool_context",
    "ActivitySet",
    "AgentkeelPlugin",
    "App",
    "AgentSpec",
    "Budget",
    "ChatMessage",
    "CompensationRequest",
    "ContextPolicy",
    "DecisionRefused",
    "InvalidInput",
    "Keel",
    "KeelError",
    "ReviewOutcome",
    "ReviewPolicy",
    "ReviewRejected",
    "ReviewRequest",
    "RunAlreadyExists",
    "RunHandle",
    "RunNotFound",
    "RunStuck",
    "RunSummary",
    "Saga",
    "SagaOutcome",
    "SagaRequest",
    "SagaResult",
    "SagaStatus",
    "SagaStatusView",
    "TeamNotFound",
    "TeamSpec",
    "ToolRequest",
    "ToolResult",
    "ToolSpec",
    "TranscriptEntry",
    "WorkerUnavailable",
    "saga_result",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentkeel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from agentkeel.agents import Agent, Team
    from agentkeel.app import ActivitySet, App
    from agentkeel.contracts import (
        AgentSpec,
        Budget,
        CompensationRequest,
        ReviewOutcome,
        ReviewPolicy,
        ReviewRequest,
        SagaRequest,
        SagaResult,
        SagaStatusView,
        TeamSpec,
        ToolRequest,
        ToolResult,
        ToolSpec,
        TranscriptEntry,
    )
    from agentkeel.outcomes import saga_result
    from agentkeel.plugin import AgentkeelPlugin
    from agentkeel.search_attributes import SagaStatus
    from agentkeel.starters.client import (
        DecisionRefused,
        InvalidInput,
        Keel,
        KeelError,
        ReviewRejected,
        RunAlreadyExists,
        RunHandle,
        RunNotFound,
        RunStuck,
        RunSummary,
        TeamNotFound,
        WorkerUnavailable,
    )
    from agentkeel.tools import Tool, ToolContext, tool, tool_context
    from agentkeel.workflows.saga import Saga, SagaOutcome
