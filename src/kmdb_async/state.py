"""The revision cursor: how many bytes of each revision are imported.

Kept in Redis when KMDB_REDIS_URL is set (one hash per database, under its own key prefix),
otherwise in the database's ``kmdb_revisions`` table. The cursor only ever points at the end
of committed batches, and every write is idempotent, so a lost cursor costs re-reading only.
This is the only module that talks to Redis.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import asyncio_redis

from .errors import TerminalError, TransientError, retrying
from .settings import RedisURL, Settings

T = TypeVar("T")

CURSOR_KEY = "cursor"  # hash: revision -> imported byte offset


class Cursor(Protocol):
    """Per-revision imported byte offsets."""

    async def load(self) -> dict[int, int]: ...
    async def save(self, revision: int, offset: int) -> None: ...
    async def clear(self) -> None: ...
    async def close(self) -> None: ...


class DatabaseCursor:
    """The cursor in the database itself (no Redis configured)."""

    def __init__(self, store: DatabaseCursorStore) -> None:
        self._store = store

    async def load(self) -> dict[int, int]:
        return await self._store.load_cursor()

    async def save(self, revision: int, offset: int) -> None:
        await self._store.save_cursor(revision, offset)

    async def clear(self) -> None:
        await self._store.clear_cursor()

    async def close(self) -> None:
        pass


class DatabaseCursorStore(Protocol):
    async def load_cursor(self) -> dict[int, int]: ...
    async def save_cursor(self, revision: int, offset: int) -> None: ...
    async def clear_cursor(self) -> None: ...


class RedisCursor:
    """The cursor in Redis, under ``<prefix>:cursor``; every key of ours starts with the prefix."""

    def __init__(self, url: RedisURL, prefix: str, settings: Settings) -> None:
        self._url = url
        self._prefix = prefix
        self._settings = settings
        self._conn: asyncio_redis.Connection | None = None

    def key(self, name: str) -> str:
        return f"{self._prefix}:{name}"

    async def _call(self, op: Callable[[asyncio_redis.Connection], Awaitable[T]]) -> T:
        """``op`` on the connection (opened if need be), each try within the network timeout."""
        s = self._settings
        where = f"Redis at {self._url.host}:{self._url.port}"
        async for attempt in retrying(s.retry_attempts, s.retry_max_wait):
            with attempt:
                timer = asyncio.timeout(s.network_timeout)
                try:
                    async with timer:
                        if self._conn is None:
                            # No auto_reconnect: it retries a refused connection forever, unseen;
                            # our retry policy decides instead.
                            self._conn = await asyncio_redis.Connection.create(
                                host=self._url.host,
                                port=self._url.port,
                                password=self._url.password,
                                db=self._url.db,
                                auto_reconnect=False,
                            )
                        return await op(self._conn)
                except TimeoutError as e:
                    self._drop()
                    if not timer.expired():
                        raise TransientError(f"{where}: {e or type(e).__name__}") from None
                    raise TransientError(
                        f"{where}: timed out (no answer in {s.network_timeout:g} s)") from None
                except (OSError, ConnectionError, asyncio_redis.NotConnectedError) as e:
                    self._drop()
                    raise TransientError(f"{where}: {e or type(e).__name__}") from None
                except asyncio_redis.Error as e:
                    self._drop()
                    raise TerminalError(f"{where}: {e}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def load(self) -> dict[int, int]:
        async def op(c: asyncio_redis.Connection) -> dict[str, str]:
            return dict(await (await c.hgetall(self.key(CURSOR_KEY))).asdict())

        return {int(k): int(v) for k, v in (await self._call(op)).items()}

    async def save(self, revision: int, offset: int) -> None:
        async def op(c: asyncio_redis.Connection) -> None:
            await c.hset(self.key(CURSOR_KEY), str(revision), str(offset))

        await self._call(op)

    async def clear(self) -> None:
        """Delete every key under this database's prefix (never FLUSHDB: Redis may be shared)."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._prefix) + ":*"

        async def op(c: asyncio_redis.Connection) -> None:
            keys = await (await c.scan(match=pattern)).fetchall()
            if keys:
                await c.delete(list(keys))

        await self._call(op)

    async def close(self) -> None:
        self._drop()


def open_cursor(settings: Settings, store: DatabaseCursorStore) -> Cursor:
    """The Redis cursor when KMDB_REDIS_URL is set, else the database's."""
    url = settings.redis()
    if url is None:
        return DatabaseCursor(store)
    return RedisCursor(url, settings.key_prefix(), settings)
