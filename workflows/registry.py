"""Every workflow class the platform's worker registers."""

from __future__ import annotations

from agentkeel.workflows.agent_saga import AgentSagaWorkflow

ALL_WORKFLOWS: list[type] = [AgentSagaWorkflow]
