"""MariaDB/MySQL through aiomysql: the only module that talks to the database.

Errors of the driver become TransientError (lost connection, deadlock, lock wait, server
unreachable) or TerminalError (everything else), with messages that never carry the password.
Every write is idempotent (``ON DUPLICATE KEY UPDATE``), so a transaction retried after a lost
connection leaves the same rows.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import date
from functools import partial
from typing import Any, TypeVar

import aiomysql
import pymysql
from pymysql.converters import escape_string

from ..errors import KmdbError, TerminalError, TransientError, retrying
from ..records import MAX_VALUE, Record
from ..resolver import ResolvedBatch
from ..settings import DatabaseURL, Settings
from . import schema
from .base import ALIAS_LINKS, IdCache, SQLStore
from .connections import ConnectionPool, Watchdog
from .loaddata import BulkLoad
from .repoint import repoint_statements
from .schema import ALIASES, EVENTS, KEYS, PROPERTIES, REVISIONS, USERS
from .serverlock import ServerLock
from .statements import (
    EVENTS_HEAD,
    NAME_SQL,
    PAIR_SQL,
    PROPERTIES_HEAD,
    ROW_SQL,
    STATEMENT_BYTES,
    UPSERT_NOTHING,
    bulk_insert,
    event_values,
    property_values,
    too_wide,
)

T = TypeVar("T")

# Error codes worth a retry: deadlock, lock wait timeout, server gone / lost / unreachable,
# connection killed, server shutting down.
TRANSIENT_CODES = frozenset({1205, 1213, 1927, 1053, 2003, 2006, 2013, 2055, 1040, 1317})
LOOKUP_CHUNK = 1000  # names per IN (...) lookup
# Names per lookup of aliases: past about 200 (eq_range_index_dive_limit) MariaDB 10.11 chose
# a full index scan over the pairs, 30 ms for 1,000 names among 46,000 pairs (100: 2 ms).
ALIAS_CHUNK = 100
# Every connection's text settings, forced by SET NAMES at connect (a server's init_connect,
# run before it, may set others) and checked: client, connection, results, collation.
CHARSET = ("utf8mb4", "utf8mb4", "utf8mb4", "utf8mb4_bin")
MIN_PACKET = 16 << 10  # bytes: the smallest max_allowed_packet whose statements hold every name


def translate(error: BaseException, url: DatabaseURL) -> KmdbError:
    """Our error for a driver error; the message names the server, never the password."""
    code = error.args[0] if error.args and isinstance(error.args[0], int) else None
    detail = str(error.args[1]) if len(error.args) > 1 else str(error)
    if code == 1045:
        return TerminalError(f"MariaDB at {url.host}:{url.port} refused user {url.user!r}: access denied")
    if code in TRANSIENT_CODES or isinstance(error, OSError | ConnectionError | TimeoutError):
        return TransientError(f"MariaDB at {url.host}:{url.port}: {detail}")
    return TerminalError(f"MariaDB at {url.host}:{url.port} ({url.database}): {detail}")


DRIVER_ERRORS = (pymysql.Error, OSError, ConnectionError, TimeoutError)


class MySQLStore(SQLStore):
    """Schema, filters, identities, batch writes and the database-side cursor."""

    def __init__(self, url: DatabaseURL, settings: Settings) -> None:
        super().__init__(settings)
        self.url = url
        self._pool: ConnectionPool | None = None
        self._watchdog = Watchdog(settings.network_timeout, partial(self._params, None))
        self._lock = ServerLock(url.database, self._checked_connect)
        self._links = asyncio.Lock()  # our writers lock alias pairs one transaction at a time
        self._interning = asyncio.Lock()  # one INSERT of new users/keys at a time (see _intern)
        self.collation = "utf8mb4_nopad_bin"
        self._isolation = "tx_isolation"  # the session variable's name on MariaDB
        self._returning = False  # INSERT ... RETURNING (MariaDB 10.5+), known once open
        self._id_step = 0  # auto-increment step when a multi-row INSERT's ids are consecutive
        self._bulk: BulkLoad | None = None  # a first import's bulk load, while it streams users
        self._next_user = 1  # the id of the next user it streams
        self.max_packet = 0  # bytes: the server's max_allowed_packet, known once open
        self.statement_bytes: int = STATEMENT_BYTES  # bytes of a statement at most, from it
        self._checked: weakref.WeakSet[aiomysql.Connection] = weakref.WeakSet()  # CHARSET seen

    # -- connections ---------------------------------------------------------------------

    async def _retry(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` translating driver errors, retrying transient ones with backoff."""
        s = self._settings
        async for attempt in retrying(s.retry_attempts, s.retry_max_wait):
            with attempt:
                try:
                    return await op()
                except DRIVER_ERRORS as e:
                    raise translate(e, self.url) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _driver_errors(self) -> Iterator[None]:
        """Driver errors inside become ours (no retry: for steps that cannot be repeated)."""
        try:
            yield
        except DRIVER_ERRORS as e:
            raise translate(e, self.url) from None

    async def open(self, create: bool = True) -> None:
        url = self.url

        async def connect() -> None:
            async with self._connect(None) as conn, conn.cursor() as cur:
                await self._check_charset(conn)
                await cur.execute("SELECT VERSION(), @@max_allowed_packet")
                version, packet = await cur.fetchone()
                self._set_max_packet(int(packet))
                if "mariadb" not in version.lower():
                    self.collation = "utf8mb4_0900_bin"  # MySQL 8: binary and NO PAD
                    self._isolation = "transaction_isolation"
                else:
                    major, minor = (int(part) for part in version.split(".")[:2])
                    self._returning = (major, minor) >= (10, 5)  # INSERT ... RETURNING
                if not create:
                    await cur.execute("SELECT 1 FROM information_schema.SCHEMATA "
                                      "WHERE SCHEMA_NAME = %s", (url.database,))
                    if not await cur.fetchone():
                        raise TerminalError(f"database {url.database!r} does not exist on "
                                            f"{url.host}:{url.port}: nothing was imported into it")
                await cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{_ident(url.database)}` "
                    f"CHARACTER SET utf8mb4 COLLATE {self.collation}"
                )
            self._pool = ConnectionPool(partial(self._open_connection, url.database),
                                        self._settings.writers + 2)
            self._pool.release(await self._pool.acquire())  # the database answers: fail early

        await self._retry(connect)

    def _params(self, database: str | None) -> dict[str, Any]:
        url = self.url
        return {
            "host": url.host,
            "port": url.port,
            "user": url.user,
            "password": url.password,
            "db": database,
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": 10,
            # sql_notes=0: "already exists" notes would surface as Python warnings.
            # READ COMMITTED: a re-pointing UPDATE skips rows other writers are inserting
            # instead of waiting for their commits (it only must see rows committed before it,
            # which the pipeline guarantees); 15% faster imports, measured.
            "init_command": f"SET NAMES {CHARSET[0]} COLLATE {CHARSET[3]}, "
            "time_zone = '+00:00', sql_notes = 0, "
            + (f"{self._isolation} = 'READ-COMMITTED', " if database else "")
            + "sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
        }

    async def _open_connection(self, database: str | None, **options: Any) -> aiomysql.Connection:
        """A new connection, opened within the network timeout; its waits are watched
        (``connections.py``: a statement is never cut while the server runs it)."""
        return await self._watchdog.connect({**self._params(database), **options})

    async def _check_charset(self, conn: aiomysql.Connection) -> None:
        """Refuse a connection whose text settings are not CHARSET (text would be stored
        garbled); each connection is checked once."""
        if conn in self._checked:
            return
        async with conn.cursor() as cur:
            await cur.execute("SELECT @@character_set_client, @@character_set_connection, "
                              "@@character_set_results, @@collation_connection")
            found = tuple(await cur.fetchone())
        if found != CHARSET:
            raise TerminalError(
                f"MariaDB at {self.url.host}:{self.url.port}: a connection's character sets "
                f"(client, connection, results) are {', '.join(found[:3])} and its collation "
                f"{found[3]} after SET NAMES {CHARSET[0]}: text would be stored garbled")
        self._checked.add(conn)

    def _set_max_packet(self, packet: int) -> None:
        """Size statements for the server's max_allowed_packet (bytes), or refuse a server
        whose statements cannot hold a single name or alias pair."""
        if packet < MIN_PACKET:
            raise TerminalError(
                f"MariaDB at {self.url.host}:{self.url.port}: max_allowed_packet is {packet:,} "
                f"bytes; kmdb-async needs at least {MIN_PACKET:,} (16 MiB is the default)")
        self.max_packet = packet
        # A query's packet is its command byte and its text, and must be below the limit.
        self.statement_bytes = min(STATEMENT_BYTES, packet - 2)

    async def _checked_connect(self, **options: Any) -> aiomysql.Connection:
        """A connection to the database outside the pool, its character set checked."""
        conn = await self._open_connection(self.url.database, **options)
        try:
            await self._check_charset(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @asynccontextmanager
    async def _connect(self, database: str | None):  # type: ignore[no-untyped-def]
        conn = await self._open_connection(database)
        try:
            yield conn
        finally:
            conn.close()

    async def close(self) -> None:
        await self._lock.release()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def _cursor(self, transaction: bool = False):  # type: ignore[no-untyped-def]
        """A pooled cursor; a broken connection is closed, never handed out again."""
        assert self._pool is not None, "store is not open"
        conn = await self._pool.acquire()
        try:
            await self._check_charset(conn)
            if transaction:
                await conn.begin()
            async with conn.cursor() as cur:
                yield cur
            if transaction:
                await conn.commit()
        except BaseException:
            conn.close()  # its state is unknown: a fresh connection serves the retry
            raise
        finally:
            self._pool.release(conn)

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement (retried when transient); returns its rows."""

        async def op() -> list[tuple[Any, ...]]:
            async with self._cursor() as cur:
                await cur.execute(sql, tuple(args))
                return list(await cur.fetchall())

        return await self._retry(op)

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

    async def begin_bulk_load(self) -> BulkLoad | None:
        """Start loading by LOAD DATA streams when events, properties and aliases are all
        empty and the server accepts local data; None otherwise (rows are then inserted)."""
        [(empty, local, no_users, no_keys, lock_mode, step)] = await self.execute(
            f"SELECT NOT EXISTS (SELECT 1 FROM `{EVENTS}`) AND NOT EXISTS (SELECT 1 FROM "
            f"`{PROPERTIES}`) AND NOT EXISTS (SELECT 1 FROM `{ALIASES}`), @@local_infile, "
            f"NOT EXISTS (SELECT 1 FROM `{USERS}`), NOT EXISTS (SELECT 1 FROM `{KEYS}`), "
            "@@innodb_autoinc_lock_mode, @@auto_increment_increment")
        if not (empty and local):
            return None
        # We hold the import lock, so only we insert users and keys: while a cache holds every
        # row of its table, a name it lacks is new. New users are streamed into the users
        # table with ids we count (see _stream_users); new keys are inserted (_insert_new) when
        # a multi-row INSERT's ids are consecutive ("traditional" or "consecutive" lock mode).
        self._users.complete = bool(no_users)
        if int(lock_mode) in (0, 1):
            self._id_step = int(step)
            self._keys.complete = bool(no_keys)

        upsert = partial(_upsert_aliases, chunk=self.per_statement(LOOKUP_CHUNK, PAIR_SQL))
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
        return bulk

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

    # -- reads at the start of a run ------------------------------------------------------

    # -- identities and keys ------------------------------------------------------------

    async def _intern(self, table: str, column: str, values: list[str],
                      cache: IdCache) -> dict[str, int]:
        """Ids of ``values``, inserting the missing ones, cached.

        While ``cache`` holds every row of the table (a first import), missing names are new:
        they are inserted without a lookup (``_insert_new``). Otherwise:

        Names already stored are looked up concurrently (most lookups, past the first million
        lines); the absent ones are inserted one interning at a time, which also keeps the
        upserts of different readers apart: concurrent ``INSERT ... ON DUPLICATE KEY UPDATE``
        of overlapping names (READ COMMITTED, MariaDB 10.11) was seen to count a name as a
        duplicate of another statement's row that never became visible. A short answer is
        retried, never trusted.
        """
        bulk = self._bulk
        if cache is self._users and bulk is not None and bulk.users is not None:
            async with self._interning:
                if bulk.users is not None:  # not ended while this waited for the lock
                    return await self._stream_users(values, bulk)
        if cache.complete and self._id_step:  # a step known: ids are counted (_insert_new)
            try:
                async with self._interning:
                    return await self._insert_new(table, column, values, cache)
            except (KmdbError, *DRIVER_ERRORS):
                cache.complete = False  # unsure what went in: look every name up from now on
        ids: dict[str, int] = {}
        chunk = self.per_statement(LOOKUP_CHUNK, NAME_SQL)
        for start in range(0, len(values), chunk):
            # Quoted by hand, as bulk_insert does: the driver's generic escaping of each
            # argument was a tenth of a first import's client time. Sorted: fewer lock conflicts.
            quoted = {name: "'" + escape_string(name) + "'"
                      for name in sorted(values[start : start + chunk])}
            ids.update(await self._retry(partial(self._stored_ids, table, column, quoted)))
            missing = {name: q for name, q in quoted.items() if name not in ids}
            if missing:
                async with self._interning:
                    ids.update(await self._retry(partial(self._insert_ids, table, column, missing)))
        return cache.add(ids)

    async def alias_links(self, names: Collection[str]) -> list[tuple[str, str]]:
        """Every stored alias pair with one of ``names`` on either side; during a first
        import's bulk load, as its transaction sees them (the pairs it read ahead)."""
        values, found = list(names), []
        chunk = self.per_statement(ALIAS_CHUNK, 2 * NAME_SQL)  # each name is written twice
        for start in range(0, len(values), chunk):
            quoted = ",".join(["'" + escape_string(name) + "'"
                               for name in values[start : start + chunk]])
            sql = ALIAS_LINKS.format(names=quoted)
            rows = await self._bulk.links(sql) if self._bulk is not None else None
            if rows is None:
                rows = await self._retry(partial(self._select, sql))
            found.extend(rows)
        return [(a, b) for a, b in found]

    async def _select(self, sql: str) -> list[tuple[Any, ...]]:
        async with self._cursor() as cur:
            await cur.execute(sql)
            return list(await cur.fetchall())

    async def _stream_users(self, names: list[str], bulk: BulkLoad) -> dict[str, int]:
        """Under the interning lock, in a first import: the users cache holds every user, so
        the names it still lacks are new; they get the next ids and go into the bulk load's
        users statement (no round trip). When the cache drops names it can no longer tell new
        from streamed: the statement ends (its rows commit) and names are looked up again."""
        cache = self._users
        found, new = cache.lookup(names)
        if new:
            ids = {name: self._next_user + i for i, name in enumerate(new)}
            self._next_user += len(new)
            found.update(cache.add(ids))
            await bulk.add_users(ids)
        if not cache.complete:
            await bulk.end_users()
        return found

    async def _insert_new(self, table: str, column: str, values: list[str],
                          cache: IdCache) -> dict[str, int]:
        """Under the interning lock, while ``cache`` holds every row: insert the names it
        still lacks (another reader's batch may have added some meanwhile) and cache them
        before the lock is released.

        In the "traditional" and "consecutive" auto-increment lock modes, the rows of one
        multi-row INSERT get consecutive ids (``auto_increment_increment`` apart) in the order
        of its VALUES, from the first id the server reports: no id is read back row by row.
        """
        found, new = cache.lookup(values)
        step, size = self._id_step, self.per_statement(LOOKUP_CHUNK, NAME_SQL)
        for start in range(0, len(new), size):
            chunk = new[start : start + size]
            async with self._cursor() as cur:
                await cur.execute(f"INSERT INTO `{table}` (`{column}`) VALUES ('"
                                  + "'),('".join([escape_string(name) for name in chunk]) + "')")
                first, count = cur.lastrowid, cur.rowcount
            if count != len(chunk) or not first:
                raise TransientError(f"interning into `{table}`: {count} rows for {len(chunk)}")
            found.update(cache.add({name: first + i * step for i, name in enumerate(chunk)}))
        return found

    async def _stored_ids(self, table: str, column: str, quoted: dict[str, str]) -> dict[str, int]:
        return dict(await self._select(f"SELECT `{column}`, `id` FROM `{table}` WHERE `{column}` "
                                       f"IN ({','.join(quoted.values())})"))

    async def _insert_ids(self, table: str, column: str, quoted: dict[str, str]) -> dict[str, int]:
        """Under the interning lock: insert the names still absent; the ids of all of them."""
        found = await self._stored_ids(table, column, quoted)  # another reader's, meanwhile
        new = [q for name, q in quoted.items() if name not in found]
        if new:
            async with self._cursor() as cur:
                if self._returning:  # MariaDB 10.5+: the new ids come back with the insert
                    await cur.execute(f"INSERT INTO `{table}` (`{column}`) VALUES "
                                      f"({'),('.join(new)}) RETURNING `{column}`, `id`")
                    found.update(await cur.fetchall())
                else:
                    await cur.execute(f"INSERT INTO `{table}` (`{column}`) VALUES "
                                      f"({'),('.join(new)}) ON DUPLICATE KEY UPDATE `id` = `id`")
                    found = await self._stored_ids(table, column, quoted)
        if len(found) < len(quoted):
            raise TransientError(f"interning into `{table}`: {len(quoted) - len(found)} "
                                 "names not found after their insert")
        return found

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

    async def write_links(self, rb: ResolvedBatch) -> None:
        """Upsert the batch's alias pairs and re-point their groups, in one transaction."""
        if not rb.aliases and not rb.repoints:
            return

        async def op() -> None:
            async with self._links, self._cursor(transaction=True) as cur:
                if rb.aliases:
                    await _upsert_aliases(cur, rb.aliases, self.per_statement(LOOKUP_CHUNK, PAIR_SQL))
                for table in (EVENTS, PROPERTIES):
                    for statement in repoint_statements(table, rb.repoints, self.statement_bytes):
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


async def _upsert_aliases(cur: Any, pairs: list[tuple[str, str, str]], chunk: int) -> None:
    """Each pair once with its earliest t, inside the caller's transaction; ``chunk`` pairs a
    statement.

    Partitioned ``aliases`` cannot keep a unique key on the pair (MySQL wants ``t`` in every
    unique key), so the pairs' rows, and the index gaps where absent ones would go, are locked
    first (another transaction inserting the same pair waits, or deadlocks and is retried);
    then absent pairs are inserted and earlier times moved back. On a table that is not
    partitioned the unique key also holds, which the upsert respects.
    """
    for start in range(0, len(pairs), chunk):
        some = sorted(pairs[start : start + chunk])
        where = " OR ".join(["(`name1` = %s AND `name2` = %s)"] * len(some))
        await cur.execute(
            f"SELECT `name1`, `name2`, MIN(`t`) FROM `{ALIASES}` WHERE {where} "
            "GROUP BY `name1`, `name2` FOR UPDATE",
            [name for a, b, _ in some for name in (a, b)],
        )
        stored = {(a, b): f"{t:%Y-%m-%d %H:%M:%S}" for a, b, t in await cur.fetchall()}
        new = [p for p in some if (p[0], p[1]) not in stored]
        earlier = [(t, a, b, t) for a, b, t in some if (a, b) in stored and t < stored[a, b]]
        if new:
            await cur.executemany(
                f"INSERT INTO `{ALIASES}` (`name1`, `name2`, `t`) VALUES (%s, %s, %s) "
                "ON DUPLICATE KEY UPDATE `t` = LEAST(`t`, VALUES(`t`))", new)
        for row in earlier:
            await cur.execute(f"UPDATE `{ALIASES}` SET `t` = %s WHERE `name1` = %s AND "
                              "`name2` = %s AND `t` > %s", row)


def _ident(name: str) -> str:
    """A database name safe inside backquotes."""
    return name.replace("`", "``")
