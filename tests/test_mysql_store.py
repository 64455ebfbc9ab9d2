"""The MariaDB store's own edges: concurrent interning and the first import's LOAD DATA text."""

from __future__ import annotations

import asyncio
import random

from kmdb_async.store import open_store
from kmdb_async.store.loaddata import property_rows, tsv_text

from .conftest import Database, settings_for


async def test_concurrent_interning_gives_every_name_its_stored_id(database: Database) -> None:
    store = open_store(settings_for(database))
    await store.open()
    await store.ensure_schema()
    rng = random.Random(7)
    pool = [f"anon-{i:x}" for i in range(6000)] + [str(i) for i in range(2000)]
    batches = [rng.sample(pool, 1100) for _ in range(24)]  # overlapping, over 1000 each
    try:
        answers = await asyncio.gather(*(store.user_ids(set(names)) for names in batches))
    finally:
        await store.close()
    stored = dict(database.query("SELECT name, id FROM users"))
    for names, ids in zip(batches, answers, strict=True):
        assert set(ids) == set(names)
        assert all(stored[name] == ids[name] for name in names)


def test_load_data_text_escapes_exactly_what_the_format_needs() -> None:
    assert tsv_text(None) == "\\N"
    assert tsv_text("plain café 😀") == "plain café 😀"
    assert tsv_text("a\tb\nc\\d\x00e") == "a\\tb\\nc\\\\d\\0e"
    assert tsv_text("\\N") == "\\\\N"  # the text backslash-N, not NULL
    row = property_rows([(5, "2012-01-01 00:00:00", 1, 2, None, 3, None)])
    assert row == b"5\t2012-01-01 00:00:00\t1\t2\t\\N\t3\t\\N\n"


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
    assert f"innodb_buffer_pool_size is {int(pool) >> 20} MiB" in advice and "README" in advice


def test_load_data_rows_escape_values_only_where_needed_and_never_lose_one() -> None:
    plain = [(1, "2012-01-01 00:00:00", 1, 1, None, 3, "https://example.com/?a=1")]
    assert property_rows(plain) == b"1\t2012-01-01 00:00:00\t1\t1\t\\N\t3\thttps://example.com/?a=1\n"
    for dirty in ("tab\there", "new\nline", "back\\slash", "nul\x00", "\\N"):
        rows = [*plain, (2, "2012-01-01 00:00:00", 1, 1, 1, 3, dirty), (3, "2012-01-01 00:00:00",
                                                                          1, 1, 1, 3, None)]
        lines = property_rows(rows).split(b"\n")
        assert lines[1].split(b"\t")[-1] == tsv_text(dirty).encode()
        assert lines[2].split(b"\t")[-1] == b"\\N" and len(lines) == 4
