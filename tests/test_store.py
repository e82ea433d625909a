"""The conversation store (issue 13): content addressing, chains, encryption at rest, cache, ownership, gc.

Every driver-level test runs on both drivers (`any_store_url`: a SQLite file, then a
database on the session's PostgreSQL server, see tests/postgres_server.py).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from agentkeel.settings import ConfigError, Settings, StoreSettings, load_settings
from agentkeel.store import (
    CachedStore,
    ContentStore,
    ConversationChain,
    CorruptContentError,
    InvalidRefError,
    MissingContentError,
    PostgresStore,
    SqliteStore,
    StoreConfigError,
    StoreKeyError,
    StoreStats,
    canonical_json,
    masked_url,
    open_store,
    ref_of,
    store_url,
)
from tests import store_raw

pytestmark = pytest.mark.unit


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _driver(url: str, tmp_path: Path, **settings: object) -> ContentStore:
    """The bare driver for `url` (no cache), with `settings` (an encryption key...)."""
    return open_store(Settings(home=tmp_path, **settings), url, cache_bytes=0, env={})


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


async def test_put_dedups_and_get_round_trips(any_store_url: str, tmp_path: Path) -> None:
    async with _driver(any_store_url, tmp_path) as store:
        ref = await store.put(b"hello")
        assert ref == ref_of(b"hello")
        assert await store.put(b"hello") == ref
        assert await store.put_many([b"hello", b"world", b"hello"]) == [ref, ref_of(b"world"), ref]
        assert await store.get(ref) == b"hello"
        assert await store.get_many([ref_of(b"world"), ref, ref]) == [b"world", b"hello", b"hello"]
        assert await store.get_many([]) == [] and await store.put_many([]) == []
        assert await store.exists(ref) and not await store.exists(ref_of(b"other"))
        assert await store.count() == (2, len(b"hello") + len(b"world"))
    assert len(await store_raw.rows(any_store_url)) == 2


async def test_missing_and_malformed_refs(any_store_url: str, tmp_path: Path) -> None:
    async with _driver(any_store_url, tmp_path) as store:
        with pytest.raises(MissingContentError, match="not in the"):
            await store.get(ref_of(b"never written"))
        with pytest.raises(InvalidRefError):
            await store.get("sha256:xyz")
        with pytest.raises(InvalidRefError):
            await ConversationChain.append(store, "not-a-ref", [])
        with pytest.raises(ValueError, match="owner"):
            await store.put(b"x", owner=42)  # type: ignore[arg-type]
        await store.put(b"x", owner="")  # no workflow id: no owner recorded
        assert await store.owners() == set()


async def test_tampered_content_fails_verification(any_store_url: str, tmp_path: Path) -> None:
    async with _driver(any_store_url, tmp_path) as store:
        ref = await store.put_json({"role": "user", "content": "pay 10 USD"})
    await store_raw.set_data(any_store_url, ref, b'{"content":"pay 9999 USD"}')
    async with _driver(any_store_url, tmp_path) as store:
        with pytest.raises(CorruptContentError, match="altered"):
            await store.get(ref)


async def test_chain_of_1000_turns_adds_constant_bytes_per_turn(any_store_url: str, tmp_path: Path) -> None:
    async with _driver(any_store_url, tmp_path) as driver:
        store = CachedStore(driver, max_bytes=1 << 20)
        head: str | None = None
        node_sizes: list[int] = []
        added_per_turn: list[int] = []
        expected: list[dict[str, object]] = [{"role": "system", "content": "You book trips."}]
        head = await ConversationChain.append(store, head, expected, owner="run-1")
        for turn in range(1, 1001):
            messages = [_assistant_message(turn), _tool_message(turn)]
            measured = turn in (10, 1000)  # two stats queries per turn would double the test's time
            before = (await driver.count())[1] if measured else 0
            previous = head
            head = await ConversationChain.append(store, head, messages, owner="run-1")
            if measured:
                added_per_turn.append((await driver.count())[1] - before)
            node_sizes.append(len(await store.get(head)))
            expected.extend(messages)
        # The node holds the previous head and two refs, whatever the conversation's length.
        assert node_sizes[9] == node_sizes[999] == len(ConversationChain.node_bytes(head, [head, head]))
        assert len(set(node_sizes)) == 1
        # Bytes stored per turn: this turn's messages and one node, flat from turn 10 to turn 1,000.
        assert abs(added_per_turn[0] - added_per_turn[1]) <= 2
        assert await ConversationChain.read(store, head) == expected
        assert await ConversationChain.read(store, None) == []
        # Appending the same turn again (a retried activity) gives the same head and stores nothing.
        stats = await driver.stats()
        assert await ConversationChain.append(store, previous, messages, owner="run-1") == head
        assert await driver.stats() == stats
        assert stats.contents == 1 + 2 * 1000 + 1001 and stats.owners == 1
        print(
            f"chain node bytes: turn 10 {node_sizes[9]}, turn 1000 {node_sizes[999]}; "
            f"store bytes added: turn 10 {added_per_turn[0]}, turn 1000 {added_per_turn[1]}"
        )


async def test_encryption_at_rest_and_key_rotation(any_store_url: str, tmp_path: Path) -> None:
    old_key, new_key = _key(), _key()
    secret = "card number 4111 1111 1111 1111"
    message = {"role": "user", "content": secret}
    old = Settings(home=tmp_path, encryption_key=SecretStr(old_key))
    async with open_store(old, any_store_url, env={}) as store:
        ref = await store.put_json(message)
        # Dedup and verification work on the plaintext's hash, not the ciphertext's.
        assert await store.put_json(message) == ref == ref_of(canonical_json(message))
    raw = await store_raw.rows(any_store_url)
    assert {encoding for _, encoding, _ in raw} == {"sealed"}
    assert all(secret.encode() not in data for _, _, data in raw)
    if any_store_url.startswith("sqlite:"):  # the file as a thief reads it, WAL included
        path = tmp_path / "store.db"
        assert secret.encode() not in b"".join(p.read_bytes() for p in path.parent.glob("store.db*"))

    # Rotated: the new key seals, the old one (in KEEL_ENCRYPTION_KEYS_OLD) still opens.
    rotated = Settings(home=tmp_path, encryption_key=SecretStr(new_key))
    env = {"KEEL_ENCRYPTION_KEYS_OLD": old_key}
    async with open_store(rotated, any_store_url, env=env, cache_bytes=0) as store:
        assert await store.get_json(ref) == message
        ref2 = await store.put_json({"role": "user", "content": secret + " again"})
    async with open_store(rotated, any_store_url, env={}, cache_bytes=0) as store:
        assert (await store.get_json(ref2))["content"].endswith("again")
        with pytest.raises(StoreKeyError, match="not configured"):
            await store.get(ref)
    async with _driver(any_store_url, tmp_path) as store:
        with pytest.raises(StoreKeyError, match="no key is configured"):
            await store.get(ref)


async def test_encrypted_tampering_is_detected(any_store_url: str, tmp_path: Path) -> None:
    key = SecretStr(_key())
    async with _driver(any_store_url, tmp_path, encryption_key=key) as store:
        ref = await store.put(b"secret")
    ((_, _, data),) = await store_raw.rows(any_store_url)
    await store_raw.set_data(any_store_url, ref, data[:-1] + bytes([data[-1] ^ 1]))
    async with _driver(any_store_url, tmp_path, encryption_key=key) as store:
        with pytest.raises(CorruptContentError):
            await store.get(ref)


async def test_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    async with _driver(f"sqlite:///{tmp_path}/store.db", tmp_path) as driver:
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


class _CountingStore(CachedStore):
    """A pass-through (no caching) that counts the items each write sends to the driver."""

    def __init__(self, inner: ContentStore) -> None:
        super().__init__(inner, max_bytes=0)
        self.written: list[tuple[str | None, int]] = []

    async def put_many(self, items: Sequence[bytes], *, owner: str | None = None) -> list[str]:
        self.written.append((owner, len(items)))
        return await self.inner.put_many(items, owner=owner)


async def test_cache_hits_still_record_owners(any_store_url: str, tmp_path: Path) -> None:
    async with _driver(any_store_url, tmp_path) as driver:
        counting = _CountingStore(driver)
        cache = CachedStore(counting, max_bytes=1 << 20, max_owned_pairs=3)
        ref = await cache.put(b"system prompt", owner="run-a")
        assert ref in cache
        # Cached content, a new owner: the write reaches the driver, which records the owner.
        await cache.put(b"system prompt", owner="run-b")
        assert await store_raw.owner_rows(any_store_url) == {("run-a", ref), ("run-b", ref)}
        assert await cache.owners() == {"run-a", "run-b"} and (await cache.stats()).owners == 2
        # A pair already recorded is the one write the cache skips; without an owner it never skips.
        writes = len(counting.written)
        await cache.put_many([b"system prompt", b"system prompt"], owner="run-b")
        assert len(counting.written) == writes
        await cache.put(b"system prompt")
        assert counting.written[-1] == (None, 1)
        # The pairs remembered are bounded: the oldest is forgotten and written again.
        for n in range(3):
            await cache.put(f"turn {n}".encode(), owner="run-b")
        await cache.put(b"system prompt", owner="run-a")
        assert counting.written[-1] == ("run-a", 1)


async def test_gc_keeps_owned_content_and_reclaims_the_rest(any_store_url: str, tmp_path: Path) -> None:
    async with _driver(any_store_url, tmp_path) as store:
        shared = {"role": "system", "content": "shared prompt"}
        kept = await ConversationChain.append(
            store, None, [shared, {"role": "user", "content": "keep"}], owner="a"
        )
        kept = await ConversationChain.append(
            store, kept, [{"role": "assistant", "content": "kept"}], owner="a"
        )
        gone = await ConversationChain.append(
            store, None, [shared, {"role": "user", "content": "drop"}], owner="b"
        )
        await store.put(b"ownerless")
        assert await store.owners() == {"a", "b"}
        stats = await store.stats()
        assert (stats.contents, stats.owners) == (8, 2)  # 4 messages, 3 nodes, 1 ownerless
        dropped = len(canonical_json({"role": "user", "content": "drop"})) + len(await store.get(gone))
        now = time.time()

        # Everything is younger than the grace period: nothing goes, not even ownerless content.
        report = await store.gc({"a"}, created_before=now - 3600)
        assert (report.owners_removed, report.contents_removed, report.bytes_reclaimed) == (0, 0, 0)
        await store_raw.backdate(any_store_url, 7200)

        # A dry run reports what a real run deletes, and deletes nothing.
        dry = await store.gc({"a"}, created_before=now - 3600, dry_run=True)
        assert dry.dry_run and await store.stats() == stats
        report = await store.gc({"a"}, created_before=now - 3600)
        assert (report.owners_removed, report.contents_removed) == (
            1,
            3,
        )  # b, its node, its message, ownerless
        assert report.bytes_reclaimed == dropped + len(b"ownerless") == dry.bytes_reclaimed
        assert (dry.owners_removed, dry.contents_removed) == (1, 3) and not report.dry_run
        assert await store.owners() == {"a"}
        assert await ConversationChain.read(store, kept) == [
            shared,
            {"role": "user", "content": "keep"},
            {"role": "assistant", "content": "kept"},
        ]
        with pytest.raises(MissingContentError):
            await ConversationChain.read(store, gone)
        # Once `a` is no longer retained, its content goes too.
        report = await store.gc(set(), created_before=time.time())
        assert (report.owners_removed, report.contents_removed) == (1, 5)  # 3 messages, 2 nodes
        assert await store.stats() == StoreStats(contents=0, bytes=0, owners=0)


async def test_gc_spares_owners_that_started_after_the_listing(any_store_url: str, tmp_path: Path) -> None:
    """A run started after the namespace was listed is not in `retained`: its rows are young, so it stays."""
    async with _driver(any_store_url, tmp_path) as store:
        ref = await store.put(b"old, shared", owner="gone")
        await store_raw.backdate(any_store_url, 7200)
        await store.put(b"old, shared", owner="new-run")  # a new run writes what an old one wrote
        new = await store.put(b"new", owner="new-run")
        report = await store.gc(set(), created_before=time.time() - 3600)
        assert (report.owners_removed, report.contents_removed) == (1, 0)
        assert await store.owners() == {"new-run"}
        assert await store.get_many([ref, new]) == [b"old, shared", b"new"]


async def test_concurrent_writers_on_one_database(any_store_url: str, tmp_path: Path) -> None:
    a, b = _driver(any_store_url, tmp_path), _driver(any_store_url, tmp_path)
    try:

        async def writer(store: ContentStore, name: str) -> str | None:
            head = None
            for turn in range(50):
                shared = {"role": "system", "content": f"shared {turn}"}  # both write it: stored once
                head = await ConversationChain.append(
                    store, head, [shared, {"role": name, "n": turn}], owner=name
                )
            return head

        head_a, head_b = await asyncio.gather(writer(a, "a"), writer(b, "b"))
        assert len(await ConversationChain.read(b, head_a)) == 100
        assert len(await ConversationChain.read(a, head_b)) == 100
        stats = await a.stats()
        assert (stats.contents, stats.owners) == (50 + 50 * 2 + 50 * 2, 2)  # shared, own messages, nodes
        assert len(await store_raw.owner_rows(any_store_url)) == 2 * (50 * 2 + 50)
    finally:
        await a.aclose()
        await b.aclose()


async def test_adopt_records_a_new_owner_for_a_whole_conversation(any_store_url: str, tmp_path: Path) -> None:
    async with _driver(any_store_url, tmp_path) as store:
        head = await ConversationChain.append(store, None, [{"role": "user", "content": "hi"}], owner="first")
        head = await ConversationChain.append(
            store, head, [{"role": "assistant", "content": "yo"}], owner="first"
        )
        assert await ConversationChain.adopt(store, head, "redriven") == 4
        await store_raw.backdate(any_store_url, 7200)
        report = await store.gc({"redriven"}, created_before=time.time() - 3600)
        assert (report.owners_removed, report.contents_removed) == (1, 0)
        assert len(await ConversationChain.read(store, head)) == 2


async def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(home=tmp_path / "home")
    store = open_store(settings, env={})
    try:
        assert isinstance(store, CachedStore) and isinstance(store.inner, SqliteStore)
        assert store.inner.path == tmp_path / "home" / "store.db"
        assert store.max_bytes == 64 * 1024 * 1024
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
    # KEEL_STORE_URL, then [store] url, then the default file.
    configured = Settings(home=tmp_path, store=StoreSettings(url="sqlite:///toml.db", cache_mb=0))
    for env, expected in (({"KEEL_STORE_URL": "sqlite:///env.db"}, Path("env.db")), ({}, Path("toml.db"))):
        store = open_store(configured, env=env)
        assert isinstance(store, SqliteStore) and store.path == expected  # cache_mb = 0: no cache
        await store.aclose()
    assert store_url(configured, env={}) == "sqlite:///toml.db"
    assert store_url(settings, env={}) == f"sqlite:///{tmp_path / 'home' / 'store.db'}"
    # A PostgreSQL URL opens the asyncpg driver without connecting (nothing listens there).
    for url in ("postgresql://keel:s3cret@localhost:1/keel", "postgres://keel@localhost:1/keel"):
        store = open_store(settings, url, cache_bytes=1 << 20, env={})
        assert isinstance(store, CachedStore) and isinstance(store.inner, PostgresStore)
        await store.aclose()
    with pytest.raises(StoreConfigError, match="unknown store URL scheme 'redis'"):
        open_store(settings, "redis://:hunter2@localhost", env={})
    with pytest.raises(StoreConfigError):
        open_store(settings, "sqlite://host/x.db", env={})


def test_masked_url() -> None:
    assert (
        masked_url("postgresql://keel:s3cret@db.example:5432/keel")
        == "postgresql://keel:***@db.example:5432/keel"
    )
    assert masked_url("postgresql://keel@db/keel?host=/run/pg") == "postgresql://keel@db/keel?host=/run/pg"
    assert masked_url("postgres://:only@db/keel") == "postgres://:***@db/keel"
    assert masked_url("sqlite:///.keel/store.db") == "sqlite:///.keel/store.db"


def test_store_table_in_keel_toml(tmp_path: Path) -> None:
    config = tmp_path / "keel.toml"
    config.write_text('[keel]\nhome = "h"\n\n[store]\nurl = "postgresql://keel:pw@db/keel"\ncache_mb = 8\n')
    settings = load_settings(config, env={})
    assert settings.store == StoreSettings(url="postgresql://keel:pw@db/keel", cache_mb=8)
    assert "pw" not in repr(settings)
    # The environment wins over the table, key by key.
    settings = load_settings(config, env={"KEEL_STORE_URL": "sqlite:///e.db", "KEEL_STORE_CACHE_MB": "0"})
    assert settings.store == StoreSettings(url="sqlite:///e.db", cache_mb=0)
    assert load_settings(tmp_path / "absent.toml", env={}).store == StoreSettings(url=None, cache_mb=64)
    for text, message in (
        (
            '[store]\nurl = "sqlite:///x.db"\npath = "x"\n',
            r"\[store\]: unknown key path \(known keys: url, cache_mb\)",
        ),
        ("[store]\ncache_mb = -1\n", "store.cache_mb"),
        ('[keel]\nstore = { url = "sqlite:///x.db" }\n', r"their own \[store\] table"),
        ('store = "sqlite:///x.db"\n', r"\[store\] must be a table"),
    ):
        config.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_settings(config, env={})


def test_readme_store_section_is_what_the_code_reads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("### Conversation store: drivers and retention")
    section = readme[start : readme.index("\n## ", start)]
    (block,) = re.findall(r"```toml\n(\[store\].*?)```", section, re.S)[:1]
    (tmp_path / "keel.toml").write_text(block)
    store = load_settings(tmp_path / "keel.toml", env={}).store
    assert store == StoreSettings(
        url="postgresql://agentkeel:agentkeel@localhost:5432/agentkeel", cache_mb=64
    )
    assert store == StoreSettings(url=store.url)  # the defaults the README states
    # The URL temporal-dev.yml's store bootstrap creates (tests/test_store_postgres.py runs it).
    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "temporal-dev.yml").read_text())
    env = compose["services"]["keel-store-schema"]["environment"]
    assert store.url == (
        f"postgresql://{env['KEEL_STORE_USER']}:{env['KEEL_STORE_PASSWORD']}@localhost:5432/{env['KEEL_STORE_DB']}"
    )
    for command in ("keel store stats", "keel store gc --dry-run --json", "keel store gc --grace 30m"):
        assert command in section
