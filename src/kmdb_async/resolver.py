"""Resolve a batch: filters, alias links, canonical users, interned keys -> rows to write.

One Resolver owns the alias cache (aliases.py) for the whole run and resolves batches one at
a time, so every batch sees the links of all batches resolved before it. Rows get ids derived
from their place in the export (revision and byte offset), which makes every write idempotent.

Re-pointing: rows point at the canonical user their group had when they were written. A batch
whose alias records join groups carries, for every group it touched, the new canonical user and
the users that were canonical before (Repoint): only rows pointing at those move, so the cost
is what moves (a new member joining a group of 100,000 moves that member's rows), never the
size of the group. The writer applies it after all earlier-resolved batches have committed
(see pipeline); rows resolved later already use the new canonical.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .aliases import AliasCache
from .batching import Batch
from .identity import AliasGroup, alias_pair, is_numeric
from .records import Record

GIANT_GROUP = 10_000  # identities in one alias group that the summary and status point out
REVISION_SHIFT = 40  # row id = revision << 40 | byte offset: 1 TiB per revision
MAX_REVISION = (1 << 23) - 1  # keeps row ids inside a signed 64-bit integer


def row_id(revision: int, offset: int) -> int:
    """Id of the row of the line at ``offset``; a line's properties use ``offset + index``.

    Each property takes at least 5 bytes of its line, so ``offset + index`` stays inside the
    line's own byte range and never meets another line's ids.
    """
    return (revision << REVISION_SHIFT) | offset


def sql_datetime(t: int) -> str:
    """Unix seconds as a UTC DATETIME literal (memoized: exports come in bursts of seconds)."""
    text = _STAMPS.get(t)
    if text is None:
        if len(_STAMPS) >= 100_000:
            _STAMPS.clear()
        text = _STAMPS[t] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
    return text


_STAMPS: dict[int, str] = {}


def alias_pairs(records: list[Record]) -> list[tuple[str, str, str]]:
    """Each pair of the alias records among ``records`` once: (name1, name2, its earliest t
    as DATETIME text)."""
    earliest: dict[tuple[str, str], int] = {}
    for r in records:
        if r.p2 is not None:
            pair = alias_pair(r.p, r.p2)
            earliest[pair] = min(r.t, earliest.get(pair, r.t))
    return [(a, b, sql_datetime(t)) for (a, b), t in earliest.items()]


@dataclass(frozen=True)
class Filters:
    """The filter tables, read at the start of a run (SPEC section 4)."""

    ignored_users: frozenset[str] = frozenset()
    whitelisted_events: frozenset[str] = frozenset()
    blacklisted_properties: frozenset[str] = frozenset()

    def keeps(self, record: Record) -> bool:
        """False when the record is skipped whole (ignored identity, event not whitelisted)."""
        if record.p in self.ignored_users or (record.p2 is not None and record.p2 in self.ignored_users):
            return False
        if record.p2 is None and record.n is not None and self.whitelisted_events:
            return record.n in self.whitelisted_events
        return True


@dataclass(slots=True)
class Repoint:
    """Move a group's rows that point at a former canonical user onto ``canonical_id``.

    A row points at the canonical of its origin's group as it stood when the row was written,
    a name of that group. Every row pointing at a non-numeric name is a row of that name's one
    group, so ``names`` move whole. A numeric identity's own rows point at itself, and it may
    be attached to several groups: rows pointing at one of ``numerics`` move only when their
    origin is one of the group's ``members`` (listed only then).
    """

    canonical_id: int
    names: list[int]  # users.id of non-numeric former canonicals
    numerics: list[int] = field(default_factory=list)  # users.id of numeric former canonicals
    members: list[int] = field(default_factory=list)  # users.id of the group's members


EventRow = tuple[int, str, int, int, int]  # id, t, n (keys.id), user_id, origin_user_id
# id, t, user_id, origin_user_id, event_id, key (keys.id), value
PropertyRow = tuple[int, str, int, int, int | None, int, str | None]
# The property rows of one line: the id of its first property, t, user_id, origin_user_id,
# event_id, and the line's (key, value) pairs; the i-th pair's row has id ``first + i``. Rows
# are written from these (ResolvedBatch.property_rows, the bulk load's text) instead of a
# tuple per row: the line's shared columns are handled once.
PropertySet = tuple[int, str, int, int, int | None, list[tuple[str, str | None]]]


@dataclass(slots=True)
class ResolvedBatch:
    """Everything one batch writes; rows in the column order of the store."""

    batch: Batch
    seq: int = 0
    events: list[EventRow] = field(default_factory=list)
    property_sets: list[PropertySet] = field(default_factory=list)
    keys: dict[str, int] = field(default_factory=dict)  # keys.id of the pairs' keys
    dropped: frozenset[str] = frozenset()  # blacklisted keys: their pairs are not rows
    properties: int = 0  # property rows
    aliases: list[tuple[str, str, str]] = field(default_factory=list)  # name1, name2, t
    repoints: list[Repoint] = field(default_factory=list)
    alias_records: int = 0  # alias records imported
    skipped: int = 0  # records dropped by filters
    truncated: int = 0  # values cut to 65,535 characters

    @property
    def links(self) -> bool:
        """True when the batch re-points rows and so must follow every earlier batch."""
        return bool(self.repoints)

    def property_rows(self) -> Iterator[PropertyRow]:
        """The batch's property rows, one tuple each."""
        keys, dropped = self.keys, self.dropped
        for first, t, user, origin, event_id, pairs in self.property_sets:
            for index, (key, value) in enumerate(pairs):
                if key not in dropped:
                    yield first + index, t, user, origin, event_id, keys[key], value


@dataclass(slots=True)
class Prepared:
    """A batch with the filters applied and its users' and keys' ids (Resolver.prepare)."""

    batch: Batch
    kept: list[Record]  # records the filters keep
    users: dict[str, int]  # users.id of every _p, _p2 and canonical of kept records
    keys: dict[str, int]  # keys.id of every event name and stored property key
    epoch: int  # the alias cache's epoch when it held the records' groups, else -1


class IdStore(Protocol):
    """What the resolver needs from the database: ids of users and keys, created when new."""

    async def user_ids(self, names: Collection[str]) -> dict[str, int]: ...
    async def key_ids(self, strings: Collection[str]) -> dict[str, int]: ...


class Resolver:
    """Turns batches into rows, in the order they are handed in."""

    def __init__(self, store: IdStore, aliases: AliasCache, filters: Filters,
                 repoint: bool = True) -> None:
        self._store = store
        self._aliases = aliases
        self.filters = filters
        self._seq = 0
        # False for a first import's bulk load: its aliases are linked ahead (link_ahead), and
        # the few links found only while resolving are re-pointed once, at its end.
        self._repoints = repoint
        self._late: dict[str, None] = {}  # a member of each group linked late (bulk load)
        # A member of each group of at least GIANT_GROUP identities this run linked names
        # into (a shared device, a bot, a bad _p2 such as "undefined"): (canonical, size).
        self._giants: dict[str, tuple[str, int]] = {}

    async def prepare(self, batch: Batch) -> Prepared:
        """Apply the filters and intern the users and keys of a batch's records. Needs no
        alias link: readers run it concurrently, so the database round trips of many batches
        overlap instead of queueing in front of the one resolver."""
        kept = [r for r in batch.records if self.filters.keeps(r)]
        names = {r.p for r in kept}
        linked = [r.p2 for r in kept if r.p2 is not None]
        aliases = self._aliases
        whole = await aliases.load([*names, *linked])  # ahead of resolve, which then has them
        epoch = aliases.epoch if whole else -1
        # Canonical users as the graph stands now: final for a first import (its aliases are
        # linked ahead); otherwise resolve looks up the few that change before it runs.
        names.update(aliases.graph.canonicals(names).values())
        names.update(linked)
        users = await self._store.user_ids(names)
        keys = await self._store.key_ids(self._strings(kept))
        return Prepared(batch, kept, users, keys, epoch)

    async def resolve(self, prepared: Prepared) -> ResolvedBatch:
        """Rows of a prepared batch, with the links of every batch resolved before it."""
        batch, kept, users = prepared.batch, prepared.kept, prepared.users
        out = ResolvedBatch(batch)
        self._seq += 1
        out.seq = self._seq
        aliases = self._aliases
        if prepared.epoch != aliases.epoch:  # groups dropped since prepare loaded them
            await aliases.load_all({name for r in kept for name in (r.p, r.p2) if name is not None})
        graph = aliases.graph
        out.skipped = len(batch.records) - len(kept)
        out.alias_records = sum(1 for r in kept if r.p2 is not None)
        out.aliases = alias_pairs(kept)
        touched: dict[str, list[str]] = {}  # a member of each linked group -> canonicals before
        for r in kept:
            if r.p2 is not None:
                # The canonicals before a new link: a numeric side is its own, and the group's
                # rows never point at it unless it was the group's, the other side's canonical.
                before = None if graph.linked(r.p, r.p2) else [
                    graph.canonical(n) for n in (r.p, r.p2) if not is_numeric(n)]
                group = aliases.link(r.p, r.p2, out.seq)
                if group is not None:
                    if before is not None:
                        touched.setdefault(group.members[0], []).extend(before)
                    if len(group.members) >= GIANT_GROUP:
                        self._giants[r.p if not is_numeric(r.p) else r.p2] = (
                            group.canonical, len(group.members) + len(group.numerics))
        if not self._repoints:
            self._late.update(dict.fromkeys(touched))
            touched = {}
        # The groups touched, each with its canonicals before the batch: the earlier sides'
        # canonicals of every link (an in-batch one is a name of the group too: harmless).
        formers: dict[int, tuple[AliasGroup, set[str]]] = {}
        for member, sides in touched.items():
            group = graph.group(member)
            assert group is not None
            formers.setdefault(id(group), (group, set()))[1].update(sides)

        # Canonical users (prepare looked them up as the graph stood then) and the formers.
        origins = {r.p for r in kept if r.p2 is None}
        linked = graph.canonicals(origins)  # the others are their own canonical
        names = {c for c in linked.values() if c not in users}
        for group, olds in formers.values():
            names.update(n for n in (group.canonical, *olds) if n not in users)
        if names:
            users.update(await self._store.user_ids(names))

        for group, olds in formers.values():
            repoint = await self._repoint(group, olds, users)
            if repoint is not None:
                out.repoints.append(repoint)
        ids = {p: (users[p], users[p]) for p in origins}
        ids.update({p: (users[p], users[c]) for p, c in linked.items()})
        self._rows(batch.revision, kept, ids, prepared.keys, out)
        aliases.trim()
        return out

    def link_ahead(self, records: list[Record]) -> list[tuple[str, str, str]]:
        """Link a first import's alias records before its rows are resolved (AliasScanner), so
        the rows get their groups' final canonical users and need no re-pointing. Returns the
        pairs (name1, name2, earliest t) to store ahead of the rows: none while the alias
        cache holds every link (the batches store them), all once it cannot (the rows'
        groups are then looked up from them)."""
        keeps = self.filters.keeps
        return self._aliases.link_ahead(alias_pairs([r for r in records if keeps(r)]))

    def end_link_ahead(self) -> None:
        """The read-ahead is over (see AliasCache.end_link_ahead)."""
        self._aliases.end_link_ahead()

    async def late_repoints(self) -> list[Repoint]:
        """Re-points of the groups linked while resolving a first import (not ahead)."""
        return await self.repoints_of(self._late)

    def late_names(self) -> list[str]:
        """A member of each group linked while resolving a first import (not ahead)."""
        return list(self._late)

    async def repoints_of(self, names: Collection[str]) -> list[Repoint]:
        """Re-points of the groups of ``names`` from every other name of each: rows written
        before a late link point at names of the group (linear in the group; once per group,
        at the end of a first import)."""
        await self._aliases.load_all(names)
        graph = self._aliases.graph
        groups = list({id(g): g for g in map(graph.group, names) if g is not None}.values())
        users: dict[str, int] = {}
        found = [await self._repoint(g, set(g.names()), users) for g in groups]
        return [r for r in found if r is not None]

    def _strings(self, records: list[Record]) -> set[str]:
        strings = {k for r in records for k, _ in r.props}
        strings.update([r.n for r in records if r.n is not None and r.p2 is None])
        return strings - self.filters.blacklisted_properties

    async def _repoint(self, group: AliasGroup, formers: set[str],
                       users: dict[str, int]) -> Repoint | None:
        """The re-point of ``group`` from the canonicals in ``formers``; None when none moves.
        ``users`` (ids known so far) learns the ids it lacked."""
        formers.discard(group.canonical)
        if not formers:
            return None
        wanted = {n for n in (group.canonical, *formers) if n not in users}
        numerics = [n for n in formers if is_numeric(n)]
        if numerics:
            wanted.update(n for n in group.members if n not in users)
        if wanted:
            users.update(await self._store.user_ids(wanted))
        return Repoint(
            canonical_id=users[group.canonical],
            names=sorted(users[n] for n in formers if not is_numeric(n)),
            numerics=sorted(users[n] for n in numerics),
            members=sorted(users[n] for n in group.members) if numerics else [],
        )

    def giants(self) -> dict[str, int]:
        """The groups of at least GIANT_GROUP identities this run linked names into, as
        they stand now: canonical identity -> identities (members and attached numerics)."""
        graph, found = self._aliases.graph, dict[str, int]()
        for member, (canonical, size) in self._giants.items():
            group = graph.group(member)
            if group is not None:  # else dropped from the cache: as last seen
                canonical, size = group.canonical, len(group.members) + len(group.numerics)
            found[canonical] = max(size, found.get(canonical, 0))
        return found

    def _rows(
        self,
        revision: int,
        records: list[Record],
        ids: dict[str, tuple[int, int]],
        keys: dict[str, int],
        out: ResolvedBatch,
    ) -> None:
        """Rows of the batch's events and property sets; ``ids``: (origin, canonical user)."""
        blacklist = out.dropped = self.filters.blacklisted_properties
        out.keys = keys
        events, sets = out.events.append, out.property_sets.append
        stamps = {t: sql_datetime(t) for t in {r.t for r in records}}  # a batch's few seconds
        high = revision << REVISION_SHIFT  # row_id, inlined: the hot loop
        pairs = 0
        for r in records:
            if r.p2 is not None:
                continue
            t = stamps[r.t]
            origin, user = ids[r.p]
            base = high | r.offset
            event_id = None
            if r.n is not None:
                event_id = base
                events((base, t, keys[r.n], user, origin))
            if r.props:
                sets((base, t, user, origin, event_id, r.props))
                pairs += len(r.props)
        if blacklist:
            pairs = sum([key not in blacklist for s in out.property_sets for key, _ in s[5]])
        out.properties = pairs
        out.truncated += sum([r.truncated for r in records])  # alias records have none
