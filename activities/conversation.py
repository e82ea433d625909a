"""The worker's side of a stored conversation: what turns references into whole messages and back.

A run that stores its conversation sends `call_llm` a `ConversationRef` and only the
messages added since its head. `ConversationLayer` (one per worker, around the
configured `ContentStore`) appends those to the stored chain, reads the whole
conversation, applies the agent's context policy, and builds the plain `LLMRequest`
the model activity has always received; after the answer it stores the assistant
message and returns the new head with a short result. Large tool results are stored
the same way, and compensations get them back. The worker interceptor
(`agentkeel.workers.store_interceptor`) calls it, so the provider code and every test
double of `call_llm` see whole conversations, as before.

Everything stored is owned by the run's workflow id, for `keel store gc`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from temporalio.exceptions import ApplicationError

from agentkeel import errors
from agentkeel.activities import context_policy
from agentkeel.contracts import (
    ChatMessage,
    CompensationRequest,
    LLMRequest,
    LLMResult,
    ToolResult,
    ToolSchema,
)
from agentkeel.conversation import ContextReport, ConversationRef, SummaryRef, estimate_tokens
from agentkeel.mcp.contracts import STORED_BYTES_META, STORED_OUTPUT_META
from agentkeel.names import SUMMARIZE_AGENT_SUFFIX
from agentkeel.store import ContentStore, ConversationChain, StoreError, canonical_json, ref_of
from agentkeel.store.base import CorruptContentError, MissingContentError, StoreKeyError

INLINE_RESULT_BYTES = 512
"""A tool result up to this size travels in history; a larger one is stored, with a preview."""
PREVIEW_CHARS = 80
"""Characters of a stored text kept in history (the transcript, the UI without the codec server)."""
RECENT_CONVERSATIONS = 256
"""Conversations (by head) whose resolved messages a worker keeps, so a turn reads only what is new."""
RECENT_CHARS = 32 * 1024 * 1024
"""Bound on the characters those conversations hold (counted per conversation, shared or not)."""

CallModel = Callable[[LLMRequest], Awaitable[LLMResult]]


def preview(text: str, chars: int = PREVIEW_CHARS) -> str:
    """The first `chars` characters of `text`, with an ellipsis when cut."""
    return text if len(text) <= chars else text[: chars - 1] + "…"


def message_dict(message: ChatMessage) -> dict[str, Any]:
    """A message's stored form: its JSON without empty fields (so one message has one reference)."""
    return message.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def _store_failure(exc: StoreError) -> ApplicationError:
    # Missing or altered content does not come back by retrying; an unreachable database does.
    permanent = isinstance(exc, MissingContentError | CorruptContentError | StoreKeyError)
    return ApplicationError(
        f"conversation store: {exc}", type=errors.CONVERSATION_STORE, non_retryable=permanent
    )


def _report(**fields: int) -> ContextReport:
    # Only the figures that are not zero are set, so history carries only those.
    return ContextReport(**{name: value for name, value in fields.items() if value})


@dataclass
class _Conversation:
    head: str | None
    messages: list[ChatMessage]


class ConversationLayer:
    """Stored conversations for one worker.

    Args:
        store: The worker's content store (usually behind a `CachedStore`).
    """

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self._recent: OrderedDict[str, tuple[list[ChatMessage], int]] = OrderedDict()
        self._recent_chars = 0

    # ------------------------------------------------------------------ LLM turns

    async def call(self, request: LLMRequest, owner: str, call_model: CallModel) -> LLMResult:
        """Run one `call_llm` request whose conversation is stored.

        Args:
            request: The request as the workflow sent it (`conversation` set).
            owner: The run's workflow id (what stored content belongs to).
            call_model: The model activity itself (or its test double), given a whole conversation.

        Raises:
            ApplicationError: `ConversationStoreError` when the store fails (non-retryable when
                content is missing or altered), or whatever `call_model` raises.
        """
        ref = request.conversation
        assert ref is not None
        try:
            conversation = await self._append(ref.head, request.messages, owner)
            if ref.purpose == "summarize":
                return await self._summarize(request, ref, conversation, owner, call_model)
            system, tools, prompt_ref = await self._prompt(request, ref, owner)
            summary_text = await self._text(ref.summary.ref) if ref.summary else ""
        except StoreError as exc:
            raise _store_failure(exc) from None
        chosen = context_policy.select(conversation.messages, ref.policy, ref.summary, summary_text)
        plain = request.model_copy(
            update={
                "messages": [ChatMessage(role="system", content=system), *chosen.messages],
                "tools": tools,
                "conversation": None,
            }
        )
        result = await call_model(plain)
        answer = ChatMessage(
            role="assistant", name=request.agent, content=result.content, tool_calls=result.tool_calls
        )
        try:
            answered = await self._append(conversation.head, [answer], owner, known=conversation.messages)
        except StoreError as exc:
            raise _store_failure(exc) from None
        update: dict[str, Any] = {
            "head": answered.head,
            "cost_usd": round(result.cost_usd, 9),
            "context": _report(
                messages=len(answered.messages),
                sent=len(chosen.messages),
                left_out=chosen.left_out,
                truncated=chosen.truncated,
                tokens=chosen.tokens,
                next_tokens=chosen.tokens + estimate_tokens(answer),
            ),
        }
        if result.tool_calls and result.content:
            update["content"] = preview(result.content)  # stored whole; the workflow decides on the calls
        if ref.prompt_ref is None:
            update["prompt_ref"] = prompt_ref  # the workflow sends this reference from now on
        # Rebuilt from what is set and not empty, so history carries no `null`s.
        return LLMResult.model_validate(
            {**result.model_dump(exclude_unset=True, exclude_none=True), **update}
        )

    async def _summarize(
        self,
        request: LLMRequest,
        ref: ConversationRef,
        conversation: _Conversation,
        owner: str,
        call_model: CallModel,
    ) -> LLMResult:
        messages = conversation.messages
        covers = context_policy.summary_span(messages, ref.policy, ref.summary)
        report = _report(messages=len(messages))
        if covers == 0:
            return LLMResult(finish_reason="nothing_to_summarize", head=conversation.head, context=report)
        try:
            previous = await self._text(ref.summary.ref) if ref.summary else ""
        except StoreError as exc:
            raise _store_failure(exc) from None
        plain = request.model_copy(
            update={
                "messages": context_policy.summarize_prompt(messages, covers, ref.summary, previous),
                "tools": [],
                "response_schema": None,
                "conversation": None,
                "agent": f"{request.agent or 'agent'}{SUMMARIZE_AGENT_SUFFIX}",
            }
        )
        result = await call_model(plain)
        text = result.content or ""
        try:
            summary_ref = await self.store.put(text.encode("utf-8"), owner=owner)
        except StoreError as exc:
            raise _store_failure(exc) from None
        summary = SummaryRef(ref=summary_ref, covers=covers, preview=preview(text))
        return result.model_copy(
            update={
                "content": preview(text),
                "tool_calls": [],
                "head": conversation.head,
                "context": _report(messages=len(messages)).model_copy(update={"summary": summary}),
            }
        )

    async def _prompt(
        self, request: LLMRequest, ref: ConversationRef, owner: str
    ) -> tuple[str, list[ToolSchema], str]:
        """The agent's instructions and tools, stored once and read by reference after."""
        if ref.prompt_ref is not None:
            stored = await self.store.get_json(ref.prompt_ref)
            return (
                str(stored["system"]),
                [ToolSchema.model_validate(t) for t in stored["tools"]],
                ref.prompt_ref,
            )
        system = ref.system or ""
        tools = [t.model_dump(mode="json") for t in request.tools]
        prompt_ref = await self.store.put_json({"system": system, "tools": tools}, owner=owner)
        return system, list(request.tools), prompt_ref

    async def _text(self, ref: str) -> str:
        return (await self.store.get(ref)).decode("utf-8")

    async def _append(
        self,
        head: str | None,
        new: list[ChatMessage],
        owner: str,
        *,
        known: list[ChatMessage] | None = None,
    ) -> _Conversation:
        """Store `new` after `head`; return the new head and the whole conversation, resolved."""
        before = known if known is not None else await self.read(head)
        if not new:
            return _Conversation(head, before)
        items = [canonical_json(message_dict(m)) for m in new]
        node = ConversationChain.node_bytes(head, [ref_of(item) for item in items])
        # The messages and their chain node in one write: one transaction per append, not two.
        *_, new_head = await self.store.put_many([*items, node], owner=owner)
        messages = [*before, *(await self.resolve(new))]
        self._remember(new_head, messages)
        return _Conversation(new_head, messages)

    async def read(self, head: str | None) -> list[ChatMessage]:
        """The whole conversation ending at `head`, stored tool results resolved to their content.

        Raises:
            StoreError: content is missing, altered, or encrypted with a key this worker lacks.
        """
        if head is None:
            return []
        cached = self._recent.get(head)
        if cached is not None:
            self._recent.move_to_end(head)
            return cached[0]
        stored = [ChatMessage.model_validate(m) for m in await ConversationChain.read(self.store, head)]
        messages = await self.resolve(stored)
        self._remember(head, messages)
        return messages

    async def resolve(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        """`messages` with each stored content (`content_ref`) read back into `content`."""
        refs = [m.content_ref for m in messages if m.content_ref]
        if not refs:
            return list(messages)
        texts = dict(zip(refs, await self.store.get_many(refs), strict=True))
        return [
            m.model_copy(update={"content": texts[m.content_ref].decode("utf-8"), "content_ref": None})
            if m.content_ref
            else m
            for m in messages
        ]

    def _remember(self, head: str, messages: list[ChatMessage]) -> None:
        if head in self._recent:
            self._recent.move_to_end(head)
            return
        chars = sum(len(m.content or "") for m in messages)
        self._recent[head] = (messages, chars)
        self._recent_chars += chars
        while self._recent and (
            len(self._recent) > RECENT_CONVERSATIONS or self._recent_chars > RECENT_CHARS
        ):
            _, (_, evicted) = self._recent.popitem(last=False)
            self._recent_chars -= evicted

    # ------------------------------------------------------------------ tool results

    async def store_result(self, result: ToolResult, owner: str) -> ToolResult:
        """A tool result as history carries it: large outputs stored, with a preview.

        The stored bytes are the JSON text the model is sent as the tool message.
        """
        if result.output_ref is not None or not result.output:
            return result
        text = json.dumps(result.output, sort_keys=True)
        stored = await self._store_large(text, owner)
        if stored is None:
            return result
        ref, size = stored
        return ToolResult(output_ref=ref, output_bytes=size, summary=preview(result.summary or text))

    async def _store_large(self, text: str, owner: str) -> tuple[str, int] | None:
        """Store `text` when it is over `INLINE_RESULT_BYTES`; its reference and size, else None."""
        data = text.encode("utf-8")
        if len(data) <= INLINE_RESULT_BYTES:
            return None
        try:
            return await self.store.put(data, owner=owner), len(data)
        except StoreError as exc:
            raise _store_failure(exc) from None

    async def store_mcp_result(self, result: dict[str, Any], owner: str) -> dict[str, Any]:
        """An MCP `call-tool` result (as temporalio-mcp returns it) with a large output stored.

        The stored bytes are the JSON text the model is sent as the tool message; the result keeps
        a text preview and names the reference in its `_meta`. Errors and small results pass as they are.
        """
        # Imported here: only workers of MCP runs pay for the MCP SDK.
        from mcp.types import CallToolResult

        from agentkeel.mcp.resolve import tool_output

        parsed = CallToolResult.model_validate(result)
        if parsed.is_error:
            return result
        text = json.dumps(tool_output(parsed), sort_keys=True)
        stored = await self._store_large(text, owner)
        if stored is None:
            return result
        ref, size = stored
        return {
            "content": [{"type": "text", "text": preview(text)}],
            "isError": False,
            "_meta": {STORED_OUTPUT_META: ref, STORED_BYTES_META: size},
        }

    async def resolve_compensation(self, request: CompensationRequest) -> CompensationRequest:
        """A compensation's request with its original step's stored result filled in."""
        if request.result_ref is None or request.result:
            return request
        try:
            result = json.loads(await self._text(request.result_ref))
        except StoreError as exc:
            raise _store_failure(exc) from None
        return request.model_copy(update={"result": result, "result_ref": None})
