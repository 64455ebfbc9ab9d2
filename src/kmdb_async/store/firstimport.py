"""MariaDB/MySQL: a first import in slices, each committed, and what it leaves for its end.

A first import larger than one slice (``--slice-mib``) saves its progress as it goes: a kill
loses at most the slice it was loading. Its tables cannot stay empty for InnoDB's sorted bulk
build, so the row tables lose their secondary indexes (schema.ROW_INDEXES) when it begins:
with the primary key alone, which is the rows' place in the export, each slice's LOAD DATA
appends to the end of the table, as fast as one statement into empty tables, and at the end
each index is built once, sorted, from the rows (measured: benchmarks/README.md).

While the indexes are missing the first import is *unfinished*; the next import resumes it
(store.first_import_unfinished): it deletes the rows past the cursor (a slice whose rows
committed just before the kill, its cursor not yet), loads the rest in slices, and completes.
Completing (``complete_first_import``) builds the missing indexes (each build waits at most
INDEX_LOCK_WAIT for a transaction that holds the table open, then fails the run, the import
still unfinished), then re-points the groups
linked late: aliases the read-ahead did not see (store/loaddata.py), found while loading a
slice. Their rows, in earlier slices, cannot be found without the ``user_id`` indexes, so each
slice commits such identities to ``kmdb_late_links`` with its alias pairs; once the indexes
exist their groups are re-pointed, then the names are deleted. Every step can be cut and
redone: an index that exists is not built again, re-pointing twice moves nothing more.
An import that does not load by slices (``--no-bulk-load``, nothing left to read) completes an
unfinished first import before it inserts rows.
"""

from __future__ import annotations

import asyncio

from ..errors import TerminalError, TransientError
from ..resolver import Repoint
from .base import RepointsFor
from .repoint import repoint_statements
from .schema import EVENTS, LATE_LINKS, PROPERTIES, ROW_INDEXES
from .server import MySQLServer

# Seconds an index build waits for the table's metadata lock (any open transaction that read
# the table holds it) before the try fails; the server's default is a year.
INDEX_LOCK_WAIT = 60


class MySQLFirstImport(MySQLServer):
    """The sliced first import's indexes and late links (see the module docstring)."""

    async def missing_indexes(self) -> dict[str, list[str]]:
        """The ROW_INDEXES each row table lacks (tables without any are left out)."""
        rows = await self.execute(
            "SELECT TABLE_NAME, INDEX_NAME FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (%s, %s)", (EVENTS, PROPERTIES))
        present = {(table, index) for table, index in rows}
        missing = {table: [name for name in ROW_INDEXES[table] if (table, name) not in present]
                   for table in ROW_INDEXES}
        return {table: names for table, names in missing.items() if names}

    async def first_import_unfinished(self) -> bool:
        return bool(await self.missing_indexes())

    async def defer_indexes(self) -> None:
        """Drop the row tables' secondary indexes (they are empty: instant)."""
        for table, names in ROW_INDEXES.items():
            await self.execute(f"ALTER TABLE `{table}` "
                               + ", ".join(f"DROP INDEX `{name}`" for name in names))

    async def complete_first_import(self, repoints: RepointsFor) -> None:
        """Build the missing indexes (both tables at once), re-point the late groups, forget
        them. Idempotent; nothing to do when the first import was not sliced."""
        missing = await self.missing_indexes()
        late = [name for (name,) in await self.execute(f"SELECT `name` FROM `{LATE_LINKS}`")]
        if not missing and not late:
            return
        await asyncio.gather(*(self._add_indexes(table, names) for table, names in missing.items()))
        if not late:
            return
        moves = await repoints(late)
        await asyncio.gather(*(self._repoint(table, moves) for table in (EVENTS, PROPERTIES)))
        await self.execute(f"DELETE FROM `{LATE_LINKS}`")

    async def _add_indexes(self, table: str, names: list[str]) -> None:
        columns = ROW_INDEXES[table]

        async def op() -> None:
            async with self._cursor() as cur:
                await cur.execute("SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE "
                                  "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", (table,))
                present = {name for (name,) in await cur.fetchall()}
                wanted = [name for name in names if name not in present]  # a retry's
                if wanted:
                    await cur.execute(f"SET SESSION lock_wait_timeout = {INDEX_LOCK_WAIT:d}")
                    try:
                        await cur.execute(f"ALTER TABLE `{table}` " + ", ".join(
                            f"ADD INDEX `{name}` ({columns[name]})" for name in wanted))
                    finally:
                        await cur.execute("SET SESSION lock_wait_timeout = DEFAULT")

        try:
            await self._retry(op)
        except TransientError as e:
            raise TerminalError(
                f"building the indexes of `{table}`: {e} (another connection kept the table "
                "in use, a transaction left open?); the first import stays unfinished and the "
                "next import builds them") from None

    async def _repoint(self, table: str, moves: list[Repoint]) -> None:
        for statement in repoint_statements(table, moves, self.statement_bytes):
            await self.execute(statement)
