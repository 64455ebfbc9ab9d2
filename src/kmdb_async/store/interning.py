"""MariaDB/MySQL: interning, the ids of users and keys (event names, property keys).

A batch's names missing from the store's id caches (base.py's IdCache) get their ids here, one
call per batch: looked up in chunks, the absent ones inserted under one lock. During a first
import, while a cache holds every row of its table, names it lacks are new and need no lookup:
new users get ids counted here and streamed into the bulk load's users statement
(loaddata.py), new keys are inserted with ids counted from the first of each multi-row INSERT.
"""

from __future__ import annotations

import asyncio
from functools import partial

from pymysql.converters import escape_string

from ..errors import KmdbError, TransientError
from ..settings import DatabaseURL, Settings
from .base import IdCache
from .loaddata import BulkLoad
from .server import DRIVER_ERRORS, MySQLServer
from .statements import LOOKUP_CHUNK, NAME_SQL


class MySQLInterning(MySQLServer):
    """The MySQL store's ``_intern`` (base.py's ``user_ids`` and ``key_ids`` call it)."""

    def __init__(self, url: DatabaseURL, settings: Settings) -> None:
        super().__init__(url, settings)
        self._interning = asyncio.Lock()  # one INSERT of new users/keys at a time (see _intern)
        self._id_step = 0  # auto-increment step when a multi-row INSERT's ids are consecutive
        self._next_user = 1  # the id of the next user a bulk load streams

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
