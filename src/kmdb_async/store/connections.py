"""Connections to MariaDB/MySQL that never wait forever, and the pool that hands them out.

Every wait for the server is bounded by the network timeout (``--network-timeout``, seconds),
yet a statement that is merely long is never cut:

- connecting (TCP, handshake, login, session setup) must end within the timeout;
- a wait for the server (its answer, or room to send a LOAD DATA stream's rows) that passes the
  timeout asks the server, on a new connection, whether it still runs this connection's
  command. While it does (a re-pointing UPDATE, an index build, a lock wait), the wait goes on.
  When the server does not answer that question within the timeout either, or no longer runs
  the command (twice in a row: an answer may be on its way), the connection is closed and the
  wait fails as a lost connection (error 2013, "timed out"), which the store retries.

aiomysql's own pool is not used: it connects without a bound, holding a lock every other
``acquire`` waits for, and its ``wait_closed`` waits for every connection in use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiomysql
import pymysql
from pymysql.constants import CR

T = TypeVar("T")

# What a server is doing for a connection (information_schema.PROCESSLIST.COMMAND); "Sleep":
# waiting for the client, so an answer we still wait for was lost.
COMMAND_OF = "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = %s"
IDLE = "Sleep"
CHANCES = 2  # timeouts in a row with the command not running before a wait fails


class Watchdog:
    """Bounded connects and watched waits for the connections to one server.

    ``timeout`` is in seconds; ``probe_params`` gives the parameters of the short connection
    that asks whether a command still runs.
    """

    def __init__(self, timeout: float, probe_params: Callable[[], dict[str, Any]]) -> None:
        self.timeout = timeout
        self._probe_params = probe_params

    async def connect(self, params: dict[str, Any]) -> WatchedConnection:
        """A connection opened within the timeout, whose waits for the server are watched."""
        conn = await self._open(params)
        conn.watchdog = self
        return conn

    async def _open(self, params: dict[str, Any]) -> WatchedConnection:
        conn = WatchedConnection(**{**params, "connect_timeout": self.timeout})
        timer = asyncio.timeout(self.timeout)
        try:
            async with timer:
                await conn._connect()  # noqa: SLF001 - aiomysql.connect, without its unbounded reads
        except BaseException as e:
            conn.close()
            # aiomysql's own connect timeout (TCP) arrives as error 2003 caused by TimeoutError.
            if timer.expired() or isinstance(e.__cause__, TimeoutError):
                raise pymysql.err.OperationalError(
                    CR.CR_CONN_HOST_ERROR,
                    f"timed out connecting (no answer in {self.timeout:g} s)") from None
            raise
        return conn

    async def running(self, thread_id: int) -> bool:
        """Whether the server is still running a command of connection ``thread_id``.

        An error answer (too many connections, say) proves the server alive: True. Raises
        OperationalError 2013 when the server does not answer within the timeout.
        """
        try:
            conn = await self._open(self._probe_params())
            try:
                async with asyncio.timeout(self.timeout), conn.cursor() as cur:
                    await cur.execute(COMMAND_OF, (thread_id,))
                    row = await cur.fetchone()
            finally:
                conn.close()
        except pymysql.err.MySQLError as e:
            code = e.args[0] if e.args else None
            if code not in (CR.CR_CONN_HOST_ERROR, CR.CR_SERVER_LOST, CR.CR_SERVER_GONE_ERROR):
                return True
            raise self._lost("and none to a new connection") from None
        except (TimeoutError, OSError):
            raise self._lost("and none to a new connection") from None
        return row is not None and row[0] != IDLE

    def _lost(self, why: str) -> pymysql.err.OperationalError:
        return pymysql.err.OperationalError(
            CR.CR_SERVER_LOST, f"timed out (no answer in {self.timeout:g} s, {why})")


class WatchedConnection(aiomysql.Connection):  # type: ignore[misc]
    """An aiomysql connection whose waits for the server are watched (see the module)."""

    watchdog: Watchdog | None = None  # None while connecting: the connect's own bound applies

    async def _read_bytes(self, num_bytes: int) -> bytes:
        reader = self._reader
        if self.watchdog is None or (reader is not None and len(reader._buffer) >= num_bytes):  # noqa: SLF001
            return await super()._read_bytes(num_bytes)  # type: ignore[no-any-return]  # buffered: no wait
        return await self.watched(lambda: super(WatchedConnection, self)._read_bytes(num_bytes))

    async def watched(self, wait: Callable[[], Awaitable[T]]) -> T:
        """``await wait()``, a wait for the server that is cancelled and tried again at each
        timeout while the server says it still runs our command; see the module."""
        watchdog = self.watchdog
        if watchdog is None:
            return await wait()
        chances = CHANCES
        while True:
            timer = asyncio.timeout(watchdog.timeout)
            try:
                async with timer:
                    return await wait()
            except TimeoutError:
                if not timer.expired():
                    raise
            try:
                running = await watchdog.running(self.server_thread_id[0])
            except BaseException:
                self.close()
                raise
            chances = CHANCES if running else chances - 1
            if not chances:
                self.close()
                raise watchdog._lost("and the server runs nothing for this connection")  # noqa: SLF001


def usable(conn: aiomysql.Connection) -> bool:
    """Open, and not closed by the server while it sat in the pool."""
    reader = conn._reader  # noqa: SLF001
    return not conn.closed and not (reader.at_eof() or reader.exception() or reader.eof_received)


class ConnectionPool:
    """At most ``size`` connections at once, opened by ``connect`` (which bounds its time)."""

    def __init__(self, connect: Callable[[], Awaitable[aiomysql.Connection]], size: int) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._idle: list[aiomysql.Connection] = []  # the last released is the first reused
        self._closing = False

    async def acquire(self) -> aiomysql.Connection:
        """An idle usable connection, else a new one; waits while ``size`` are in use."""
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if usable(conn):
                    return conn
                conn.close()
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: aiomysql.Connection) -> None:
        """Give ``conn`` back; one closed, in a transaction, or released after ``close`` is
        closed, never reused."""
        if conn.closed or self._closing or conn.get_transaction_status():
            conn.close()
        else:
            self._idle.append(conn)
        self._slots.release()

    def close(self) -> None:
        """Close the idle connections; those in use are closed when released."""
        self._closing = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
