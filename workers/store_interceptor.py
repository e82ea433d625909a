"""The worker interceptor that connects activities to the conversation store.

Runs that store their conversation send references where they used to send whole
conversations. This interceptor, installed on every worker by `AgentkeelPlugin` with
the worker's store, turns them back into whole messages around the activities that need
them, so `call_llm`, tools, compensations and their test doubles keep their plain inputs:

* `call_llm` with a `ConversationRef`: the `ConversationLayer` appends the new messages,
  applies the agent's context policy, calls the activity with the whole conversation, and
  stores the answer (a `summarize` request summarizes instead);
* a tool called with `store_result`: a large output is stored, history gets a reference
  and a preview;
* a compensation whose original result was stored gets the result back;
* an MCP `call-tool` of such a run: a large result is stored the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from agentkeel.activities.conversation import ConversationLayer
from agentkeel.contracts import CompensationRequest, LLMRequest, ToolRequest, ToolResult
from agentkeel.mcp.contracts import STORE_RESULT_META


class _StoreActivityInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, layer: ConversationLayer) -> None:
        super().__init__(next)
        self._layer = layer

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        arg = input.args[0] if len(input.args) == 1 else None
        owner = activity.info().workflow_id or ""
        if isinstance(arg, LLMRequest) and arg.conversation is not None:

            async def call_model(plain: LLMRequest) -> Any:
                return await self.next.execute_activity(_with_arg(input, plain))

            return await self._layer.call(arg, owner, call_model)
        if isinstance(arg, CompensationRequest) and arg.result_ref is not None:
            input = _with_arg(input, await self._layer.resolve_compensation(arg))
            return await self.next.execute_activity(input)
        store_mcp = _takes_store_flag(arg)
        result = await self.next.execute_activity(input)
        if isinstance(arg, ToolRequest) and arg.store_result and isinstance(result, ToolResult):
            return await self._layer.store_result(result, owner)
        if store_mcp and isinstance(result, dict):
            return await self._layer.store_mcp_result(result, owner)
        return result


def _takes_store_flag(arg: Any) -> bool:
    """Whether `arg` is a temporalio-mcp `call-tool` request of a run that stores its conversation.

    The flag is taken out of the request's `_meta` here, so the MCP server never sees it.
    """
    info = activity.info()
    if not (info.activity_type.startswith("temporalio.mcp.") and info.activity_type.endswith(".call-tool")):
        return False
    meta = arg.get("meta") if isinstance(arg, dict) else None
    return isinstance(meta, dict) and bool(meta.pop(STORE_RESULT_META, False))


def _with_arg(input: ExecuteActivityInput, arg: Any) -> ExecuteActivityInput:
    return dataclasses.replace(input, args=[arg])


class StoreInterceptor(Interceptor):
    """Resolves and stores conversation content around the activities of one worker.

    Args:
        layer: The worker's conversation layer (over its content store).
    """

    def __init__(self, layer: ConversationLayer) -> None:
        self.layer = layer

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap the activity inbound chain (called by the worker)."""
        return _StoreActivityInbound(next, self.layer)
