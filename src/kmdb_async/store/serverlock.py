"""A database's lock on a MariaDB/MySQL server: one command that changes its tables at a time.

The lock is a server lock (``GET_LOCK``) held by a connection of its own, so it dies with
that connection, a crash included. A second lock, named after the command holding the first
(one of ``LOCK_HOLDERS``), tells a command that finds the database busy which one runs. Both
are released explicitly at the end: a closed socket frees them only once the server notices,
and a next run in the same process could still find them held.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import aiomysql
import pymysql

from .base import LOCK_HOLDERS

LOCK_PREFIX = "kmdb-async import "
NAME_MAX = 64  # characters of a lock name on MySQL (MariaDB allows more)
RELEASE_TIMEOUT = 10.0  # seconds to release the locks at the end; then the socket is dropped
# What a connection to the server can raise (the store translates them).
DRIVER_ERRORS = (pymysql.Error, OSError, ConnectionError, TimeoutError)


class ServerLock:
    """The lock of one database; ``connect`` opens a connection to the server."""

    def __init__(self, database: str, connect: Callable[[], Awaitable[aiomysql.Connection]]) -> None:
        self.name = LOCK_PREFIX + database
        self.holder = "import"  # the command that holds it, while it is held
        self._database = database
        self._connect = connect
        self._conn: aiomysql.Connection | None = None

    def holder_lock(self, holder: str) -> str:
        """Name of the lock saying that ``holder`` holds the database's lock."""
        name = f"{self.name} by {holder}"
        if len(name) <= NAME_MAX:
            return name
        return f"{LOCK_PREFIX}{hashlib.sha256(name.encode()).hexdigest()[:40]}"

    async def take(self, holder: str) -> tuple[int | None, str] | None:
        """Take the lock for ``holder``: None once held, else the connection id and the command
        (``"command"`` when unknown) holding it. Driver errors propagate."""
        conn = await self._connect()
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT GET_LOCK(%s, 0), IS_USED_LOCK(%s)", (self.name, self.name))
                got, holder_id = await cur.fetchone()
                if got == 1:
                    await cur.execute("DO GET_LOCK(%s, 0)", (self.holder_lock(holder),))
                    self._conn, self.holder = conn, holder
                    return None
                names = [self.holder_lock(h) for h in LOCK_HOLDERS]
                await cur.execute("SELECT " + ", ".join(["IS_USED_LOCK(%s)"] * len(names)), names)
                ids = await cur.fetchone()
        except BaseException:
            conn.close()
            raise
        await _quit(conn)
        running = [h for h, i in zip(LOCK_HOLDERS, ids, strict=True) if i is not None and i == holder_id]
        return holder_id, running[0] if running else "command"

    async def held(self) -> bool:
        """Whether we still hold the lock; a connection that lost it is dropped."""
        conn = self._conn
        if conn is None or conn.closed:
            self._conn = None
            return False
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (self.name,))
                (held,) = await cur.fetchone()
            if held == 1:
                return True
        except DRIVER_ERRORS:
            pass
        conn.close()
        self._conn = None
        return False

    async def release(self) -> None:
        """Release both locks, then close their connection (bounded in time: a server that
        does not answer frees them when it notices the closed connection)."""
        conn, self._conn = self._conn, None
        if conn is None or conn.closed:
            return
        names = (self.name, self.holder_lock(self.holder))

        async def release() -> None:
            async with conn.cursor() as cur:
                await cur.execute("DO RELEASE_LOCK(%s), RELEASE_LOCK(%s)", names)
            await _quit(conn)

        try:
            await asyncio.wait_for(release(), RELEASE_TIMEOUT)
        except DRIVER_ERRORS:  # TimeoutError included
            conn.close()


async def _quit(conn: aiomysql.Connection) -> None:
    """Say goodbye (COM_QUIT) and close; a connection that cannot is just closed."""
    try:
        await conn.ensure_closed()
    except DRIVER_ERRORS:
        conn.close()
