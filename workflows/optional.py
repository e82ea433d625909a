"""Workflow helpers that only some runs use, imported by those runs alone.

Every run's sandbox re-imports the workflow modules it imports, and the MCP helpers bring the MCP
SDK into the worker: a run whose team declares no MCP server should pay for neither. The import
happens on first use, inside the sandbox, marked as intended (the SDK warns about imports after a
workflow's first load otherwise).
"""

from __future__ import annotations

from types import ModuleType

from temporalio import workflow


def mcp_tools() -> ModuleType:
    """`agentkeel.workflows.mcp_tools`, imported on first use by a run with MCP tools."""
    with workflow.unsafe.sandbox_import_notification_policy(workflow.SandboxImportNotificationPolicy.SILENT):
        from agentkeel.workflows import mcp_tools as module
    return module
