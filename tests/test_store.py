"""The conversation store (issue 13): content addressing, chains, encryption at rest, cache, gc."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from agentkeel.settings import Settings
from agentkeel.store import (
    CachedStore,
    ConversationChain,
    CorruptContentError,
    InvalidRefError,
    MissingContentError,
    Sealer,
    SqliteStore,
    StoreConfigError,
    StoreKeyError,
    canonical_json,
    open_store,
    ref_of,
)

pytestmark = pytest.mark.unit


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _rows(path: Path) -> list[tuple[str, str, bytes]]:
    with sqlite3.connect(path) as db:
        return [(r, e, bytes(d)) for r, e, d in db.execute("SELECT ref, encoding, data FROM content")]


def _raw_bytes(path: Path) -> bytes:
    """The file's bytes as a thief would read them, WAL included."""
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def _tool_message(turn: int) -> dict[str, object]:
    # 2 KB of distinct text per tool result, as the benchmark tool returns.
    return {"role": "tool", "tool_call_id": f"call_{turn:05d}", "content": f"result {turn} " + "x" * 2048}


def _assistant_message(turn: int) -> dict[str, object]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": f"call_{turn:05d}", "name": "lookup"}],
    }


def test_canonical_json_and_ref() -> None:
    a = canonical_json({"b": 1, "a": "é"})
    assert a == '{"a":"é","b":1}'.encode()
    assert canonical_json({"a": "é", "b": 1}) == a
    assert ref_of(a).startswith("sha256:") and len(ref_of(a)) == 7 + 64


async def test_put_dedups_and_get_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with SqliteStore(path) as store:
        ref = await store.put(b"hello")
        assert ref == ref_of(b"hello")
        assert await store.put(b"hello") == ref
        assert await store.put_many([b"hello", b"world", b"hello"]) == [ref, ref_of(b"world"), ref]
        assert await store.get(ref) == b"hello"
        assert await store.get_many([ref_of(b"world"), ref, ref]) == [b"world", b"hello", b"hello"]
        assert await store.exists(ref) and not await store.exists(ref_of(b"other"))
        assert await store.count() == (2, len(b"hello") + len(b"world"))
    assert len(_rows(path)) == 2


async def test_missing_and_malformed_refs(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "store.db") as store:
        with pytest.raises(MissingContentError, match="not in the store"):
            await store.get(ref_of(b"never written"))
        with pytest.raises(InvalidRefError):
            await store.get("sha256:xyz")
        with pytest.raises(InvalidRefError):
            await ConversationChain.append(store, "not-a-ref", [])


async def test_tampered_content_fails_verification(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with SqliteStore(path) as store:
        ref = await store.put_json({"role": "user", "content": "pay 10 USD"})
    with sqlite3.connect(path) as db:
        db.execute("UPDATE content SET data = ? WHERE ref = ?", (b'{"content":"pay 9999 USD"}', ref))
    async with open_store(Settings(home=tmp_path), cache_bytes=0) as store:
        with pytest.raises(CorruptContentError, match="altered"):
            await store.get(ref)


async def test_chain_of_1000_turns_adds_constant_bytes_per_turn(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "store.db") as driver:
        store = CachedStore(driver, max_bytes=1 << 20)
        head: str | None = None
        node_sizes: list[int] = []
        added_per_turn: list[int] = []
        expected: list[dict[str, object]] = [{"role": "system", "content": "You book trips."}]
        head = await ConversationChain.append(store, head, expected)
        for turn in range(1, 1001):
            messages = [_assistant_message(turn), _tool_message(turn)]
            before = (await driver.count())[1]
            previous = head
            head = await ConversationChain.append(store, head, messages)
            added_per_turn.append((await driver.count())[1] - before)
            node_sizes.append(len(await store.get(head)))
            expected.extend(messages)
        # The node holds the previous head and two refs, whatever the conversation's length.
        assert node_sizes[9] == node_sizes[999] == len(ConversationChain.node_bytes(head, [head, head]))
        assert len(set(node_sizes)) == 1
        # Bytes stored per turn: this turn's messages and one node, flat from turn 10 to turn 1,000.
        assert max(added_per_turn[9:]) - min(added_per_turn[9:]) <= 2
        assert await ConversationChain.read(store, head) == expected
        assert await ConversationChain.read(store, None) == []
        # Appending the same turn again (a retried activity) gives the same head and stores nothing.
        count = await driver.count()
        assert await ConversationChain.append(store, previous, messages) == head
        assert await driver.count() == count
        print(
            f"chain node bytes: turn 10 {node_sizes[9]}, turn 1000 {node_sizes[999]}; "
            f"store bytes added: turn 10 {added_per_turn[9]}, turn 1000 {added_per_turn[999]}"
        )


async def test_encryption_at_rest_and_key_rotation(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    old_key, new_key = _key(), _key()
    secret = "card number 4111 1111 1111 1111"
    message = {"role": "user", "content": secret}
    async with open_store(Settings(home=tmp_path, encryption_key=SecretStr(old_key)), env={}) as store:
        ref = await store.put_json(message)
        # Dedup and verification work on the plaintext's hash, not the ciphertext's.
        assert await store.put_json(message) == ref == ref_of(canonical_json(message))
    assert secret.encode() not in _raw_bytes(path)
    assert {encoding for _, encoding, _ in _rows(path)} == {"sealed"}

    # Rotated: the new key seals, the old one (in KEEL_ENCRYPTION_KEYS_OLD) still opens.
    rotated = Settings(home=tmp_path, encryption_key=SecretStr(new_key))
    async with open_store(rotated, env={"KEEL_ENCRYPTION_KEYS_OLD": old_key}, cache_bytes=0) as store:
        assert await store.get_json(ref) == message
        ref2 = await store.put_json({"role": "user", "content": secret + " again"})
    async with open_store(rotated, env={}, cache_bytes=0) as store:
        assert (await store.get_json(ref2))["content"].endswith("again")
        with pytest.raises(StoreKeyError, match="not configured"):
            await store.get(ref)
    async with open_store(Settings(home=tmp_path), env={}, cache_bytes=0) as store:
        with pytest.raises(StoreKeyError, match="no key is configured"):
            await store.get(ref)


async def test_encrypted_tampering_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    sealer = Sealer.from_env({}, key=_key())
    async with SqliteStore(path, sealer) as store:
        ref = await store.put(b"secret")
    ((_, _, data),) = _rows(path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE content SET data = ? WHERE ref = ?", (data[:-1] + bytes([data[-1] ^ 1]), ref))
    async with SqliteStore(path, sealer) as store:
        with pytest.raises(CorruptContentError):
            await store.get(ref)


async def test_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "store.db") as driver:
        cache = CachedStore(driver, max_bytes=1000)
        refs = await cache.put_many([bytes([i]) * 100 for i in range(20)])
        assert cache.current_bytes <= 1000 and len(cache) == 10
        assert refs[0] not in cache and refs[19] in cache
        await cache.get(refs[10])  # now most recently used: survives the next evictions
        await cache.put_many([b"y" * 100, b"z" * 100])
        assert refs[10] in cache and refs[11] not in cache
        await cache.put(b"big" * 1000)  # larger than the bound: stored, never cached
        assert cache.current_bytes <= 1000
        hits = cache.hits
        assert await cache.get(refs[0]) == bytes([0]) * 100  # evicted, read from the driver
        assert cache.hits == hits and cache.misses >= 1


async def test_gc_keeps_referenced_content(tmp_path: Path) -> None:
    async with open_store(Settings(home=tmp_path), env={}) as store:
        shared = {"role": "system", "content": "shared prompt"}
        kept = await ConversationChain.append(store, None, [shared, {"role": "user", "content": "keep"}])
        kept = await ConversationChain.append(store, kept, [{"role": "assistant", "content": "kept"}])
        gone = await ConversationChain.append(store, None, [shared, {"role": "user", "content": "drop"}])
        keep = await ConversationChain.reachable(store, kept)
        assert len(keep) == 5  # 2 nodes, 3 messages
        # Content written after the cutoff survives even when unreferenced (an activity in flight).
        assert await store.delete_unreferenced(keep, created_before=time.time() - 3600) == 0
        assert await store.delete_unreferenced(keep) == 2  # the other node and its own message
        assert await ConversationChain.read(store, kept) == [
            shared,
            {"role": "user", "content": "keep"},
            {"role": "assistant", "content": "kept"},
        ]
        with pytest.raises(MissingContentError):
            await ConversationChain.read(store, gone)


async def test_concurrent_writers_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    a, b = SqliteStore(path), SqliteStore(path)
    try:

        async def writer(store: SqliteStore, name: str) -> str | None:
            head = None
            for turn in range(50):
                shared = {"role": "system", "content": f"shared {turn}"}  # both write it: stored once
                head = await ConversationChain.append(store, head, [shared, {"role": name, "n": turn}])
            return head

        head_a, head_b = await asyncio.gather(writer(a, "a"), writer(b, "b"))
        assert len(await ConversationChain.read(b, head_a)) == 100
        assert len(await ConversationChain.read(a, head_b)) == 100
        assert (await a.count())[0] == 50 + 50 * 2 + 50 * 2  # shared messages, own messages, nodes
    finally:
        await a.aclose()
        await b.aclose()


async def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings, env={})
    try:
        assert isinstance(store, CachedStore) and isinstance(store.inner, SqliteStore)
        assert store.inner.path == tmp_path / "home" / "store.db"
    finally:
        await store.aclose()
    monkeypatch.chdir(tmp_path)
    for url, expected in (
        (f"sqlite:///{tmp_path}/x.db", tmp_path / "x.db"),
        ("sqlite:///rel.db", Path("rel.db")),
    ):
        store = open_store(settings, url, cache_bytes=0, env={})
        assert isinstance(store, SqliteStore) and store.path == expected
        await store.aclose()
    env_store = open_store(settings, env={"KEEL_STORE_URL": "sqlite:///env.db"}, cache_bytes=0)
    assert isinstance(env_store, SqliteStore) and env_store.path == Path("env.db")
    await env_store.aclose()
    with pytest.raises(StoreConfigError, match="not available yet"):
        open_store(settings, "postgresql://keel@localhost/keel", env={})
    with pytest.raises(StoreConfigError, match="unknown store URL scheme"):
        open_store(settings, "redis://localhost", env={})
    with pytest.raises(StoreConfigError):
        open_store(settings, "sqlite://host/x.db", env={})
