"""What only the PostgreSQL driver does: a lazy bounded pool, a schema created once by workers
starting together, gc excluding writers, and the store bootstrap of `temporal-dev.yml`.

The server is the session's throwaway PostgreSQL (tests/postgres_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest
import yaml

from agentkeel.dev.devserver import find_free_port as _free_port
from agentkeel.settings import Settings
from agentkeel.store import PostgresStore, StoreError, open_store, ref_of
from agentkeel.store.postgres import _GC_LOCK, SCHEMA_FILE
from tests import store_raw
from tests.postgres_server import PostgresServer, find_bindir

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent


async def _connections(url: str) -> int:
    """Sessions open on the database of `url`, other than the one asking."""
    database = url.rsplit("/", 1)[1]
    rows = await store_raw.query(
        url, "SELECT count(*) FROM pg_stat_activity WHERE datname = ? AND pid <> pg_backend_pid()", database
    )
    return int(rows[0][0])


async def test_nothing_connects_before_first_use_and_the_pool_is_bounded(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, max_size=3)
    assert await _connections(postgres_url) == 0
    try:
        ref = await store.put(b"x")
        await asyncio.gather(*(store.get(ref) for _ in range(40)))
        assert 1 <= await _connections(postgres_url) <= 3
    finally:
        await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.get(ref)


async def test_workers_starting_together_create_the_schema_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url, max_size=1) for _ in range(8)]
    try:
        refs = await asyncio.gather(
            *(s.put(f"from worker {n}".encode(), owner=f"w{n}") for n, s in enumerate(stores))
        )
        assert len(set(refs)) == 8 and await stores[0].owners() == {f"w{n}" for n in range(8)}
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))


async def test_an_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://keel:hunter2@127.0.0.1:{_free_port()}/keel"
    store = open_store(Settings(home=tmp_path), url, env={})  # returns at once: nothing connects yet
    try:
        with pytest.raises(StoreError, match="cannot open the PostgreSQL store") as caught:
            await store.stats()
        assert "hunter2" not in str(caught.value)
    finally:
        await store.aclose()


async def test_lost_connections_are_replaced_and_failures_are_store_errors(postgres_url: str) -> None:
    async with PostgresStore(postgres_url, max_size=1) as store:
        ref = await store.put(b"before the restart")
        terminate = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = ? AND pid <> pg_backend_pid()"
        )
        assert (await store_raw.query(postgres_url, terminate, postgres_url.rsplit("/", 1)[1]))[0] == (True,)
        # The pooled connection may learn of its end only when used: then one call fails, as a
        # StoreError (an activity's retry), and the pool opens a new connection for the next.
        with contextlib.suppress(StoreError):
            assert await store.get(ref) == b"before the restart"
        assert await store.get(ref) == b"before the restart"  # the pool opened a new connection
        await store_raw.query(postgres_url, "DROP TABLE owners")  # a database the store cannot use
        with pytest.raises(StoreError, match="the PostgreSQL store failed: UndefinedTableError"):
            await store.put(b"after", owner="run-1")


async def test_gc_waits_for_a_writer_in_flight(postgres_url: str) -> None:
    """A writer found content stored and is about to record its owner: gc must not delete it meanwhile."""
    async with PostgresStore(postgres_url) as store:
        ref = await store.put(b"old, its first run gone", owner="gone")
        await store_raw.backdate(postgres_url, 7200)
        writer = await asyncpg.connect(postgres_url)
        try:
            # What put_many does, stopped before its commit.
            transaction = writer.transaction()
            await transaction.start()
            await writer.execute("SELECT pg_advisory_xact_lock_shared($1)", _GC_LOCK)
            await writer.execute(
                "INSERT INTO owners (owner, ref, created_at) VALUES ('new-run', $1, $2)", ref, time.time()
            )
            gc = asyncio.create_task(store.gc({"new-run"}, created_before=time.time() - 3600))
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            deadline = time.monotonic() + 10
            while (await store_raw.query(postgres_url, waiting))[0][0] == 0:  # gc queued behind the writer
                assert time.monotonic() < deadline and not gc.done(), "gc did not wait for the writer"
            assert not gc.done()
            await transaction.commit()
        finally:
            await writer.close()
        report = await gc
        assert (report.owners_removed, report.contents_removed) == (1, 0)
        assert await store.get(ref) == b"old, its first run gone"


def test_compose_stack_creates_the_store(postgres_server: PostgresServer, tmp_path: Path) -> None:
    """Run temporal-dev.yml's `keel-store-schema` script, twice, against a real server; then use the store."""
    service = yaml.safe_load((ROOT / "temporal-dev.yml").read_text())["services"]["keel-store-schema"]
    (mount,) = service["volumes"]
    source, target, _ = mount.split(":")
    assert (ROOT / source).resolve() == SCHEMA_FILE and service["environment"]["KEEL_STORE_SCHEMA"] == target
    script = "\n".join(service["command"]).replace("$$", "$")  # compose's escape for a literal $
    env = {
        **os.environ,
        **service["environment"],
        # The test server instead of the `postgresql` service; its superuser instead of `temporal`.
        "PGHOST": str(postgres_server.socket_dir),
        "PGPORT": str(postgres_server.port),
        "PGUSER": "postgres",
        "KEEL_STORE_SCHEMA": str(SCHEMA_FILE),
        "PATH": f"{find_bindir()}:{os.environ.get('PATH', '')}",
    }
    names = service["environment"]
    user, password, db = names["KEEL_STORE_USER"], names["KEEL_STORE_PASSWORD"], names["KEEL_STORE_DB"]
    try:
        for _ in range(2):  # a restarted stack runs it again
            done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
        url = f"postgresql://{user}:{password}@127.0.0.1:{postgres_server.port}/{db}"

        async def use() -> tuple[str, object]:
            async with open_store(Settings(home=tmp_path), url, env={}) as store:
                ref = await store.put(b"hello", owner="run-1")
                return ref, await store.stats()

        ref, stats = asyncio.run(use())
        assert ref == ref_of(b"hello") and stats == type(stats)(contents=1, bytes=5, owners=1)
    finally:
        drop = [f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{user}"']
        subprocess.run(
            ["psql", "-X", "-q", "-d", "postgres", *(arg for sql in drop for arg in ("-c", sql))],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
