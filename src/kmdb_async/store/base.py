"""What every store shares: the id caches and the reads and writes that are portable SQL.

A store subclasses ``SQLStore`` and supplies ``execute`` (one statement, ``%s`` placeholders,
retried when transient), ``_intern`` (ids of names, inserting missing ones) and the
dialect-specific writes. The pipeline only ever sees these methods.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from ..records import MAX_NAME, Record
from ..resolver import Filters, Repoint, ResolvedBatch
from ..settings import Settings
from . import schema
from .schema import ALIASES, EVENTS, KEYS, PROPERTIES, REVISIONS, RUNS, USERS

if TYPE_CHECKING:
    from .loaddata import BulkLoad

#: The re-points of the groups of some identities (the resolver's ``repoints_of``).
RepointsFor = Callable[[Collection[str]], Awaitable[list[Repoint]]]

#: The commands that change a database's tables, one at a time: each holds the database's
#: lock while it runs, and one that finds it held refuses, naming the holder.
LOCK_HOLDERS = ("import", "flush", "partition", "filter change")
FILTER_CHUNK = 500  # names per IN (...) lookup
PAGE = 50_000  # rows per read of a table too large to hold
# The alias cache's lookup: every stored pair with one of ``names`` (an SQL list) on either side.
ALIAS_LINKS = (f"SELECT `name1`, `name2` FROM `{ALIASES}` WHERE `name1` IN ({{names}}) UNION ALL "
               f"SELECT `name1`, `name2` FROM `{ALIASES}` WHERE `name2` IN ({{names}})")


class IdCache:
    """Ids by name (users.id, keys.id), bounded: two generations, the older dropped whole when
    the newer fills (a name looked up in the older moves to the newer). Cheaper than a true
    LRU's reordering on every hit; holds between ``size / 2`` and ``size`` names.

    ``complete`` is True while the cache holds every row of its table (the table was empty
    when the import began and nothing was dropped since): a name it lacks is then new, and a
    store may insert it without looking it up first. While complete, hits are not promoted:
    the older generation is dropped only once ``size`` names are cached, not ``size / 2``
    new ones plus the hits that refilled the newer.
    """

    def __init__(self, size: int) -> None:
        self._half = max(1, size // 2)
        self._new: dict[str, int] = {}
        self._old: dict[str, int] = {}
        self.complete = False

    def lookup(self, names: Collection[str]) -> tuple[dict[str, int], list[str]]:
        """The cached ids among ``names``, and the names not cached."""
        new, old = self._new, self._old
        found: dict[str, int] = {}
        missing: list[str] = []
        for name in names:
            uid = new.get(name)
            if uid is None:
                uid = old.get(name)
                if uid is None:
                    missing.append(name)
                    continue
            found[name] = uid
        if self.complete:  # keep every name for as long as the bound allows (no promotion)
            return found, missing
        promoted = {name: uid for name, uid in found.items() if name not in new}
        if promoted:
            self.add(promoted)
        return found, missing

    def add(self, ids: dict[str, int]) -> dict[str, int]:
        """Cache ``ids`` (the older generation goes when the newer is full); returns it."""
        self._new.update(ids)
        if len(self._new) >= self._half:
            if self._old:
                self.complete = False
            self._old, self._new = self._new, {}
        return ids

    def clear(self) -> None:
        self._new.clear()
        self._old.clear()
        self.complete = False

    def __len__(self) -> int:
        return len(self._new) + len(self._old.keys() - self._new.keys())


class SQLStore:
    """The part of a store written once for every database."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._users = IdCache(settings.user_cache_size)
        self._keys = IdCache(1 << 40)  # event names and property keys: a few thousand at most
        # Bytes of one SQL statement at most (MariaDB/MySQL's max_allowed_packet), or None
        # where statements of any size are taken.
        self.statement_bytes: int | None = None

    def per_statement(self, most: int, item_bytes: int) -> int:
        """Items of up to ``item_bytes`` bytes of SQL each that one statement may carry:
        ``most``, fewer when ``statement_bytes`` is smaller (1 KiB is kept for the rest)."""
        if self.statement_bytes is None:
            return most
        return max(1, min(most, (self.statement_bytes - 1024) // item_bytes))

    def oversized(self) -> Callable[[Record], str | None] | None:
        """A check of a decoded line against what the database can store in one statement:
        it returns why not (the line is rejected) or None; None itself when any line fits."""
        return None

    # -- what each database implements ---------------------------------------------------

    async def open(self, create: bool = True) -> None:
        """Connect, creating the database when it is missing; with ``create`` False a missing
        database is a TerminalError instead (for commands that change nothing)."""
        raise NotImplementedError

    async def table_names(self) -> set[str]:
        """Names of the tables that exist in the database."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement with ``%s`` placeholders, retried when transient; returns its rows."""
        raise NotImplementedError

    async def ensure_schema(self) -> None:
        """Create every missing table (idempotent)."""
        raise NotImplementedError

    async def acquire_import_lock(self, holder: str = "import") -> None:
        """Hold this database's lock until close for ``holder`` (one of LOCK_HOLDERS), or
        refuse (TerminalError) naming the command that holds it."""
        raise NotImplementedError

    async def keep_import_lock(self) -> None:
        """Make sure the import lock is still ours (the embedded store's cannot be lost)."""

    async def flush(self) -> None:
        """Empty the imported data and progress (filter tables stay)."""
        raise NotImplementedError

    async def write_rows(self, rb: ResolvedBatch) -> None:
        """Insert a batch's events and properties in one transaction (idempotent)."""
        raise NotImplementedError

    async def write_links(self, rb: ResolvedBatch) -> None:
        """Upsert a batch's alias pairs and re-point their groups, in one transaction."""
        raise NotImplementedError

    async def begin_bulk_load(self, sliced: bool = False, resume: bool = False) -> BulkLoad | None:
        """A first import's bulk loader, or None where the store has none or its tables are
        not empty (unless it must ``resume`` an unfinished sliced one): rows are then inserted.
        ``sliced``: the load commits slice by slice into tables whose secondary indexes wait
        for ``complete_first_import`` (store/firstimport.py)."""
        return None

    async def commit_slice(self, late: Collection[str], more: bool = True) -> None:
        """Commit a sliced bulk load's slice; ``late``: identities linked late so far."""
        raise NotImplementedError

    async def first_import_unfinished(self) -> bool:
        """True when a sliced first import has not built its indexes yet."""
        return False

    async def complete_first_import(self, repoints: RepointsFor) -> None:
        """Build what an unfinished sliced first import left for its end (see firstimport.py)."""

    async def forget_rows(self, ranges: list[tuple[int, int]]) -> None:
        """Delete events and properties whose ids lie in the ``[low, high)`` ranges (ranges of
        the primary key: only the rows deleted are read)."""
        for start in range(0, len(ranges), FILTER_CHUNK):
            some = ranges[start : start + FILTER_CHUNK]
            where = " OR ".join(f"(`id` >= {low:d} AND `id` < {high:d})" for low, high in some)
            for table in (EVENTS, PROPERTIES):
                await self.execute(f"DELETE FROM `{table}` WHERE {where}")

    async def memory_advice(self, export_bytes: int) -> str | None:
        """One line of advice when the server is configured small for this export."""
        return None

    async def save_cursor(self, revision: int, offset: int) -> None:
        """Record ``offset`` bytes of ``revision`` imported (never moving back)."""
        raise NotImplementedError

    async def _intern(self, table: str, column: str, values: list[str],
                      cache: IdCache) -> dict[str, int]:
        """Ids of ``values`` in ``table.column``, inserting the missing ones, added to
        ``cache`` (the table's; a store may also consult it, and fill it as it goes)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------

    async def load_filters(self) -> Filters:
        """The filter tables (SPEC section 4), read at the start of a run."""
        return Filters(*[frozenset(await self.filter_names(t)) for t in schema.FILTER_TABLES])

    async def filter_names(self, table: str) -> list[str]:
        """The names in one filter table, in code point order."""
        return [name for (name,) in await self.execute(
            f"SELECT `name` FROM `{table}` ORDER BY `name`")]

    async def _present(self, table: str, names: list[str]) -> set[str]:
        found: set[str] = set()
        size = self.per_statement(FILTER_CHUNK, 4 * MAX_NAME + 8)  # a quoted name, 4 bytes a character
        for start in range(0, len(names), size):
            chunk = names[start:start + size]
            found.update(name for (name,) in await self.execute(
                f"SELECT `name` FROM `{table}` WHERE `name` IN ({','.join(['%s'] * len(chunk))})",
                chunk))
        return found

    async def add_filter_names(self, table: str, names: list[str]) -> list[str]:
        """Add ``names`` to a filter table; returns those that were not there already."""
        present = await self._present(table, names)
        new = [name for name in dict.fromkeys(names) if name not in present]
        for name in new:
            await self.execute(f"INSERT INTO `{table}` (`name`) VALUES (%s)", (name,))
        return new

    async def remove_filter_names(self, table: str, names: list[str]) -> list[str]:
        """Remove ``names`` from a filter table; returns those that were there."""
        present = await self._present(table, names)
        gone = [name for name in dict.fromkeys(names) if name in present]
        for name in gone:
            await self.execute(f"DELETE FROM `{table}` WHERE `name` = %s", (name,))
        return gone

    # -- what ``status`` reads -------------------------------------------------------------

    async def count_rows(self, table: str) -> int:
        return int((await self.execute(f"SELECT COUNT(*) FROM `{table}`"))[0][0])

    async def event_time_range(self) -> tuple[str, str] | None:
        """The earliest and latest ``events.t`` (UTC, ``YYYY-MM-DD HH:MM:SS``); None if empty."""
        [(first, last)] = await self.execute(f"SELECT MIN(`t`), MAX(`t`) FROM `{EVENTS}`")
        return None if first is None else (str(first), str(last))

    async def last_run(self) -> tuple[str, str, str, dict[str, Any]] | None:
        """The latest ``kmdb_runs`` row: started, finished (UTC), status, summary."""
        rows = await self.execute(f"SELECT `started_at`, `finished_at`, `status`, `summary` "
                                  f"FROM `{RUNS}` ORDER BY `id` DESC LIMIT 1")
        if not rows:
            return None
        started, finished, status, summary = rows[0]
        return str(started), str(finished), str(status), json.loads(summary)

    async def max_row_id(self, low: int, high: int) -> int | None:
        """The largest events or properties id in ``[low, high)``; None when there is none."""
        tops = [(await self.execute(f"SELECT MAX(`id`) FROM `{table}` WHERE `id` >= %s AND "
                                    "`id` < %s", (low, high)))[0][0] for table in (EVENTS, PROPERTIES)]
        return max((int(top) for top in tops if top is not None), default=None)

    async def load_aliases(self, limit: int) -> list[tuple[str, str]] | None:
        """Every alias pair ever imported, or None when there are more than ``limit``."""
        rows = await self.execute(f"SELECT `name1`, `name2` FROM `{ALIASES}` LIMIT %s", (limit + 1,))
        return None if len(rows) > limit else [(a, b) for a, b in rows]

    async def alias_names(self) -> AsyncIterator[list[str]]:
        """Both names of every stored alias pair, a page of pairs at a time (by id)."""
        last = 0
        while rows := await self.execute(f"SELECT `id`, `name1`, `name2` FROM `{ALIASES}` "
                                         "WHERE `id` > %s ORDER BY `id` LIMIT %s", (last, PAGE)):
            last = int(rows[-1][0])
            yield [name for _, a, b in rows for name in (a, b)]

    async def alias_links(self, names: Collection[str]) -> list[tuple[str, str]]:
        """Every stored alias pair with one of ``names`` on either side (the alias cache's
        lookup; a pair may come twice)."""
        values, found = list(names), []
        for start in range(0, len(values), FILTER_CHUNK):
            chunk = values[start:start + FILTER_CHUNK]
            marks = ",".join(["%s"] * len(chunk))
            found.extend(await self.execute(ALIAS_LINKS.format(names=marks), chunk * 2))
        return [(a, b) for a, b in found]

    async def user_ids(self, names: Collection[str]) -> dict[str, int]:
        """users.id of each name, inserting missing users."""
        return await self._ids(USERS, "name", names, self._users)

    async def key_ids(self, strings: Collection[str]) -> dict[str, int]:
        """keys.id of each event name or property key, interning new ones."""
        return await self._ids(KEYS, "string", strings, self._keys)

    async def _ids(self, table: str, column: str, names: Collection[str],
                   cache: IdCache) -> dict[str, int]:
        found, missing = cache.lookup(names)
        if missing:
            found.update(await self._intern(table, column, missing, cache))
        return found

    def _forget_ids(self) -> None:
        self._users.clear()
        self._keys.clear()

    async def load_cursor(self) -> dict[int, int]:
        rows = await self.execute(f"SELECT `revision`, `offset` FROM `{REVISIONS}`")
        return {int(rev): int(off) for rev, off in rows}

    async def clear_cursor(self) -> None:
        await self.execute(f"DELETE FROM `{REVISIONS}`")

    async def record_run(self, started: str, finished: str, status: str, summary: dict[str, Any]) -> None:
        """One row of ``kmdb_runs``: UTC times, the outcome and the summary as JSON."""
        await self.execute(
            f"INSERT INTO `{RUNS}` (`started_at`, `finished_at`, `status`, `summary`) "
            "VALUES (%s, %s, %s, %s)", (started, finished, status, json.dumps(summary)))
