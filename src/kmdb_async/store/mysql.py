"""MariaDB/MySQL through aiomysql: the only module that talks to the database.

Errors of the driver become TransientError (lost connection, deadlock, lock wait, server
unreachable) or TerminalError (everything else), with messages that never carry the password.
Every write is idempotent (``ON DUPLICATE KEY UPDATE``), so a transaction retried after a lost
connection leaves the same rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiomysql
import pymysql

from ..errors import KmdbError, TerminalError, TransientError, retrying
from ..resolver import ResolvedBatch
from ..settings import DatabaseURL, Settings
from . import schema
from .base import SQLStore
from .schema import ALIASES, EVENTS, PROPERTIES, REVISIONS

T = TypeVar("T")

# Error codes worth a retry: deadlock, lock wait timeout, server gone / lost / unreachable,
# connection killed, server shutting down.
TRANSIENT_CODES = frozenset({1205, 1213, 1927, 1053, 2003, 2006, 2013, 2055, 1040, 1317})
LOOKUP_CHUNK = 1000  # names per IN (...) lookup
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
        self.collation = "utf8mb4_nopad_bin"

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

    async def open(self) -> None:
        url = self.url

        async def connect() -> None:
            async with self._connect(None) as conn, conn.cursor() as cur:
                await cur.execute("SELECT VERSION()")
                (version,) = await cur.fetchone()
                if "mariadb" not in version.lower():
                    self.collation = "utf8mb4_0900_bin"  # MySQL 8: binary and NO PAD
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
            "init_command": "SET time_zone = '+00:00', sql_notes = 0, "
            "sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
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

    async def flush(self) -> None:
        """Empty the imported data and progress (filter tables stay)."""
        for table in schema.DATA_TABLES:
            await self.execute(f"TRUNCATE TABLE `{table}`")
        self._forget_ids()

    # -- reads at the start of a run ------------------------------------------------------

    # -- identities and keys ------------------------------------------------------------

    async def _intern(self, table: str, column: str, values: list[str]) -> dict[str, int]:
        ids: dict[str, int] = {}
        for start in range(0, len(values), LOOKUP_CHUNK):
            chunk = sorted(values[start : start + LOOKUP_CHUNK])  # sorted: fewer lock conflicts

            async def op(chunk: list[str] = chunk) -> list[tuple[Any, ...]]:
                marks = ",".join(["(%s)"] * len(chunk))
                async with self._cursor() as cur:
                    await cur.execute(
                        f"INSERT INTO `{table}` (`{column}`) VALUES {marks} "
                        f"ON DUPLICATE KEY UPDATE `id` = `id`",
                        chunk,
                    )
                    await cur.execute(
                        f"SELECT `{column}`, `id` FROM `{table}` WHERE `{column}` IN "
                        f"({','.join(['%s'] * len(chunk))})",
                        chunk,
                    )
                    return list(await cur.fetchall())

            ids.update(await self._retry(op))
        return ids

    # -- batch writes -----------------------------------------------------------------------

    async def write_rows(self, rb: ResolvedBatch) -> None:
        """Insert the batch's events and properties in one transaction (idempotent)."""
        if not rb.events and not rb.properties:
            return

        async def op() -> None:
            async with self._cursor(transaction=True) as cur:
                if rb.events:
                    await cur.executemany(
                        f"INSERT INTO `{EVENTS}` (`id`, `t`, `n`, `user_id`, `origin_user_id`) "
                        "VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE `id` = `id`",
                        rb.events,
                    )
                if rb.properties:
                    await cur.executemany(
                        f"INSERT INTO `{PROPERTIES}` (`id`, `t`, `user_id`, `origin_user_id`, "
                        "`event_id`, `key`, `value`) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                        "ON DUPLICATE KEY UPDATE `id` = `id`",
                        rb.properties,
                    )

        await self._retry(op)

    async def write_links(self, rb: ResolvedBatch) -> None:
        """Upsert the batch's alias pairs and re-point their groups, in one transaction."""
        if not rb.aliases and not rb.repoints:
            return

        async def op() -> None:
            async with self._cursor(transaction=True) as cur:
                if rb.aliases:
                    await cur.executemany(
                        f"INSERT INTO `{ALIASES}` (`name1`, `name2`, `t`) VALUES (%s, %s, %s) "
                        "ON DUPLICATE KEY UPDATE `t` = LEAST(`t`, VALUES(`t`))",
                        rb.aliases,
                    )
                for rp in rb.repoints:
                    users = ",".join(["%s"] * len(rp.user_ids))
                    members = ",".join(["%s"] * len(rp.member_ids))
                    for table in (EVENTS, PROPERTIES):
                        await cur.execute(
                            f"UPDATE `{table}` SET `user_id` = %s WHERE `user_id` IN ({users}) "
                            f"AND `origin_user_id` IN ({members}) AND `user_id` <> %s",
                            (rp.canonical_id, *rp.user_ids, *rp.member_ids, rp.canonical_id),
                        )

        await self._retry(op)

    # -- the database-side cursor and run records ------------------------------------------

    async def save_cursor(self, revision: int, offset: int) -> None:
        await self.execute(
            f"INSERT INTO `{REVISIONS}` (`revision`, `offset`) VALUES (%s, %s) "
            "ON DUPLICATE KEY UPDATE `offset` = GREATEST(`offset`, VALUES(`offset`))",
            (revision, offset),
        )


def _ident(name: str) -> str:
    """A database name safe inside backquotes."""
    return name.replace("`", "``")
