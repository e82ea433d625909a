"""A payload codec that reads the conversation store's references back into what the UI shows.

Runs that store their conversation keep references in history: an LLM turn's input holds
the conversation's head and the new messages, a large tool result is a reference and a
preview. The codec server decodes payloads with `ResolvingCodec`, so a person reading a
run in the Temporal Web UI, or with `temporal workflow show --codec-endpoint`, reads the
conversation itself:

* an LLM turn's `conversation` gains `messages`: the conversation the turn continued (the
  last `MAX_MESSAGES`, and how many came before);
* a message with `content_ref` gets its `content`; a tool result with `output_ref` its
  `output`; a compensation with `result_ref` its `result`; a transcript entry of a stored
  tool result its whole output; a summary its `text`.

Encoding is left as it is. Content the store no longer has (reclaimed by `keel store gc`)
or cannot read is marked `"unresolved": "<why>"`; the payload is still shown.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from agentkeel.activities.conversation import ConversationLayer
from agentkeel.store import StoreError

MAX_MESSAGES = 200
"""Messages of a conversation shown per LLM turn (a UI page shows every turn of a run)."""
MAX_TEXT = 64 * 1024
"""Characters of one stored content shown."""
_JSON = b"json/plain"


class ResolvingCodec(PayloadCodec):
    """Decode with `inner`, then resolve conversation-store references in JSON payloads.

    Args:
        inner: The platform's codec (decompression, decryption).
        layer: Reads the conversation store.
    """

    def __init__(self, inner: PayloadCodec, layer: ConversationLayer) -> None:
        self.inner = inner
        self.layer = layer

    @property
    def encrypts(self) -> bool:
        """Whether the inner codec encrypts (what the codec server reports)."""
        return bool(getattr(self.inner, "encrypts", False))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encode with the inner codec (nothing is resolved on the way in)."""
        return await self.inner.encode(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decode with the inner codec, then resolve references."""
        return [await self._resolved(p) for p in await self.inner.decode(payloads)]

    async def _resolved(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != _JSON:
            return payload
        try:
            value = json.loads(payload.data)
        except ValueError:
            return payload
        if not await self._walk(value):
            return payload
        return Payload(metadata=dict(payload.metadata), data=json.dumps(value).encode())

    async def _walk(self, value: Any) -> bool:
        if isinstance(value, list):
            changed = [await self._walk(item) for item in value]
            return any(changed)
        if not isinstance(value, dict):
            return False
        changed = await self._resolve_here(value)
        for item in list(value.values()):
            changed = await self._walk(item) or changed
        return changed

    async def _resolve_here(self, d: dict[str, Any]) -> bool:
        try:
            if isinstance(d.get("content_ref"), str):
                d["content"] = await self._text(d["content_ref"])
            elif isinstance(d.get("output_ref"), str):
                d["output"] = json.loads(await self._text(d["output_ref"]))
            elif isinstance(d.get("result_ref"), str):
                d["result"] = json.loads(await self._text(d["result_ref"]))
            elif isinstance(d.get("ref"), str) and "bytes" in d:  # a transcript entry's stored result
                d["output"] = json.loads(await self._text(d["ref"]))
            elif isinstance(d.get("ref"), str) and "covers" in d:  # a summary
                d["text"] = await self._text(d["ref"])
            elif "head" in d and "finish_reason" not in d and ("prompt_ref" in d or "system" in d):
                await self._conversation(d)
            else:
                return False
        except (StoreError, ValueError, UnicodeDecodeError) as exc:
            d["unresolved"] = str(exc)
        return True

    async def _conversation(self, d: dict[str, Any]) -> None:
        messages = await self.layer.read(d.get("head"))
        shown = messages[-MAX_MESSAGES:]
        d["earlier_messages"] = len(messages) - len(shown)
        d["messages"] = [m.model_dump(mode="json", exclude_none=True, exclude_defaults=True) for m in shown]
        if isinstance(d.get("prompt_ref"), str):
            prompt = await self.layer.store.get_json(d["prompt_ref"])
            d["system"] = prompt.get("system", "")

    async def _text(self, ref: str) -> str:
        text = (await self.layer.store.get(ref)).decode("utf-8")
        return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text):,} characters)"
