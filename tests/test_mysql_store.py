"""The MariaDB store's own edges: concurrent interning and the first import's LOAD DATA text."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from kmdb_async.batching import Batch
from kmdb_async.resolver import PropertySet, ResolvedBatch
from kmdb_async.store import open_store
from kmdb_async.store.loaddata import property_rows, tsv_text

from .conftest import Database, settings_for


@pytest.mark.parametrize(("first_import", "cache_size"), [(False, 300_000), (True, 300_000),
                                                           (True, 600)],
                         ids=["lookup", "first-import", "first-import-small-cache"])
async def test_concurrent_interning_gives_every_name_its_stored_id(
        database: Database, first_import: bool, cache_size: int) -> None:
    """Overlapping batches interned at once. In a first import (empty tables, the bulk load
    begun) new names are inserted without a lookup and their ids counted from the first, until
    the cache drops names (then they are looked up, as in a later import)."""
    store = open_store(settings_for(database, user_cache_size=cache_size))
    await store.open()
    await store.ensure_schema()
    rng = random.Random(7)
    pool = [f"anon-{i:x}" for i in range(6000)] + [str(i) for i in range(2000)] + ["it's \\ é"]
    batches = [rng.sample(pool, 1100) for _ in range(24)]  # overlapping, over 1000 each
    bulk = await store.begin_bulk_load() if first_import else None
    try:
        assert store._users.complete is first_import  # noqa: SLF001 - the path under test
        answers = await asyncio.gather(*(store.user_ids(set(names)) for names in batches))
        # Complete until names were dropped; never because an insert without lookup failed.
        assert store._users.complete is (first_import and cache_size > 20_000)  # noqa: SLF001
        if bulk is not None:  # streamed users commit with the load (or once names are dropped)
            assert (bulk.users is None) is (cache_size < 20_000)
            await bulk.finish([])
    finally:
        if bulk is not None:
            bulk.close()
        await store.close()
    stored = dict(database.query("SELECT name, id FROM users"))
    assert len(stored) == len({name for names in batches for name in names})
    for names, ids in zip(batches, answers, strict=True):
        assert set(ids) == set(names)
        assert all(stored[name] == ids[name] for name in names)


async def test_a_first_imports_interning_falls_back_to_lookups_when_a_name_is_there(
        database: Database) -> None:
    """Should a key be in the table after all, the insert without lookup fails on it; the
    store then looks keys up for the rest of the run and still answers the stored ids."""
    store = open_store(settings_for(database))
    await store.open()
    await store.ensure_schema()
    bulk = await store.begin_bulk_load()
    try:
        assert bulk is not None and store._keys.complete  # noqa: SLF001
        database.query("INSERT INTO `keys` (string) VALUES ('already')")
        ids = await store.key_ids({"already", "new-1", "new-2"})
        assert not store._keys.complete  # noqa: SLF001
    finally:
        if bulk is not None:
            bulk.close()
        await store.close()
    assert ids == dict(database.query("SELECT string, id FROM `keys`"))


async def test_users_streamed_by_an_unfinished_bulk_load_are_rolled_back_and_forgotten(
        database: Database) -> None:
    """A first import streams new users into the load (ids counted from 1); a load that stops
    before its end leaves no user, and the ids it handed out are never answered again."""
    store = open_store(settings_for(database))
    await store.open()
    await store.ensure_schema()
    bulk = await store.begin_bulk_load()
    assert bulk is not None and bulk.users is not None
    try:
        streamed = await store.user_ids({"anon-1", "it's \\ é\tx", "42"})
        assert sorted(streamed.values()) == [1, 2, 3]
    finally:
        bulk.close()
    try:
        assert database.query("SELECT COUNT(*) FROM users") == [(0,)]
        again = await store.user_ids({"anon-1", "42"})  # looked up and inserted now
    finally:
        await store.close()
    assert again == dict(database.query("SELECT name, id FROM users"))


def test_load_data_text_escapes_exactly_what_the_format_needs() -> None:
    assert tsv_text(None) == "\\N"
    assert tsv_text("plain café 😀") == "plain café 😀"
    assert tsv_text("a\tb\nc\\d\x00e") == "a\\tb\\nc\\\\d\\0e"
    assert tsv_text("\\N") == "\\\\N"  # the text backslash-N, not NULL
    row = property_rows(resolved((5, T, 1, 2, None, [("k", None)])))
    assert row == b"5\t2012-01-01 00:00:00\t1\t2\t\\N\t3\t\\N\n"


T = "2012-01-01 00:00:00"


def resolved(*sets: PropertySet, dropped: frozenset[str] = frozenset()) -> ResolvedBatch:
    """A batch resolved to ``sets`` (keys k -> 3, x -> 4; ``dropped`` blacklisted)."""
    rb = ResolvedBatch(Batch(1, 0, 0), property_sets=list(sets), keys={"k": 3, "x": 4},
                       dropped=dropped)
    rb.properties = sum(key not in dropped for s in sets for key, _ in s[5])
    return rb


async def test_advice_names_the_buffer_pool_only_when_it_is_small_for_the_export(
        database: Database) -> None:
    store = open_store(settings_for(database))
    await store.open()
    try:
        [(pool,)] = database.query("SELECT @@innodb_buffer_pool_size")
        assert await store.memory_advice(int(pool) // 2) is None  # a small export: nothing to say
        advice = await store.memory_advice(int(pool) * 100)
    finally:
        await store.close()
    assert advice is not None
    assert f"innodb_buffer_pool_size is {int(pool) >> 20} MiB" in advice and "docs/first-import.md" in advice


def test_load_data_rows_escape_values_only_where_needed_and_never_lose_one() -> None:
    plain = (1, T, 1, 1, None, [("k", "https://example.com/?a=1")])
    assert property_rows(resolved(plain)) == (
        b"1\t2012-01-01 00:00:00\t1\t1\t\\N\t3\thttps://example.com/?a=1\n")
    for dirty in ("tab\there", "new\nline", "back\\slash", "nul\x00", "\\N"):
        rb = resolved(plain, (2, T, 1, 1, 1, [("k", dirty), ("k", None)]))
        lines = property_rows(rb).split(b"\n")
        assert lines[1].split(b"\t")[0] == b"2" and lines[2].split(b"\t")[0] == b"3"
        assert lines[1].split(b"\t")[-1] == tsv_text(dirty).encode()
        assert lines[2].split(b"\t")[-1] == b"\\N" and len(lines) == 4


def test_property_rows_skip_blacklisted_keys_and_keep_each_pairs_id() -> None:
    rb = resolved((10, T, 1, 2, 10, [("x", "secret"), ("k", "a\tb"), ("x", None), ("k", None)]),
                  dropped=frozenset({"x"}))
    assert list(rb.property_rows()) == [(11, T, 1, 2, 10, 3, "a\tb"), (13, T, 1, 2, 10, 3, None)]
    assert property_rows(rb) == (b"11\t2012-01-01 00:00:00\t1\t2\t10\t3\ta\\tb\n"
                                 b"13\t2012-01-01 00:00:00\t1\t2\t10\t3\t\\N\n")


async def test_a_bulk_load_outlives_a_pause_longer_than_the_servers_read_timeout(
        make_database: Any, private_mysql: str) -> None:
    """The users statement gets a packet only per megabyte of new names, and a slow source
    pauses every stream: the server must not give up on a quiet stream after net_read_timeout.
    (On the session's private server: the test changes a global setting.)"""
    database = make_database(server=private_mysql)
    store = open_store(settings_for(database))
    await store.open()
    try:
        await store.ensure_schema()
        [(default,)] = database.query("SELECT @@global.net_read_timeout")
        database.query("SET GLOBAL net_read_timeout = 1")  # the load's connections are new
        try:
            bulk = await store.begin_bulk_load()
        finally:
            database.query(f"SET GLOBAL net_read_timeout = {int(default)}")
        assert bulk is not None
        try:
            ids = await store.user_ids({"anon-1", "42"})
            await asyncio.sleep(2.5)
            await bulk.finish([])
        finally:
            bulk.close()
    finally:
        await store.close()
    assert ids == dict(database.query("SELECT name, id FROM users"))


async def test_users_interned_after_the_users_stream_commits_get_their_stored_ids(
        database: Database) -> None:
    """After a load ends (its users committed), a run redone with row inserts interns new
    users; without consecutive auto-increment ids (``innodb_autoinc_lock_mode`` 2, as the step
    unknown here) they must be looked up, never counted."""
    store = open_store(settings_for(database))
    await store.open()
    await store.ensure_schema()
    try:
        bulk = await store.begin_bulk_load()
        assert bulk is not None
        await store.user_ids({"anon-1", "anon-2"})
        await bulk.finish([])
        store._id_step = 0  # noqa: SLF001 - what lock mode 2 leaves it at
        ids = await store.user_ids({"anon-2", "new-1", "new-2", "new-3"})
    finally:
        await store.close()
    stored = dict(database.query("SELECT name, id FROM users"))
    assert len(stored) == 5 and all(stored[name] == uid for name, uid in ids.items())


async def test_a_bulk_load_looks_up_the_alias_pairs_it_holds_before_they_commit(
        database: Database) -> None:
    """A first import stores its alias pairs ahead in the load's open transaction; the alias
    cache's lookups see them there. Once the load is over, lookups go to the pool."""
    store = open_store(settings_for(database))
    await store.open()
    await store.ensure_schema()
    bulk = await store.begin_bulk_load()
    assert bulk is not None
    try:
        await bulk.add_aliases([("5", "anon-a", "2012-01-01 00:00:00"),
                                ("anon-a", "anon-b", "2012-01-01 00:00:01")])
        assert sorted(await store.alias_links(["anon-a"])) == [("5", "anon-a"), ("anon-a", "anon-b")]
        assert database.query("SELECT COUNT(*) FROM aliases") == [(0,)]  # others see nothing yet
    finally:
        bulk.close()  # rolled back
    assert await store.alias_links(["anon-a"]) == []
    await store.close()
