"""MariaDB/MySQL through aiomysql: the store, composed of the modules that talk to the server.

``MySQLStore`` is what ``open_store`` returns for a MariaDB/MySQL URL. Its parts, each a class
the next builds on: server.py (connections, retries, errors, text settings), interning.py (ids
of users and keys), links.py (alias pairs and re-pointing). This module adds the rest of the
store's methods: the schema, the database's lock (serverlock.py), a first import's bulk load
(loaddata.py), batch writes of rows (statements.py), and what status and partitioning read.

Every write is idempotent (``ON DUPLICATE KEY UPDATE``), so a transaction retried after a lost
connection leaves the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import date
from functools import partial

from ..errors import TerminalError
from ..records import MAX_VALUE, Record
from ..resolver import ResolvedBatch
from ..settings import DatabaseURL, Settings
from . import schema
from .firstimport import MySQLFirstImport
from .interning import MySQLInterning
from .links import MySQLLinks, upsert_aliases
from .loaddata import BulkLoad
from .repoint import repoint_statements
from .schema import ALIASES, EVENTS, KEYS, PROPERTIES, REVISIONS, USERS
from .serverlock import ServerLock
from .statements import (
    EVENTS_HEAD,
    LOOKUP_CHUNK,
    PAIR_SQL,
    PROPERTIES_HEAD,
    ROW_SQL,
    UPSERT_NOTHING,
    bulk_insert,
    event_values,
    property_values,
    too_wide,
)


class MySQLStore(MySQLInterning, MySQLLinks, MySQLFirstImport):
    """Schema, filters, identities, batch writes and the database-side cursor."""

    def __init__(self, url: DatabaseURL, settings: Settings) -> None:
        super().__init__(url, settings)
        self._lock = ServerLock(url.database, self._checked_connect)

    async def close(self) -> None:
        await self._lock.release()
        await super().close()

    # -- schema, lock, flush -------------------------------------------------------------

    async def ensure_schema(self) -> None:
        """Create every missing table (idempotent)."""
        for statement in schema.ddl(self.collation):
            await self.execute(statement)

    async def acquire_import_lock(self, holder: str = "import") -> None:
        """Hold the database's lock (store/serverlock.py) for ``holder``, or refuse naming
        the command that holds it."""
        busy = await self._retry(lambda: self._lock.take(holder))
        if busy is not None:
            holder_id, running = busy
            raise TerminalError(
                f"another kmdb-async {running} is running on database {self.url.database!r} "
                f"(MariaDB connection {holder_id}); wait for it to finish"
            )

    async def keep_import_lock(self) -> None:
        """Check we still hold the lock. A dropped lock connection drops the lock: take it
        back, or stop (TerminalError) when another command took it meanwhile."""
        if not await self._lock.held():
            await self.acquire_import_lock(self._lock.holder)

    async def flush(self) -> None:
        """Empty the imported data and progress (filter tables stay)."""
        for table in schema.DATA_TABLES:
            await self.execute(f"TRUNCATE TABLE `{table}`")
        self._forget_ids()

    # -- the first import: LOAD DATA streams ---------------------------------------------

    async def begin_bulk_load(self, sliced: bool = False, resume: bool = False) -> BulkLoad | None:
        """Start loading by LOAD DATA streams when events, properties and aliases are all
        empty, or ``resume`` a sliced first import left unfinished (sliced again), and the
        server accepts local data; None otherwise (rows are then inserted). ``sliced``: the
        load commits slice by slice (``commit_slice``), its secondary indexes built at its end
        (store/firstimport.py)."""
        [(empty, local, no_users, no_keys, lock_mode, step)] = await self.execute(
            f"SELECT NOT EXISTS (SELECT 1 FROM `{EVENTS}`) AND NOT EXISTS (SELECT 1 FROM "
            f"`{PROPERTIES}`) AND NOT EXISTS (SELECT 1 FROM `{ALIASES}`), @@local_infile, "
            f"NOT EXISTS (SELECT 1 FROM `{USERS}`), NOT EXISTS (SELECT 1 FROM `{KEYS}`), "
            "@@innodb_autoinc_lock_mode, @@auto_increment_increment")
        if not local or not (empty or resume):
            return None
        if resume:
            sliced = True
        elif sliced:
            await self.defer_indexes()
        # We hold the import lock, so only we insert users and keys: while a cache holds every
        # row of its table, a name it lacks is new. New users are streamed into the users
        # table with ids we count (see _stream_users); new keys are inserted (_insert_new) when
        # a multi-row INSERT's ids are consecutive ("traditional" or "consecutive" lock mode).
        self._users.complete = bool(no_users)
        if int(lock_mode) in (0, 1):
            self._id_step = int(step)
            self._keys.complete = bool(no_keys)

        upsert = partial(upsert_aliases, chunk=self.per_statement(LOOKUP_CHUNK, PAIR_SQL))
        bulk = BulkLoad(partial(self._checked_connect, local_infile=True), upsert,
                        partial(repoint_statements, limit=self.statement_bytes),
                        self._driver_errors, users=bool(no_users),
                        forget=self._forget_ids, max_packet=self.max_packet)
        try:
            await bulk.start()
        except BaseException:
            bulk.close()
            raise
        self._bulk, self._next_user = bulk, 1
        bulk.sliced = sliced
        return bulk

    async def commit_slice(self, late: Collection[str], more: bool = True) -> None:
        """Commit the sliced load's slice (BulkLoad.commit), no new user interned meanwhile:
        the users statement ends and opens again with the ids counted on."""
        assert self._bulk is not None
        async with self._interning:
            await self._bulk.commit(late, more)

    def oversized(self) -> Callable[[Record], str | None] | None:
        """The check of a line against the server's max_allowed_packet (a property row must
        fit one INSERT), or None when every row fits (values are at most 65,535 characters)."""
        room = self.statement_bytes - len(PROPERTIES_HEAD) - len(UPSERT_NOTHING) - ROW_SQL
        if 4 * MAX_VALUE + 2 <= room:
            return None
        return partial(too_wide, room, self.max_packet)

    async def memory_advice(self, export_bytes: int) -> str | None:
        """One line of advice when the buffer pool is small for an export of this size."""
        [(pool,)] = await self.execute("SELECT @@innodb_buffer_pool_size")
        # km-db's secondary indexes take ~1.6x the export's bytes (1M lines: 183 MB of export,
        # 301 MB of indexes, 340 MB of rows; benchmarks/README.md). A pool smaller than them
        # reads index pages back from disk on every batch of a later import.
        need = export_bytes * 3 // 2
        if int(pool) >= need:
            return None
        return (f"note: innodb_buffer_pool_size is {int(pool) >> 20} MiB for {export_bytes >> 20} "
                f"MiB to import; the import is I/O-bound until it is at least "
                f"{max(need >> 20, 1)} MiB (see docs/first-import.md, 'Server settings')")


    # -- batch writes -----------------------------------------------------------------------

    async def write_rows(self, rb: ResolvedBatch) -> None:
        """Insert the batch's events and properties in one transaction (idempotent)."""
        if not rb.events and not rb.properties:
            return
        limit = self.statement_bytes
        statements = [*bulk_insert(EVENTS_HEAD, map(event_values, rb.events), limit),
                      *bulk_insert(PROPERTIES_HEAD, map(property_values, rb.property_rows()), limit)]

        async def op() -> None:
            async with self._cursor(transaction=True) as cur:
                for statement in statements:
                    await cur.execute(statement)

        await self._retry(op)


    # -- what status and partitioning read -------------------------------------------------

    async def table_names(self) -> set[str]:
        rows = await self.execute("SELECT TABLE_NAME FROM information_schema.TABLES "
                                  "WHERE TABLE_SCHEMA = DATABASE()")
        return {name for (name,) in rows}

    async def partition_rows(self, table: str) -> list[tuple[str | None, ...]]:
        """``table``'s partitions in order: (name, method, expression, description); one row
        of NULLs when it is not partitioned (MariaDB/MySQL only)."""
        return await self.execute(
            "SELECT PARTITION_NAME, PARTITION_METHOD, PARTITION_EXPRESSION, "
            "PARTITION_DESCRIPTION FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = "
            "DATABASE() AND TABLE_NAME = %s ORDER BY PARTITION_ORDINAL_POSITION", (table,))

    async def event_days(self) -> dict[date, int]:
        """Events per UTC day (an index scan of ``events.t``)."""
        rows = await self.execute(f"SELECT DATE(`t`), COUNT(*) FROM `{EVENTS}` GROUP BY 1")
        return {day: int(count) for day, count in rows}

    # -- the database-side cursor and run records ------------------------------------------

    async def save_cursor(self, revision: int, offset: int) -> None:
        await self.execute(
            f"INSERT INTO `{REVISIONS}` (`revision`, `offset`) VALUES (%s, %s) "
            "ON DUPLICATE KEY UPDATE `offset` = GREATEST(`offset`, VALUES(`offset`))",
            (revision, offset),
        )
