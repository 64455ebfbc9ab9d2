"""The alias cache's rules (aliases.py) over a list of stored links; test_import runs imports
through it against real databases (a small bound: groups dropped and looked up again)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from kmdb_async.aliases import AliasCache


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


async def test_a_name_is_loaded_with_its_whole_group() -> None:
    links = Links(("anon-a", "anon-b"), ("anon-b", "anon-c"), ("5", "anon-c"), ("5", "anon-x"),
                  ("3", "4"))
    cache = AliasCache(links, 100, complete=False)
    await cache.load(["anon-a", "7"])
    # anon-a, then the member it reached (anon-b), then anon-c; never the numerics.
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
    cache = AliasCache(links, 4, complete=False, committed=lambda: committed)
    await cache.load(["anon-x", "anon-y"])
    cache.link("anon-x", "anon-y", seq=1)  # batch 1's link, not stored yet
    for round_ in range(3):  # two generations of other names go by
        await cache.load([f"other-{round_}-{i}" for i in range(4)])
        cache.trim()
    assert cache.graph.canonical("anon-y") == "anon-x"  # kept: it exists nowhere else

    committed = 1  # batch 1 committed (this list stands for the table: it is not there)
    for round_ in range(3, 6):
        await cache.load([f"other-{round_}-{i}" for i in range(4)])
        cache.trim()
    assert cache.graph.group("anon-y") is None  # dropped: a lookup would find it stored
    assert len(cache.graph) == 0 and len(cache._new) + len(cache._old) <= 8


async def test_names_met_again_stay_across_a_drop() -> None:
    links = Links(("anon-a", "anon-b"))
    cache = AliasCache(links, 4, complete=False)
    await cache.load(["anon-a"])
    for round_ in range(4):
        await cache.load(["anon-b", *[f"other-{round_}-{i}" for i in range(4)]])
        cache.trim()
    assert cache.graph.canonical("anon-b") == "anon-a"
    assert links.asked.count({"anon-a"}) == 1  # never looked up again


async def test_a_load_that_straddles_a_drop_keeps_nothing() -> None:
    links = Links(("anon-a", "anon-b"))
    cache = AliasCache(links, 2, complete=False)
    links.gate = asyncio.Event()
    warming = asyncio.ensure_future(cache.load(["anon-a"]))  # a reader's, held in its lookup
    await asyncio.sleep(0)
    links.gate.set()
    links.gate = None
    await cache.load(["n1", "n2"])
    cache.trim()  # the resolver drops a generation meanwhile
    assert await warming is False
    assert cache.graph.group("anon-a") is None and "anon-a" not in cache._new
    await cache.load_all(["anon-a"])  # what the resolver does before it answers
    assert cache.graph.canonical("anon-b") == "anon-a"


async def test_read_ahead_past_the_bound_leaves_the_links_to_lookups() -> None:
    cache = AliasCache(Links(), 4)
    cache.link_ahead("anon-a", "anon-b")
    cache.link_ahead("anon-c", "anon-d")
    assert cache.complete and cache.graph.canonical("anon-d") == "anon-c"
    cache.link_ahead("anon-e", "anon-f")  # six names: more than the bound
    assert not cache.complete and len(cache.graph) == 0
    cache.link_ahead("anon-g", "anon-h")
    assert len(cache.graph) == 0


async def test_a_complete_cache_past_its_bound_starts_looking_up() -> None:
    links = Links(("anon-a", "anon-b"))
    cache = AliasCache(links, 4, complete=True)
    cache.graph.link_all(links.pairs)
    for i in range(3):
        cache.link(f"anon-{i}", f"anon-{i}-2", seq=1)
    cache.trim()
    assert not cache.complete
    assert cache.graph.canonical("anon-b") == "anon-a"  # still held, loaded
    await cache.load(["anon-a", "anon-new"])
    assert links.asked == [{"anon-new"}]
