"""A first import into empty tables: one LOAD DATA LOCAL statement per table, fed as a stream.

InnoDB (MariaDB 10.7+) loads an *empty* table in one statement with ``unique_checks=0`` by
sorting each index in bulk instead of inserting row by row, which is two to three times faster
than any INSERT path on a small buffer pool (measured: benchmarks/README.md). So a first import
streams all its events into one LOAD DATA LOCAL statement and all its properties into another,
on their own connections, while it reads; the server asks for the "file" and we answer with
packets of tab-separated rows as batches are resolved.

The users table, empty too, gets a third statement: the store gives new users their ids
itself and streams them (no round trip per new name), until its id cache can no longer tell a
new name from one streamed; that statement then ends early, and later names are inserted.

A first import larger than one slice commits slice by slice (``commit``) into tables whose
secondary indexes are built at its end: see store/firstimport.py. Otherwise nothing of it is
visible until the end, which makes the crash story short:

0. the users statement ends first (a user row must exist before any row pointing at it
   commits; if it fails, nothing else commits and the ids it was given are forgotten), then
1. both row statements end (their rows commit: autocommit), and each table gets one re-pointing
   pass over the groups linked late (the pipeline links aliases ahead of the rows, so there
   are few or none), on its own connection (the two in parallel), then
2. the run's alias pairs, upserted all along inside one open transaction on a third
   connection, commit, then
3. the pipeline moves the cursor.

A kill before 2 leaves no alias pairs, so the next run (row inserts: the tables are no longer
empty) meets every alias again and re-points every group it touches, rows loaded with an
older canonical user included (re-pointing twice moves nothing more); a kill after 2 leaves
correct rows. A failed load is rolled
back by closing its connection before its end-of-data packet: the server never sees a
complete statement.

aiomysql's own LOAD DATA LOCAL reads a named file and sends 16 MiB-1 packets without flow
control (and a final packet of exactly that size is taken as "more follows"); the exchange
here is written against its packet layer: the query, the server's LOCAL INFILE request, data
packets of at most ``PACKET`` bytes with ``drain`` between batches, an empty packet, the OK.

Each data packet must be smaller than the server's max_allowed_packet (MariaDB 10.11 drops
the connection on one of exactly that size), so packets are cut below it. A row, though, may
span packets: a row of 600,000 bytes loaded through packets of 64 KiB on a server with a
max_allowed_packet of 128 KiB (measured). Lines whose rows an INSERT could not carry are
rejected before either path (MySQLStore.oversized), so both store the same rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable
from contextlib import AbstractContextManager
from typing import Any

import aiomysql
from pymysql.constants import COMMAND
from pymysql.err import OperationalError
from pymysql.protocol import OKPacketWrapper

from ..errors import TerminalError
from ..resolver import EventRow, Repoint, ResolvedBatch
from .connections import WatchedConnection
from .schema import EVENTS, LATE_LINKS, PROPERTIES, USERS

PACKET = 1 << 20  # bytes per data packet (the protocol's limit is 16 MiB - 1)
# The server gives up on a LOAD DATA LOCAL whose client sends nothing for net_read_timeout
# (30 s by default); the users statement gets a packet only every megabyte of new names, and a
# slow source can pause every stream, so the streams wait up to an hour.
SESSION = "SET unique_checks = 0, foreign_key_checks = 0, net_read_timeout = 3600"

# LOAD DATA's text format: tab between fields, newline after a row, backslash escapes, \N NULL.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\x00": "\\0"})
_SPECIAL = frozenset("\\\t\n\x00")
NULL = "\\N"


def tsv_text(value: str | None) -> str:
    """One field of LOAD DATA's default text format."""
    if value is None:
        return NULL
    return value.translate(_ESCAPES) if not _SPECIAL.isdisjoint(value) else value


def user_rows(ids: dict[str, int]) -> bytes:
    """Users as LOAD DATA rows: the id and the name (escaped: names are free text)."""
    return "".join([f"{uid}\t{tsv_text(name)}\n" for name, uid in ids.items()]).encode()


def event_rows(rows: list[EventRow]) -> bytes:
    """Events as LOAD DATA rows: ids are ints and t a DATETIME literal, nothing to escape."""
    return "".join([f"{e}\t{t}\t{n}\t{u}\t{o}\n" for e, t, n, u, o in rows]).encode()


def property_rows(rb: ResolvedBatch) -> bytes:
    """A batch's properties as LOAD DATA rows; the value escaped (the one free-text column).

    Most batches hold no value with a tab, newline, backslash or NUL: the rows are first
    written unescaped, and only when counting the text's separators shows one is it written
    again with every value escaped (a third of the time of escaping each value).
    """
    text = _property_text(rb, _as_is)
    sets, dropped, rows = rb.property_sets, rb.dropped, rb.properties
    if dropped:
        nulls = sum([(v is None) + (s[4] is None) for s in sets for k, v in s[5] if k not in dropped])
    else:  # NULL event ids (property sets) and NULL values
        nulls = sum([len(s[5]) for s in sets if s[4] is None])
        nulls += sum([v is None for s in sets for _, v in s[5]])
    if (text.count("\n") != rows or text.count("\t") != 6 * rows
            or text.count("\\") != nulls or "\x00" in text):
        text = _property_text(rb, tsv_text)
    return text.encode()


def _as_is(value: str | None) -> str:
    return NULL if value is None else value


def _property_text(rb: ResolvedBatch, field: Callable[[str | None], str]) -> str:
    """The rows' text; ``field`` writes a value. The columns a line's properties share are
    written once per line."""
    keys, dropped = rb.keys, rb.dropped
    parts: list[str] = []
    for first, t, user, origin, event_id, pairs in rb.property_sets:
        shared = f"\t{t}\t{user}\t{origin}\t{NULL if event_id is None else event_id}\t"
        if field is _as_is and not dropped:  # the hot path: no call or test per value
            parts += [f"{first + i}{shared}{keys[k]}\t{NULL if v is None else v}\n"
                      for i, (k, v) in enumerate(pairs)]
        else:
            parts += [f"{first + i}{shared}{keys[k]}\t{field(v)}\n"
                      for i, (k, v) in enumerate(pairs) if k not in dropped]
    return "".join(parts)


class TableStream:
    """One LOAD DATA LOCAL statement into ``table``, open until ``finish``."""

    def __init__(self, conn: WatchedConnection, table: str, columns: str,
                 packet: int = PACKET) -> None:
        self.conn, self.table, self.columns = conn, table, columns
        self._packet = packet  # bytes of a data packet at most
        self._lock = asyncio.Lock()  # writers' packets and drains never interleave
        self._buffer = bytearray()  # whole rows not yet sent: packets of ~PACKET bytes

    async def start(self) -> None:
        conn = self.conn
        async with conn.cursor() as cur:
            await cur.execute(SESSION)
        await conn._execute_command(  # noqa: SLF001 - see the module docstring
            COMMAND.COM_QUERY,
            f"LOAD DATA LOCAL INFILE 'kmdb-async:{self.table}' INTO TABLE `{self.table}` "
            "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' "
            f"LINES TERMINATED BY '\\n' ({self.columns})",
        )
        request = await conn._read_packet()  # noqa: SLF001 - an error packet raises here
        if not request.is_load_local_packet():
            raise TerminalError(f"the server did not ask for the rows of `{self.table}`")

    async def send(self, data: bytes) -> None:
        """Add ``data`` (whole rows) to the statement; waits while the server is behind."""
        self._buffer += data
        if len(self._buffer) >= self._packet:
            async with self._lock:
                await self._flush()

    async def _flush(self) -> None:
        """Send the buffered rows (in packets of at most ``packet`` bytes), then drain."""
        data, self._buffer, size = bytes(self._buffer), bytearray(), self._packet
        writer = self.conn._writer  # noqa: SLF001
        try:
            if writer is None or writer.transport.is_closing():
                raise RuntimeError("connection closed")
            for start in range(0, len(data), size):
                self.conn.write_packet(data[start:start + size])
            # Watched (connections.py): a server that stops reading fails the load, a busy one
            # is waited for.
            await self.conn.watched(writer.drain)
        except RuntimeError:  # uvloop's answer to a write on a closed transport
            raise OperationalError(2013, f"Lost connection while loading `{self.table}`") from None

    async def finish(self) -> None:
        """End the data; the statement runs to its end and commits."""
        async with self._lock:
            await self._flush()
            self.conn.write_packet(b"")
            ok = OKPacketWrapper(await self.conn._read_packet())  # noqa: SLF001
        if ok.warning_count:
            async with self.conn.cursor() as cur:
                await cur.execute("SHOW WARNINGS LIMIT 1")
                warning = await cur.fetchone()
            raise TerminalError(f"loading `{self.table}`: {warning[2] if warning else 'warnings'}")


class BulkLoad:
    """The first import's streams, its open alias transaction and its closing steps.

    With ``users`` the users table is loaded too (it was empty): ``add_users`` streams new
    users with the ids the store gave them, until ``end_users`` (the store's id cache could no
    longer tell a new name from one already streamed) or ``finish``. ``forget`` runs when the
    users stream is rolled back: the ids handed out for it are void. ``max_packet`` is the
    server's max_allowed_packet (bytes): data packets stay below it.
    """

    def __init__(self, connect: Callable[[], Any],
                 upsert_aliases: Callable[[Any, list[tuple[str, str, str]]], Any],
                 repoint_statements: Callable[[str, list[Repoint]], Iterable[str]],
                 driver_errors: Callable[[], AbstractContextManager[None]],
                 users: bool = False, forget: Callable[[], None] = lambda: None,
                 max_packet: int = 16 << 20) -> None:
        self._connect = connect
        self._packet = min(PACKET, max_packet - 1)
        self._driver_errors = driver_errors  # the store's translation into our errors
        self._upsert_aliases = upsert_aliases
        self._repoint_statements = repoint_statements
        self._with_users, self._forget = users, forget
        self._conns: list[aiomysql.Connection] = []
        self._links_lock = asyncio.Lock()
        self.events: TableStream | None = None
        self.properties: TableStream | None = None
        self.users: TableStream | None = None  # open while new users are streamed
        self._links: aiomysql.Connection | None = None
        self.sliced = False  # commits slice by slice (store/firstimport.py)

    async def start(self) -> None:
        """Open the statements and the alias transaction."""
        with self._driver_errors():
            await self._start()

    async def _start(self) -> None:
        self._conns = conns = [await self._connect() for _ in range(3 + self._with_users)]
        self._links = conns[2]
        await self._open(users=self._with_users)

    async def _open(self, users: bool) -> None:
        """Open the row statements (and the users statement) and the alias transaction."""
        conns = self._conns
        self.events = TableStream(conns[0], EVENTS, "`id`, `t`, `n`, `user_id`, `origin_user_id`",
                                  self._packet)
        self.properties = TableStream(conns[1], PROPERTIES, "`id`, `t`, `user_id`, "
                                      "`origin_user_id`, `event_id`, `key`, `value`", self._packet)
        await self.events.start()
        await self.properties.start()
        assert self._links is not None
        await self._links.begin()
        if users:
            self.users = TableStream(conns[3], USERS, "`id`, `name`", self._packet)
            await self.users.start()

    async def add_users(self, ids: dict[str, int]) -> None:
        """Stream new users (names the users table cannot hold yet) with their ids."""
        assert self.users is not None
        with self._driver_errors():
            await self.users.send(user_rows(ids))

    async def end_users(self) -> None:
        """End the users statement: its rows commit, lookups find them from now on."""
        if self.users is not None:
            with self._driver_errors():
                await self.users.finish()
            self.users = None

    async def add_aliases(self, pairs: list[tuple[str, str, str]]) -> None:
        """Upsert alias pairs in the load's transaction (``links`` sees them at once)."""
        assert self._links is not None
        if pairs:
            with self._driver_errors():
                async with self._links_lock, self._links.cursor() as cur:
                    await self._upsert_aliases(cur, pairs)

    async def links(self, sql: str) -> list[tuple[Any, ...]] | None:
        """Rows of a query of ``aliases`` as the load's transaction sees them (its pairs
        included); None once the load is over."""
        if self._links is None:
            return None
        with self._driver_errors():
            async with self._links_lock, self._links.cursor() as cur:
                await cur.execute(sql)
                return list(await cur.fetchall())

    async def add(self, rb: ResolvedBatch) -> None:
        """Stream a batch's rows and upsert its alias pairs (its re-points wait for ``finish``)."""
        assert self.events is not None and self.properties is not None and self._links is not None
        with self._driver_errors():
            await self.events.send(event_rows(rb.events))
            await self.properties.send(property_rows(rb))
            await self.add_aliases(rb.aliases)

    async def commit(self, late: Collection[str], more: bool = True) -> None:
        """End a slice of a sliced load (store/firstimport.py), in the order ``finish`` ends
        the load: the users statement, then both row statements (their rows commit), then the
        alias pairs, with the identities linked late (``kmdb_late_links``: their groups are
        re-pointed once the indexes exist). With ``more`` the next slice's statements open."""
        assert self.events is not None and self.properties is not None and self._links is not None
        users = self.users is not None
        await self.end_users()
        with self._driver_errors():
            await asyncio.gather(self.events.finish(), self.properties.finish())
            async with self._links_lock:
                if late:
                    async with self._links.cursor() as cur:
                        await cur.executemany(f"INSERT INTO `{LATE_LINKS}` (`name`) VALUES "
                                              "(%s) ON DUPLICATE KEY UPDATE `name` = `name`",
                                              [(name,) for name in late])
                await self._links.commit()
                if more:
                    await self._open(users)

    async def finish(self, repoints: list[Repoint]) -> None:
        """End the statements, then commit the alias pairs with one pass of ``repoints``."""
        assert self.events is not None and self.properties is not None and self._links is not None
        await self.end_users()  # first: rows must never commit pointing at users that did not
        with self._driver_errors():
            await asyncio.gather(self._close_table(self.events, repoints),
                                 self._close_table(self.properties, repoints))
            await self._links.commit()
        self.close()

    async def _close_table(self, stream: TableStream, repoints: list[Repoint]) -> None:
        """End a table's statement, then re-point its rows on the same connection (the two
        tables in parallel; each UPDATE commits on its own, before the alias pairs do)."""
        await stream.finish()
        async with stream.conn.cursor() as cur:
            for statement in self._repoint_statements(stream.table, repoints):
                await cur.execute(statement)

    def close(self) -> None:
        """Close every connection: an unfinished statement or transaction is rolled back."""
        for conn in self._conns:
            conn.close()
        self._conns, self._links = [], None
        if self.users is not None:
            self.users = None
            self._forget()
