"""A conversation as a chain of content references, so a turn stores only its new messages.

Each message is stored once under its reference. A turn appends one small node,

    {"prev": <previous head ref or null>, "messages": [<ref of each new message>]}

stored in the same store; the node's reference is the conversation's new head.
A node holds the previous head and the new refs only, so its size (and whatever
the workflow records per turn: one head reference) does not depend on the
conversation's length. Identical conversations share their nodes.
"""

from __future__ import annotations

import json
from typing import Any

from agentkeel.store.base import ContentStore, CorruptContentError, canonical_json, check_ref


def _parse_node(ref: str, data: bytes) -> tuple[str | None, list[str]]:
    try:
        node = json.loads(data)
        prev, refs = node["prev"], node["messages"]
    except (ValueError, TypeError, KeyError):
        raise CorruptContentError(f"{ref} is not a conversation chain node") from None
    if (prev is not None and not isinstance(prev, str)) or not isinstance(refs, list):
        raise CorruptContentError(f"{ref} is not a conversation chain node")
    return (None if prev is None else check_ref(prev)), [check_ref(r) for r in refs]


class ConversationChain:
    """Functions over conversation chains (stateless: a conversation is its head reference)."""

    @staticmethod
    def node_bytes(head_ref: str | None, message_refs: list[str]) -> bytes:
        """The canonical bytes of the chain node that appends `message_refs` after `head_ref`."""
        return canonical_json({"prev": head_ref, "messages": message_refs})

    @staticmethod
    async def append(
        store: ContentStore,
        head_ref: str | None,
        messages: list[dict[str, Any]],
        *,
        owner: str | None = None,
    ) -> str:
        """Store `messages` (each once) and a node pointing at `head_ref`; return the new head.

        Args:
            store: Where content goes.
            head_ref: The conversation so far, or None to start one.
            messages: This turn's new messages, in order.
            owner: The workflow id of the run the conversation belongs to (see `ContentStore.gc`).

        Returns:
            The new head reference. Appending the same messages to the same head gives
            the same reference, so a retried activity does not fork the conversation.
        """
        if head_ref is not None:
            check_ref(head_ref)
        message_refs = await store.put_many([canonical_json(message) for message in messages], owner=owner)
        return await store.put(ConversationChain.node_bytes(head_ref, message_refs), owner=owner)

    @staticmethod
    async def message_refs(store: ContentStore, head_ref: str | None) -> list[str]:
        """The references of every message of the conversation, oldest first."""
        turns: list[list[str]] = []
        ref = head_ref
        while ref is not None:
            prev, refs = _parse_node(ref, await store.get(ref))
            turns.append(refs)
            ref = prev
        return [r for refs in reversed(turns) for r in refs]

    @staticmethod
    async def read(store: ContentStore, head_ref: str | None) -> list[dict[str, Any]]:
        """The whole conversation ending at `head_ref`, oldest message first (empty for None)."""
        refs = await ConversationChain.message_refs(store, head_ref)
        return [json.loads(data) for data in await store.get_many(refs)] if refs else []

    @staticmethod
    async def adopt(store: ContentStore, head_ref: str | None, owner: str) -> int:
        """Record `owner` for every reference of a conversation another run wrote; return how many.

        A run that goes on from another run's head (a new workflow id: a redrive, a
        child) must own what it reads, or a gc reclaims it once the first run is gone.
        Continue-as-new keeps the workflow id, so it needs nothing.
        """
        refs = sorted(await ConversationChain.reachable(store, head_ref))
        if refs:
            await store.put_many(await store.get_many(refs), owner=owner)
        return len(refs)

    @staticmethod
    async def reachable(store: ContentStore, head_ref: str | None) -> set[str]:
        """Every reference a conversation needs (nodes and messages): what a gc must keep for it."""
        keep: set[str] = set()
        ref = head_ref
        while ref is not None and ref not in keep:  # shared prefixes are walked once
            keep.add(ref)
            prev, refs = _parse_node(ref, await store.get(ref))
            keep.update(refs)
            ref = prev
        return keep
