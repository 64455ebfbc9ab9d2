"""The alias graph a run needs: loaded from the ``aliases`` table as names come up, bounded.

The ``aliases`` table holds every link (the truth); the graph in memory (identity.AliasGraph)
is a cache of it, in one of two modes:

- **complete**: the graph holds every stored link, so a name it does not hold was never
  linked. A run starts so when the table is small enough to read whole (a first import reads
  its export's aliases ahead), and stays so while the graph holds at most ``size`` names.
- **by lookup**: past that, the graph holds the groups of the names met lately. A name met for
  the first time (or again after it was dropped) is *loaded*: its stored links are read, and
  those of every member they reach, so its group is whole. Only names that a filter of
  every aliased name (NameFilter, 10 bits a name) may hold are read; the others, most names
  of an export, were never linked. Groups are dropped in two generations, like the ids
  cache: when ``size / 2`` names were loaded since the last drop, the groups of names not met
  since the drop before go, except those with a link not yet stored (a batch resolved but
  not committed). A name whose group is not whole is never answered: every member of a
  loaded group is loaded.

Loads run concurrently (readers warm the cache for the batches they prepare) while the one
resolver links and drops: a load keeps what it read only if nothing was dropped meanwhile,
else the resolver loads those names again before it answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Iterable
from typing import Protocol

from .identity import AliasGraph, AliasGroup, is_numeric

NEVER = 1 << 62  # a batch number no run reaches: committed() before a run has batches
PROBES = 6  # bits set per name in a NameFilter: with 10 bits per name, 0.8% false positives


class NameFilter:
    """A Bloom filter of names: a name added is always found, one never added is found with a
    probability of about 1%. When full it is followed by one twice as large (10 bits a name)."""

    def __init__(self, names: Iterable[str] = (), capacity: int = 1 << 16) -> None:
        self._filters: list[tuple[bytearray, int]] = []  # bits, mask (a power of two less one)
        self._room = 0  # names the last filter takes before the next one starts
        self._capacity = capacity // 2
        for name in names:
            self.add(name)

    def add(self, name: str) -> None:
        if self._room == 0:
            self._capacity *= 2
            size = 1 << (self._capacity * 10 - 1).bit_length()  # bits
            self._filters.append((bytearray(size // 8), size - 1))
            self._room = self._capacity
        self._room -= 1
        bits, mask = self._filters[-1]
        h = hash(name)
        a, b = h & 0xFFFFFFFF, (h >> 32) | 1
        for i in range(PROBES):
            p = (a + i * b) & mask
            bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, name: str) -> bool:
        h = hash(name)
        a, b = h & 0xFFFFFFFF, (h >> 32) | 1
        for bits, mask in self._filters:
            for i in range(PROBES):
                p = (a + i * b) & mask
                if not bits[p >> 3] >> (p & 7) & 1:
                    break
            else:
                return True
        return False


class LinkStore(Protocol):
    """Where the links are stored."""

    async def alias_links(self, names: Collection[str]) -> list[tuple[str, str]]:
        """Every stored alias pair with one of ``names`` on either side."""
        ...

    async def load_aliases(self, limit: int) -> list[tuple[str, str]] | None:
        """Every stored alias pair, or None when there are more than ``limit``."""
        ...

    def alias_names(self) -> AsyncIterator[list[str]]:
        """Both names of every stored alias pair, a page at a time."""
        ...


class AliasCache:
    """The groups of the identities a run meets; see the module docstring."""

    def __init__(self, store: LinkStore, size: int, aliased: Iterable[str] | None = None,
                 committed: Callable[[], int] = lambda: NEVER) -> None:
        """Complete (and empty) without ``aliased``; else by lookup, ``aliased`` naming every
        identity of a stored link."""
        self.graph = AliasGraph()
        self.complete = aliased is None
        self._maybe = NameFilter(aliased) if aliased is not None else NameFilter()
        self.committed = committed  # the highest batch number whose links are all stored
        self._store = store
        self._half = max(1, size // 2)
        self._size = size
        self._new: set[str] = set()  # names loaded since the last drop (or met again)
        self._old: set[str] = set()  # names loaded before it
        self._pending: dict[str, int] = {}  # name -> the last batch that linked it
        self.epoch = 0  # drops so far: a load at the same epoch still holds
        self._ahead: list[tuple[str, str, str]] = []  # pairs read ahead, not stored yet
        self._whole = False  # complete for the whole run, past the bound if need be

    @classmethod
    async def open(cls, store: LinkStore, size: int) -> AliasCache:
        """The cache at the start of a run: the stored links read whole when there are few
        (at most two names each), else the names of every stored link, for the filter."""
        stored = await store.load_aliases(size // 2)
        if stored is not None:
            cache = cls(store, size)
            cache.graph.link_all(stored)
            return cache
        cache = cls(store, size, aliased=())
        async for page in store.alias_names():  # a page at a time: only the filter stays
            for name in page:
                cache._maybe.add(name)
        return cache

    def _by_lookup(self) -> None:
        """Leave the complete mode: the filter learns every name the graph holds."""
        self.complete = False
        self._maybe = NameFilter(self.graph.members())
        self.epoch += 1

    # -- what the resolver asks ----------------------------------------------------------

    def link(self, a: str, b: str, seq: int) -> AliasGroup | None:
        """Record the alias ``a ~ b`` of batch ``seq`` (its names loaded); see AliasGraph.link."""
        for name in (a, b):
            if not is_numeric(name):
                self._pending[name] = seq
                if not self.complete:  # its group is whole: met now, and aliased from now on
                    self._new.add(name)
                    self._maybe.add(name)
        return self.graph.link(a, b)

    def link_ahead(self, pairs: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        """Alias pairs (name1, name2, t) read ahead by a first import: returns those to store
        now. While complete, none: the batches store them as they are resolved (the graph
        answers meanwhile). Past the bound, every pair read ahead so far and from now on: the
        rows' groups are then looked up from them."""
        if self.complete:
            self.graph.link_all((a, b) for a, b, _ in pairs)
            self._ahead.extend(pairs)
            if len(self.graph) <= self._size:
                return []
            self._by_lookup()  # too many to hold: the stored links will be the truth
            self.graph = AliasGraph()
            pairs, self._ahead = self._ahead, []
            return pairs
        for a, b, _ in pairs:
            for name in (a, b):
                if not is_numeric(name):
                    self._maybe.add(name)
        return pairs

    def end_link_ahead(self) -> None:
        """The read-ahead is over. Still complete, the cache stays so for the run: its links
        are stored only as their batches are, so none may be dropped before."""
        self._ahead = []
        self._whole = self.complete

    async def load(self, names: Iterable[str]) -> bool:
        """Make the groups of ``names`` whole in the graph; False when a drop while it read
        left some of them unmarked (the caller loads them again if it must answer)."""
        if self.complete:
            return True
        new, old, maybe = self._new, self._old, self._maybe
        wanted = {name for name in names
                  if name not in new and name in maybe and not is_numeric(name)}
        if not wanted:
            return True
        met = wanted & old  # loaded before the last drop: kept one more generation
        new.update(met)
        wanted -= met
        if not wanted:
            return True
        epoch, read, links = self.epoch, set(wanted), []
        while wanted:  # each round reads the links of the members the last one reached
            found = await self._store.alias_links(wanted)
            links.extend(found)
            wanted = {name for pair in found for name in pair
                      if name not in read and not is_numeric(name)
                      and name not in self._new and name not in self._old}
            read |= wanted
        if self.epoch != epoch:  # a drop meanwhile: what was known then may be gone
            return False
        self.graph.link_all(links)
        self._new.update(read)
        return True

    async def load_all(self, names: Collection[str]) -> None:
        """``load`` until every group of ``names`` is whole (only the resolver drops, so its
        own load is never undone; a reader's warm-up may have been)."""
        while not await self.load(names):
            pass

    def trim(self) -> None:
        """Drop what the bound does not allow (the resolver calls it between batches)."""
        committed = self.committed()
        if len(self._pending) > 4096:
            self._pending = {n: s for n, s in self._pending.items() if s > committed}
        if self.complete:
            if len(self.graph) <= self._size or self._whole:
                return
            self._by_lookup()  # from now on names are loaded: all the graph holds is
            self._new = set(self.graph.members())
        if len(self._new) < self._half:
            return
        new, pending, graph = self._new, self._pending, self.graph
        kept: set[str] = set()
        seen: set[int] = set()
        for name in self._old - new:
            group = graph.group(name)
            if group is None or id(group) in seen:
                continue
            seen.add(id(group))
            members = group.members
            if any(m in new or pending.get(m, 0) > committed for m in members):
                kept.update(members)  # met lately, or a link of it is not stored yet
            else:
                graph.drop(group)
        self._old, self._new = new | kept, set()
        self.epoch += 1
