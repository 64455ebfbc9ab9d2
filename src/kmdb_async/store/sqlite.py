"""The embedded default: one SQLite file, through the standard library's sqlite3.

Same tables, same rules as the MariaDB store: TEXT compares byte for byte (exact strings),
writes are idempotent upserts, and the revision cursor lives in ``kmdb_revisions`` when no
Redis is set. SQLite allows one writer at a time, so calls are serialised on one connection
that runs in a worker thread; WAL journaling lets readers (``status``) look while it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, TypeVar

from ..errors import TerminalError, TransientError, retrying
from ..resolver import ResolvedBatch
from ..settings import Settings
from ..tasks import in_thread
from . import schema
from .base import IdCache, SQLStore
from .repoint import repoint_statements
from .schema import ALIASES, EVENTS, KEYS, PROPERTIES, REVISIONS, RUNS, USERS

T = TypeVar("T")
LOOKUP_CHUNK = 500  # names per IN (...) lookup (SQLite allows 32766 variables)
REPOINT_BYTES = 1 << 20  # bytes of a re-pointing UPDATE at most


def ddl() -> list[str]:
    """CREATE TABLE statements of the embedded database (same tables as MariaDB's)."""
    name = "TEXT NOT NULL"
    return [
        f"CREATE TABLE IF NOT EXISTS `{KEYS}` (`id` INTEGER PRIMARY KEY, `string` {name} UNIQUE)",
        f"CREATE TABLE IF NOT EXISTS `{USERS}` (`id` INTEGER PRIMARY KEY, `name` {name} UNIQUE)",
        f"""CREATE TABLE IF NOT EXISTS `{EVENTS}` (`id` INTEGER PRIMARY KEY, `t` TEXT NOT NULL,
            `n` INTEGER NOT NULL, `user_id` INTEGER NOT NULL, `origin_user_id` INTEGER NOT NULL)""",
        *row_indexes(EVENTS),
        f"""CREATE TABLE IF NOT EXISTS `{PROPERTIES}` (`id` INTEGER PRIMARY KEY, `t` TEXT NOT NULL,
            `user_id` INTEGER NOT NULL, `origin_user_id` INTEGER NOT NULL, `event_id` INTEGER,
            `key` INTEGER NOT NULL, `value` TEXT)""",
        *row_indexes(PROPERTIES),
        f"""CREATE TABLE IF NOT EXISTS `{ALIASES}` (`id` INTEGER PRIMARY KEY, `name1` {name},
            `name2` {name}, `t` TEXT NOT NULL, UNIQUE (`name1`, `name2`))""",
        f"CREATE INDEX IF NOT EXISTS `index_aliases_on_name2` ON `{ALIASES}` (`name2`)",
        *(f"CREATE TABLE IF NOT EXISTS `{table}` (`name` {name} PRIMARY KEY)"
          for table in (*schema.FILTER_TABLES, schema.LATE_LINKS)),
        f"""CREATE TABLE IF NOT EXISTS `{REVISIONS}` (`revision` INTEGER PRIMARY KEY,
            `offset` INTEGER NOT NULL, `updated_at` TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)""",
        f"""CREATE TABLE IF NOT EXISTS `{RUNS}` (`id` INTEGER PRIMARY KEY, `started_at` TEXT NOT NULL,
            `finished_at` TEXT NOT NULL, `status` TEXT NOT NULL, `summary` TEXT NOT NULL)""",
    ]


def row_indexes(table: str) -> list[str]:
    """CREATE INDEX statements of ``table``'s secondary indexes (schema.ROW_INDEXES)."""
    return [f"CREATE INDEX IF NOT EXISTS `{name}` ON `{table}` ({columns})"
            for name, columns in schema.ROW_INDEXES[table].items()]


async def _in_thread(call: Callable[[], T]) -> T:
    """``call()`` in a worker thread. If we are cancelled, wait for the thread all the same:
    the connection must not be closed (or reused) while it still runs there."""
    future = asyncio.ensure_future(in_thread(call))  # in_thread: a lost wake-up is caught
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


def hold_lock(path: Path, holder: str = "import") -> IO[str]:
    """Lock ``path`` for this process (it records our pid and ``holder``, the command) or
    refuse, naming the command and process that hold it.

    The holder removes the file before it lets go (``release_lock``), so a process that
    opened the file just before may then lock a file no longer there: it checks that
    ``path`` still names the file it locked, and starts again if not. So two processes never
    both hold the lock, and no lock file is left behind."""
    while True:
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid, _, running = handle.read().strip().partition(" ")
            handle.close()
            raise TerminalError(
                f"another kmdb-async {running or 'import'} is running on {path.with_suffix('')} "
                f"(process {pid or 'unknown'}); wait for it to finish") from None
        if _same_file(path, handle):
            break
        handle.close()  # it was removed by the holder we waited for: lock the new one
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {holder}")
    handle.flush()
    return handle


def _same_file(path: Path, handle: IO[str]) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def release_lock(path: Path, handle: IO[str]) -> None:
    """Remove the lock file, then let go (removed while still held: see ``hold_lock``)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    handle.close()


class SQLiteStore(SQLStore):
    """The embedded store: the same methods as MySQLStore, on one SQLite file."""

    def __init__(self, path: Path, settings: Settings) -> None:
        super().__init__(settings)
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._busy = asyncio.Lock()  # one statement or transaction at a time
        self._lock_file: IO[str] | None = None

    def __str__(self) -> str:
        return f"sqlite:///{self.path}"

    # -- connection ------------------------------------------------------------------------

    async def open(self, create: bool = True) -> None:
        if not create and not self.path.is_file():
            raise TerminalError(f"the embedded database {self.path} does not exist: nothing "
                                "was imported into it")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=30)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL survives a killed process
        except (OSError, sqlite3.Error) as e:
            raise TerminalError(f"cannot open the embedded database {self.path}: {e}") from None
        self._db = db

    async def close(self) -> None:
        if self._lock_file is not None:
            release_lock(self._lock_path(), self._lock_file)
            self._lock_file = None
        if self._db is not None:
            async with self._busy:
                self._db.close()
            self._db = None

    async def _run(self, work: Callable[[sqlite3.Connection], T], transaction: bool = False) -> T:
        """Run ``work`` in the worker thread, in a transaction when asked, with retries."""
        assert self._db is not None, "store is not open"
        db = self._db

        def call() -> T:
            if not transaction:
                return work(db)
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        s = self._settings
        async for attempt in retrying(s.retry_attempts, s.retry_max_wait):
            with attempt:
                try:
                    async with self._busy:
                        return await _in_thread(call)
                except sqlite3.OperationalError as e:
                    if "locked" in str(e) or "busy" in str(e):
                        raise TransientError(f"embedded database {self.path}: {e}") from None
                    raise TerminalError(f"embedded database {self.path}: {e}") from None
                except sqlite3.Error as e:
                    raise TerminalError(f"embedded database {self.path}: {e}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement (``%s`` placeholders, as for MariaDB); returns its rows."""
        values = tuple(args)
        return await self._run(lambda db: db.execute(sql.replace("%s", "?"), values).fetchall())

    async def table_names(self) -> set[str]:
        rows = await self.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}

    # -- schema, lock, flush ---------------------------------------------------------------

    async def ensure_schema(self) -> None:
        def create(db: sqlite3.Connection) -> None:
            for statement in ddl():
                db.execute(statement)

        await self._run(create)

    async def acquire_import_lock(self, holder: str = "import") -> None:
        """An exclusive lock on ``<file>.lock``; the kernel drops it when the process dies."""
        self._lock_file = hold_lock(self._lock_path(), holder)

    def _lock_path(self) -> Path:
        return Path(f"{self.path}.lock")

    async def flush(self) -> None:
        def empty(db: sqlite3.Connection) -> None:
            for table in schema.DATA_TABLES:
                db.execute(f"DELETE FROM `{table}`")

        await self._run(empty, transaction=True)
        self._forget_ids()

    # -- identities and keys ---------------------------------------------------------------

    async def _intern(self, table: str, column: str, values: list[str],
                      cache: IdCache) -> dict[str, int]:
        def intern(db: sqlite3.Connection) -> dict[str, int]:
            ids: dict[str, int] = {}
            for start in range(0, len(values), LOOKUP_CHUNK):
                chunk = values[start:start + LOOKUP_CHUNK]
                db.executemany(f"INSERT OR IGNORE INTO `{table}` (`{column}`) VALUES (?)",
                               [(v,) for v in chunk])
                marks = ",".join("?" * len(chunk))
                ids.update(db.execute(
                    f"SELECT `{column}`, `id` FROM `{table}` WHERE `{column}` IN ({marks})",
                    chunk).fetchall())
            return ids

        return cache.add(await self._run(intern, transaction=True))

    # -- batch writes ----------------------------------------------------------------------

    async def write_rows(self, rb: ResolvedBatch) -> None:
        if not rb.events and not rb.properties:
            return

        def write(db: sqlite3.Connection) -> None:
            db.executemany(f"INSERT OR IGNORE INTO `{EVENTS}` (`id`, `t`, `n`, `user_id`, "
                           "`origin_user_id`) VALUES (?, ?, ?, ?, ?)", rb.events)
            db.executemany(f"INSERT OR IGNORE INTO `{PROPERTIES}` (`id`, `t`, `user_id`, "
                           "`origin_user_id`, `event_id`, `key`, `value`) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", rb.property_rows())

        await self._run(write, transaction=True)

    async def write_links(self, rb: ResolvedBatch) -> None:
        if not rb.aliases and not rb.repoints:
            return

        def write(db: sqlite3.Connection) -> None:
            db.executemany(f"INSERT INTO `{ALIASES}` (`name1`, `name2`, `t`) VALUES (?, ?, ?) "
                           "ON CONFLICT (`name1`, `name2`) DO UPDATE SET `t` = MIN(`t`, excluded.`t`)",
                           rb.aliases)
            for table in (EVENTS, PROPERTIES):
                for statement in repoint_statements(table, rb.repoints, REPOINT_BYTES):
                    db.execute(statement)

        await self._run(write, transaction=True)

    # -- the database-side cursor and run records ------------------------------------------

    async def save_cursor(self, revision: int, offset: int) -> None:
        await self.execute(
            f"INSERT INTO `{REVISIONS}` (`revision`, `offset`) VALUES (%s, %s) ON CONFLICT "
            "(`revision`) DO UPDATE SET `offset` = MAX(`offset`, excluded.`offset`), "
            "`updated_at` = CURRENT_TIMESTAMP", (revision, offset))
