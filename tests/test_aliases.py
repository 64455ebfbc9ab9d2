"""The alias cache's rules (aliases.py) over a list of stored links, and the stores' reads of
the aliases table it asks for; test_import runs imports through it against real databases (a
small bound: groups dropped and looked up again)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Collection
from typing import Any

import pytest

from kmdb_async.aliases import AliasCache, NameFilter
from kmdb_async.store import base, open_store

from .conftest import settings_for


class Links:
    """Stored alias pairs; counts lookups, and can hold one until released."""

    def __init__(self, *pairs: tuple[str, str]) -> None:
        self.pairs = list(pairs)
        self.asked: list[set[str]] = []
        self.gate: asyncio.Event | None = None

    async def alias_links(self, names: Collection[str]) -> list[tuple[str, str]]:
        self.asked.append(set(names))
        if self.gate is not None:
            await self.gate.wait()
        return [(a, b) for a, b in self.pairs if a in names or b in names]

    async def load_aliases(self, limit: int) -> list[tuple[str, str]] | None:
        return None if len(self.pairs) > limit else list(self.pairs)

    async def alias_names(self) -> AsyncIterator[list[str]]:
        for a, b in self.pairs:
            yield [a, b]

    def names(self) -> list[str]:
        return [name for pair in self.pairs for name in pair]


def linked(cache: AliasCache, round_: int) -> list[str]:
    """Four names the cache takes for aliased (stored links of their own: none)."""
    names = [f"other-{round_}-{i}" for i in range(4)]
    for name in names:
        cache._maybe.add(name)
    return names


async def test_a_name_is_loaded_with_its_whole_group() -> None:
    links = Links(("anon-a", "anon-b"), ("anon-b", "anon-c"), ("5", "anon-c"), ("5", "anon-x"),
                  ("3", "4"))
    cache = AliasCache(links, 100, aliased=links.names())
    await cache.load(["anon-a", "7", "anon-never-linked"])
    # anon-a, then the member it reached (anon-b), then anon-c; never the numerics.
    # Nor a name the filter of aliased names lacks.
    assert links.asked == [{"anon-a"}, {"anon-b"}, {"anon-c"}]
    assert cache.graph.canonical("anon-a") == "5"
    assert sorted(cache.graph.group("anon-a").names()) == ["5", "anon-a", "anon-b", "anon-c"]  # type: ignore[union-attr]
    assert cache.graph.group("anon-x") is None  # 5 does not join anon-x's group to this one
    await cache.load(["anon-c", "anon-b"])
    assert len(links.asked) == 3  # loaded names are not asked again


async def test_a_complete_cache_never_looks_up() -> None:
    links = Links(("anon-a", "anon-b"))
    cache = AliasCache(links, 100)
    await cache.load(["anon-a", "anon-z"])
    assert links.asked == [] and cache.graph.group("anon-a") is None


async def test_groups_are_dropped_past_the_bound_only_once_their_links_are_stored() -> None:
    links = Links()
    committed = 0
    cache = AliasCache(links, 4, aliased=(), committed=lambda: committed)
    await cache.load(["anon-x", "anon-y"])
    cache.link("anon-x", "anon-y", seq=1)  # batch 1's link, not stored yet
    for round_ in range(3):  # two generations of other names go by
        await cache.load(linked(cache, round_))
        cache.trim()
    assert cache.graph.canonical("anon-y") == "anon-x"  # kept: it exists nowhere else

    committed = 1  # batch 1 committed (this list stands for the table: it is not there)
    for round_ in range(3, 6):
        await cache.load(linked(cache, round_))
        cache.trim()
    assert cache.graph.group("anon-y") is None  # dropped: a lookup would find it stored
    assert len(cache.graph) == 0 and len(cache._new) + len(cache._old) <= 8


async def test_names_met_again_stay_across_a_drop() -> None:
    links = Links(("anon-a", "anon-b"))
    cache = AliasCache(links, 4, aliased=links.names())
    await cache.load(["anon-a"])
    for round_ in range(4):
        await cache.load(["anon-b", *linked(cache, round_)])
        cache.trim()
    assert cache.graph.canonical("anon-b") == "anon-a"
    assert links.asked.count({"anon-a"}) == 1  # never looked up again


async def test_a_load_that_straddles_a_drop_keeps_nothing() -> None:
    links = Links(("anon-a", "anon-b"))
    cache = AliasCache(links, 2, aliased=links.names())
    links.gate = asyncio.Event()
    warming = asyncio.ensure_future(cache.load(["anon-a"]))  # a reader's, held in its lookup
    await asyncio.sleep(0)
    links.gate.set()
    links.gate = None
    await cache.load(linked(cache, 0))
    cache.trim()  # the resolver drops a generation meanwhile
    assert await warming is False
    assert cache.graph.group("anon-a") is None and "anon-a" not in cache._new
    await cache.load_all(["anon-a"])  # what the resolver does before it answers
    assert cache.graph.canonical("anon-b") == "anon-a"


async def test_read_ahead_is_held_until_past_the_bound_then_stored_and_looked_up() -> None:
    cache = AliasCache(Links(), 4)
    t = "2012-01-01 00:00:00"
    assert cache.link_ahead([("anon-a", "anon-b", t)]) == []
    assert cache.link_ahead([("anon-c", "anon-d", t)]) == []
    assert cache.complete and cache.graph.canonical("anon-d") == "anon-c"
    # Six names: more than the bound. Every pair read so far is to be stored now.
    stored = cache.link_ahead([("anon-e", "anon-f", t)])
    assert [p[:2] for p in stored] == [("anon-a", "anon-b"), ("anon-c", "anon-d"), ("anon-e", "anon-f")]
    assert not cache.complete and len(cache.graph) == 0
    assert cache.link_ahead([("5", "anon-g", t)]) == [("5", "anon-g", t)]
    assert all(name in cache._maybe for name in ("anon-a", "anon-f", "anon-g"))


async def test_a_first_import_whose_read_ahead_fit_stays_complete() -> None:
    """Its links are stored only with their batches: dropping one before would lose it."""
    cache = AliasCache(Links(), 4)
    t = "2012-01-01 00:00:00"
    cache.link_ahead([("anon-a", "anon-b", t), ("anon-c", "anon-d", t)])
    cache.end_link_ahead()
    cache.link("anon-x", "anon-y", seq=1)  # a link seen only while resolving: six names
    cache.trim()
    assert cache.complete and cache.graph.canonical("anon-b") == "anon-a"


async def test_a_complete_cache_past_its_bound_starts_looking_up() -> None:
    links = Links(("anon-a", "anon-b"))
    cache = await AliasCache.open(links, 4)
    assert cache.complete
    for i in range(3):
        cache.link(f"anon-{i}", f"anon-{i}-2", seq=1)
    cache.trim()
    assert not cache.complete
    assert cache.graph.canonical("anon-b") == "anon-a"  # still held, loaded
    assert all(name in cache._maybe for name in cache.graph.members())
    await cache.load(["anon-a", "anon-0-2", "anon-new"])
    assert links.asked == []  # held, or never linked


async def test_a_large_table_is_not_read_whole_but_its_names_fill_the_filter() -> None:
    links = Links(*[(f"anon-{i}", f"mail-{i}") for i in range(10)])
    cache = await AliasCache.open(links, 8)
    assert not cache.complete and len(cache.graph) == 0
    await cache.load(["anon-3", "anon-99"])
    assert links.asked == [{"anon-3"}, {"mail-3"}]
    assert cache.graph.canonical("mail-3") == "anon-3"


def test_the_name_filter_finds_every_name_added_and_few_others() -> None:
    rnd = random.Random(5)
    names = [f"user-{rnd.getrandbits(48):x}" for _ in range(150_000)]
    small = NameFilter(capacity=1000)  # grows: 1000, 2000, 4000, ... names per filter
    for name in names:
        small.add(name)
    assert all(name in small for name in names)
    others = [f"other-{i}" for i in range(100_000)]
    false = sum(name in small for name in others)
    assert false < 100_000 * 0.02  # about 1% per filter, and a few filters: under 2%
    assert len(small._filters) == 8


@pytest.mark.parametrize("kind", ["mariadb", "sqlite"])
async def test_a_store_reads_alias_names_by_pages_and_links_by_either_name(
        make_database: Any, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    database = make_database(kind)
    store = open_store(settings_for(database))
    await store.open()
    await store.ensure_schema()
    pairs = [("5", "anon-b"), ("anon-a", "anon-b"), ("anon-b", "anon-c"), ("anon-d", "anon-e"),
             ("6", "7")]
    for a, b in pairs:
        await store.execute("INSERT INTO aliases (name1, name2, t) VALUES (%s, %s, %s)",
                            (a, b, "2012-01-01 00:00:00"))
    monkeypatch.setattr(base, "PAGE", 2)
    try:
        pages = [page async for page in store.alias_names()]
        assert [len(page) for page in pages] == [4, 4, 2]
        assert sorted(name for page in pages for name in page) == sorted(n for p in pairs for n in p)
        assert await store.load_aliases(4) is None
        assert sorted(await store.load_aliases(5) or []) == sorted(pairs)
        assert sorted(set(await store.alias_links(["anon-b", "anon-x"]))) == pairs[:3]
    finally:
        await store.close()
