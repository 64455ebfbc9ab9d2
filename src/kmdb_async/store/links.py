"""MariaDB/MySQL: alias links, the stored pairs of the ``aliases`` table.

Pairs are upserted with their earliest time (``upsert_aliases``, also run inside a first
import's bulk load, loaddata.py) together with the re-pointing of the groups they join
(repoint.py), one transaction at a time; the alias cache (aliases.py) looks pairs up by name
(``alias_links``), through the bulk load's open transaction while there is one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from functools import partial
from typing import Any

from pymysql.converters import escape_string

from ..resolver import ResolvedBatch
from ..settings import DatabaseURL, Settings
from .base import ALIAS_LINKS
from .repoint import repoint_statements
from .schema import ALIASES, EVENTS, PROPERTIES
from .server import MySQLServer
from .statements import LOOKUP_CHUNK, NAME_SQL, PAIR_SQL

# Names per lookup of aliases: past about 200 (eq_range_index_dive_limit) MariaDB 10.11 chose
# a full index scan over the pairs, 30 ms for 1,000 names among 46,000 pairs (100: 2 ms).
ALIAS_CHUNK = 100


class MySQLLinks(MySQLServer):
    """The MySQL store's alias pair writes and lookups."""

    def __init__(self, url: DatabaseURL, settings: Settings) -> None:
        super().__init__(url, settings)
        self._links = asyncio.Lock()  # our writers lock alias pairs one transaction at a time

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

    async def write_links(self, rb: ResolvedBatch) -> None:
        """Upsert the batch's alias pairs and re-point their groups, in one transaction."""
        if not rb.aliases and not rb.repoints:
            return

        async def op() -> None:
            async with self._links, self._cursor(transaction=True) as cur:
                if rb.aliases:
                    await upsert_aliases(cur, rb.aliases, self.per_statement(LOOKUP_CHUNK, PAIR_SQL))
                for table in (EVENTS, PROPERTIES):
                    for statement in repoint_statements(table, rb.repoints, self.statement_bytes):
                        await cur.execute(statement)

        await self._retry(op)


async def upsert_aliases(cur: Any, pairs: list[tuple[str, str, str]], chunk: int) -> None:
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
