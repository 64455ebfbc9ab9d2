"""MariaDB/MySQL through aiomysql: the only module that talks to the database.

Errors of the driver become TransientError (lost connection, deadlock, lock wait, server
unreachable) or TerminalError (everything else), with messages that never carry the password.
Every write is idempotent (``ON DUPLICATE KEY UPDATE``), so a transaction retried after a lost
connection leaves the same rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import date
from functools import partial
from typing import Any, TypeVar

import aiomysql
import pymysql
from pymysql.converters import escape_string

from ..errors import KmdbError, TerminalError, TransientError, retrying
from ..resolver import EventRow, PropertyRow, Repoint, ResolvedBatch
from ..settings import DatabaseURL, Settings
from . import schema
from .base import ALIAS_LINKS, IdCache, SQLStore
from .loaddata import BulkLoad
from .schema import ALIASES, EVENTS, KEYS, PROPERTIES, REVISIONS, USERS

T = TypeVar("T")

# Error codes worth a retry: deadlock, lock wait timeout, server gone / lost / unreachable,
# connection killed, server shutting down.
TRANSIENT_CODES = frozenset({1205, 1213, 1927, 1053, 2003, 2006, 2013, 2055, 1040, 1317})
LOOKUP_CHUNK = 1000  # names per IN (...) lookup
# Names per lookup of aliases: past about 200 (eq_range_index_dive_limit) MariaDB 10.11 chose
# a full index scan over the pairs, 30 ms for 1,000 names among 46,000 pairs (100: 2 ms).
ALIAS_CHUNK = 100
LOCK_PREFIX = "kmdb-async import "


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
        self._pool: aiomysql.Pool | None = None
        self._lock_conn: aiomysql.Connection | None = None
        self._links = asyncio.Lock()  # our writers lock alias pairs one transaction at a time
        self._interning = asyncio.Lock()  # one INSERT of new users/keys at a time (see _intern)
        self.collation = "utf8mb4_nopad_bin"
        self._isolation = "tx_isolation"  # the session variable's name on MariaDB
        self._returning = False  # INSERT ... RETURNING (MariaDB 10.5+), known once open
        self._id_step = 0  # auto-increment step when a multi-row INSERT's ids are consecutive
        self._bulk: BulkLoad | None = None  # a first import's bulk load, while it streams users
        self._next_user = 1  # the id of the next user it streams

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
                await cur.execute("SELECT VERSION()")
                (version,) = await cur.fetchone()
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
            self._pool = await aiomysql.create_pool(
                minsize=1, maxsize=self._settings.writers + 2, **self._params(url.database)
            )

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
            "init_command": "SET time_zone = '+00:00', sql_notes = 0, "
            + (f"{self._isolation} = 'READ-COMMITTED', " if database else "")
            + "sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
        }

    @asynccontextmanager
    async def _connect(self, database: str | None):  # type: ignore[no-untyped-def]
        conn = await aiomysql.connect(**self._params(database))
        try:
            yield conn
        finally:
            conn.close()

    async def close(self) -> None:
        if self._lock_conn is not None:
            self._lock_conn.close()
            self._lock_conn = None
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    @asynccontextmanager
    async def _cursor(self, transaction: bool = False):  # type: ignore[no-untyped-def]
        """A pooled cursor; a broken connection is closed, never handed out again."""
        assert self._pool is not None, "store is not open"
        conn = await self._pool.acquire()
        try:
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

    async def acquire_import_lock(self) -> None:
        """Hold a server lock for this run; it dies with our connection (crash included)."""
        name = LOCK_PREFIX + self.url.database

        async def op() -> tuple[int | None, int | None]:
            conn = await aiomysql.connect(**self._params(self.url.database))
            async with conn.cursor() as cur:
                await cur.execute("SELECT GET_LOCK(%s, 0), IS_USED_LOCK(%s)", (name, name))
                got, holder = await cur.fetchone()
            if got == 1:
                self._lock_conn = conn
            else:
                conn.close()
            return got, holder

        got, holder = await self._retry(op)
        if got != 1:
            raise TerminalError(
                f"another kmdb-async import is running on database {self.url.database!r} "
                f"(MariaDB connection {holder}); wait for it to finish"
            )

    async def keep_import_lock(self) -> None:
        """Check we still hold the import lock. A dropped lock connection drops the lock: take it
        back, or stop (TerminalError) when another import took it meanwhile."""
        conn = self._lock_conn
        if conn is not None and not conn.closed:
            try:
                async with conn.cursor() as cur:
                    await cur.execute("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()",
                                      (LOCK_PREFIX + self.url.database,))
                    (held,) = await cur.fetchone()
                if held == 1:
                    return
            except DRIVER_ERRORS:
                pass
            conn.close()
        self._lock_conn = None
        await self.acquire_import_lock()

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

        async def connect() -> aiomysql.Connection:
            return await aiomysql.connect(local_infile=True, **self._params(self.url.database))

        bulk = BulkLoad(connect, _upsert_aliases, repoint_statements, self._driver_errors,
                        users=bool(no_users), forget=self._forget_ids)
        try:
            await bulk.start()
        except BaseException:
            bulk.close()
            raise
        self._bulk, self._next_user = bulk, 1
        return bulk

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
        for start in range(0, len(values), LOOKUP_CHUNK):
            # Quoted by hand, as bulk_insert does: the driver's generic escaping of each
            # argument was a tenth of a first import's client time. Sorted: fewer lock conflicts.
            quoted = {name: "'" + escape_string(name) + "'"
                      for name in sorted(values[start : start + LOOKUP_CHUNK])}
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
        for start in range(0, len(values), ALIAS_CHUNK):
            quoted = ",".join(["'" + escape_string(name) + "'"
                               for name in values[start : start + ALIAS_CHUNK]])
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
        step = self._id_step
        for start in range(0, len(new), LOOKUP_CHUNK):
            chunk = new[start : start + LOOKUP_CHUNK]
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
        statements = [
            *bulk_insert(f"INSERT INTO `{EVENTS}` (`id`, `t`, `n`, `user_id`, `origin_user_id`) VALUES ",
                         map(event_values, rb.events)),
            *bulk_insert(f"INSERT INTO `{PROPERTIES}` (`id`, `t`, `user_id`, `origin_user_id`, "
                         "`event_id`, `key`, `value`) VALUES ", map(property_values, rb.property_rows())),
        ]

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
                    await _upsert_aliases(cur, rb.aliases)
                for table in (EVENTS, PROPERTIES):
                    for statement in repoint_statements(table, rb.repoints):
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


async def _upsert_aliases(cur: Any, pairs: list[tuple[str, str, str]]) -> None:
    """Each pair once with its earliest t, inside the caller's transaction.

    Partitioned ``aliases`` cannot keep a unique key on the pair (MySQL wants ``t`` in every
    unique key), so the pairs' rows, and the index gaps where absent ones would go, are locked
    first (another transaction inserting the same pair waits, or deadlocks and is retried);
    then absent pairs are inserted and earlier times moved back. On a table that is not
    partitioned the unique key also holds, which the upsert respects.
    """
    for start in range(0, len(pairs), LOOKUP_CHUNK):
        chunk = sorted(pairs[start : start + LOOKUP_CHUNK])
        where = " OR ".join(["(`name1` = %s AND `name2` = %s)"] * len(chunk))
        await cur.execute(
            f"SELECT `name1`, `name2`, MIN(`t`) FROM `{ALIASES}` WHERE {where} "
            "GROUP BY `name1`, `name2` FOR UPDATE",
            [name for a, b, _ in chunk for name in (a, b)],
        )
        stored = {(a, b): f"{t:%Y-%m-%d %H:%M:%S}" for a, b, t in await cur.fetchall()}
        new = [p for p in chunk if (p[0], p[1]) not in stored]
        earlier = [(t, a, b, t) for a, b, t in chunk if (a, b) in stored and t < stored[a, b]]
        if new:
            await cur.executemany(
                f"INSERT INTO `{ALIASES}` (`name1`, `name2`, `t`) VALUES (%s, %s, %s) "
                "ON DUPLICATE KEY UPDATE `t` = LEAST(`t`, VALUES(`t`))", new)
        for row in earlier:
            await cur.execute(f"UPDATE `{ALIASES}` SET `t` = %s WHERE `name1` = %s AND "
                              "`name2` = %s AND `t` > %s", row)


STATEMENT_BYTES = 4 << 20  # split bulk inserts well below max_allowed_packet (16 MiB default)
UPSERT_NOTHING = " ON DUPLICATE KEY UPDATE `id` = `id`"


def event_values(row: EventRow) -> str:
    """One events row as SQL: ids are ints and t a DATETIME literal, so nothing needs escaping."""
    eid, t, n, user, origin = row
    return f"({eid:d},'{t}',{n:d},{user:d},{origin:d})"


def property_values(row: PropertyRow) -> str:
    """One properties row as SQL; the value escaped for the (utf8mb4) connection."""
    pid, t, user, origin, event, key, value = row
    text = "NULL" if value is None else "'" + escape_string(value) + "'"
    return f"({pid},'{t}',{user},{origin},{'NULL' if event is None else event},{key},{text})"


def bulk_insert(head: str, values: Iterable[str]) -> Iterator[str]:
    """Multi-row INSERT statements of at most about STATEMENT_BYTES each (idempotent upserts).

    Built by hand: three times faster than the driver's generic parameter escaping.
    """
    chunk: list[str] = []
    size = 0
    for value in values:
        chunk.append(value)
        size += len(value) + 1
        if size >= STATEMENT_BYTES:
            yield head + ",".join(chunk) + UPSERT_NOTHING
            chunk, size = [], 0
    if chunk:
        yield head + ",".join(chunk) + UPSERT_NOTHING


REPOINT_PAIRS = 500  # (user, origin) pairs per re-pointing UPDATE


def repoint_statements(table: str, repoints: list[Repoint]) -> Iterator[str]:
    """UPDATEs moving each group's rows onto its canonical user: one per table per batch
    (more when a batch, or a first import's closing pass, touches very many groups).

    A row moves when its origin is a member of a touched group and it points at another user
    of that group; ``(user_id, origin_user_id) IN (...)`` is a range scan of the user index,
    and one statement replaces a round trip per group. Groups never share members, so the
    CASE on the origin picks each row's canonical user. Ids are ints: nothing needs escaping.
    """
    case: list[str] = []
    pairs: list[str] = []
    for rp in repoints:
        case.extend(f"WHEN {m:d} THEN {rp.canonical_id:d}" for m in rp.member_ids)
        pairs.extend(f"({u:d},{m:d})" for u in rp.user_ids if u != rp.canonical_id
                     for m in rp.member_ids)
        if len(pairs) >= REPOINT_PAIRS:
            yield _repoint(table, case, pairs)
            case, pairs = [], []
    if pairs:
        yield _repoint(table, case, pairs)


def _repoint(table: str, case: list[str], pairs: list[str]) -> str:
    return (f"UPDATE `{table}` SET `user_id` = CASE `origin_user_id` {' '.join(case)} END "
            f"WHERE (`user_id`, `origin_user_id`) IN ({','.join(pairs)})")


def _ident(name: str) -> str:
    """A database name safe inside backquotes."""
    return name.replace("`", "``")
