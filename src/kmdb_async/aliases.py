"""The alias graph a run needs: loaded from the ``aliases`` table as names come up, bounded.

The ``aliases`` table holds every link (the truth); the graph in memory (identity.AliasGraph)
is a cache of it, in one of two modes:

- **complete**: the graph holds every stored link, so a name it does not hold was never
  linked. A run starts so when the table is small enough to read whole (a first import reads
  its export's aliases ahead), and stays so while the graph holds at most ``size`` names.
- **by lookup**: past that, the graph holds the groups of the names met lately. A name met for
  the first time (or again after it was dropped) is *loaded*: its stored links are read, and
  those of every member they reach, so its group is whole. Groups are dropped in two
  generations, like the ids cache: when ``size / 2`` names were loaded since the last drop,
  the groups of names not met since the drop before go, except those with a link not yet
  stored (a batch resolved but not committed). A name whose group is not whole is never
  answered: every member of a loaded group is loaded.

Loads run concurrently (readers warm the cache for the batches they prepare) while the one
resolver links and drops: a load keeps what it read only if nothing was dropped meanwhile,
else the resolver loads those names again before it answers.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Protocol

from .identity import AliasGraph, AliasGroup, is_numeric

NEVER = 1 << 62  # a batch number no run reaches: committed() before a run has batches


class LinkStore(Protocol):
    """Where the links are stored."""

    async def alias_links(self, names: Collection[str]) -> list[tuple[str, str]]:
        """Every stored alias pair with one of ``names`` on either side."""
        ...


class AliasCache:
    """The groups of the identities a run meets; see the module docstring."""

    def __init__(self, store: LinkStore, size: int, complete: bool = True,
                 committed: Callable[[], int] = lambda: NEVER) -> None:
        self.graph = AliasGraph()
        self.complete = complete
        self.committed = committed  # the highest batch number whose links are all stored
        self.loads = 0  # lookups of the aliases table (each a round trip or a few)
        self._store = store
        self._half = max(1, size // 2)
        self._size = size
        self._new: set[str] = set()  # names loaded since the last drop (or met again)
        self._old: set[str] = set()  # names loaded before it
        self._pending: dict[str, int] = {}  # name -> the last batch that linked it
        self._epoch = 0  # drops so far

    # -- what the resolver asks ----------------------------------------------------------

    def link(self, a: str, b: str, seq: int) -> AliasGroup | None:
        """Record the alias ``a ~ b`` of batch ``seq`` (its names loaded); see AliasGraph.link."""
        pending = self._pending
        if not is_numeric(a):
            pending[a] = seq
        if not is_numeric(b):
            pending[b] = seq
        return self.graph.link(a, b)

    def link_ahead(self, a: str, b: str) -> None:
        """A link read ahead by a first import (and stored with it): kept while complete."""
        if self.complete:
            self.graph.link(a, b)
            if len(self.graph) > self._size:  # too many to hold: the stored links are the truth
                self.complete = False
                self.graph = AliasGraph()

    async def load(self, names: Iterable[str]) -> bool:
        """Make the groups of ``names`` whole in the graph; False when a drop while it read
        left some of them unmarked (the caller loads them again if it must answer)."""
        if self.complete:
            return True
        new, old = self._new, self._old
        wanted = {name for name in names if name not in new and not is_numeric(name)}
        if not wanted:
            return True
        met = wanted & old  # loaded before the last drop: kept one more generation
        new.update(met)
        wanted -= met
        if not wanted:
            return True
        epoch, read, links = self._epoch, set(wanted), []
        while wanted:  # each round reads the links of the members the last one reached
            self.loads += 1
            found = await self._store.alias_links(wanted)
            links.extend(found)
            wanted = {name for pair in found for name in pair
                      if name not in read and not is_numeric(name)
                      and name not in self._new and name not in self._old}
            read |= wanted
        if self._epoch != epoch:  # a drop meanwhile: what was known then may be gone
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
            if len(self.graph) <= self._size:
                return
            self.complete = False  # from now on names are loaded: all the graph holds is
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
        self._epoch += 1
