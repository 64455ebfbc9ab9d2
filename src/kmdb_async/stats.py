"""``kmdb-async stats``: what the database holds, and how clean the last import was.

Plain, portable SQL through the store's ``execute`` (no SQLAlchemy needed): table counts, the
time range of the events, the most frequent events, the users with the most events, the last
import (the latest run that read lines) with its share of rejected lines (``kmdb_runs.summary``,
keys ``lines`` and ``rejects``), and when the last run finished (the database's last check for
new data, which a cron run that found nothing new still is).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from .settings import Settings
from .store import open_store
from .store.schema import ALIASES, EVENTS, KEYS, PROPERTIES, RUNS, USERS

COUNTED = (EVENTS, PROPERTIES, USERS, ALIASES, KEYS)
RUNS_PAGE = 100  # runs read at once while looking back for the last one that imported


class Queryable(Protocol):
    async def execute(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class Ranked:
    """A name (event name or canonical identity) and its number of events."""

    name: str
    events: int


@dataclass(frozen=True)
class LastRun:
    """An import run: its times (UTC) and lines read / rejected."""

    started_at: str
    finished_at: str
    status: str
    lines: int
    rejects: int

    @property
    def reject_share(self) -> float:
        """Rejected lines / lines read, 0.0 for a run that read nothing."""
        return self.rejects / self.lines if self.lines else 0.0


@dataclass(frozen=True)
class Stats:
    """A snapshot of one database; times are UTC ``YYYY-MM-DD HH:MM:SS``."""

    database: str  # the database, never with its password
    counts: dict[str, int]  # rows per table
    users_with_events: int  # canonical users owning at least one event
    first_event: str | None
    last_event: str | None
    top_events: list[Ranked]
    top_users: list[Ranked]
    last_import: LastRun | None  # the latest run that read lines
    last_check: str | None  # when the latest run (importing or not) finished

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.last_import is not None:
            data["last_import"]["reject_share"] = round(self.last_import.reject_share, 6)
        return data

    def text(self) -> str:
        c = self.counts
        lines = [
            f"database    {self.database}",
            f"events      {c[EVENTS]:,}",
            f"properties  {c[PROPERTIES]:,}",
            f"users       {c[USERS]:,} identities, {self.users_with_events:,} with events",
            f"aliases     {c[ALIASES]:,}",
            f"keys        {c[KEYS]:,}",
            f"time range  {self.first_event} .. {self.last_event} (UTC)"
            if self.first_event else "time range  (no events)",
        ]
        run = self.last_import
        if run is None:
            lines.append("last import (none recorded)")
        else:
            lines.append(f"last import {run.started_at} .. {run.finished_at} {run.status}: "
                         f"{run.lines:,} lines, {run.rejects:,} rejected "
                         f"({run.reject_share:.2%})")
        if self.last_check is not None:
            lines.append(f"last check  {self.last_check} (UTC, the latest run)")
        for title, ranked in (("top events", self.top_events), ("top users by events", self.top_users)):
            lines += ["", title]
            width = max((len(r.name) for r in ranked), default=0)
            lines += [f"  {r.name:<{width}}  {r.events:>10,}" for r in ranked] or ["  (none)"]
        return "\n".join(lines)


async def collect(store: Queryable, top: int = 10) -> Stats:
    """Read the statistics through ``store`` (open); ``top`` rows per ranking."""
    counts = {}
    for table in COUNTED:
        [(counts[table],)] = await store.execute(f"SELECT COUNT(*) FROM `{table}`")
    [(users_with_events, first, last)] = await store.execute(
        f"SELECT COUNT(DISTINCT `user_id`), MIN(`t`), MAX(`t`) FROM `{EVENTS}`")
    # Ties are broken by name (binary order) so the output is stable.
    top_events = await store.execute(
        f"SELECT k.`string`, c.`events` FROM (SELECT `n`, COUNT(*) AS `events` FROM `{EVENTS}` "
        f"GROUP BY `n`) c JOIN `{KEYS}` k ON k.`id` = c.`n` "
        f"ORDER BY c.`events` DESC, k.`string` LIMIT {int(top)}")
    top_users = await store.execute(
        f"SELECT u.`name`, c.`events` FROM (SELECT `user_id`, COUNT(*) AS `events` FROM `{EVENTS}` "
        f"GROUP BY `user_id`) c JOIN `{USERS}` u ON u.`id` = c.`user_id` "
        f"ORDER BY c.`events` DESC, u.`name` LIMIT {int(top)}")
    latest = await store.execute(f"SELECT `finished_at` FROM `{RUNS}` ORDER BY `id` DESC LIMIT 1")
    return Stats(
        database="",
        counts={table: int(n) for table, n in counts.items()},
        users_with_events=int(users_with_events),
        first_event=_time(first),
        last_event=_time(last),
        top_events=[Ranked(name, int(n)) for name, n in top_events],
        top_users=[Ranked(name, int(n)) for name, n in top_users],
        last_import=await last_import(store),
        last_check=_time(latest[0][0]) if latest else None,
    )


async def last_import(store: Queryable) -> LastRun | None:
    """The latest run that read lines (cron runs that found nothing new are passed over)."""
    before: int | None = None
    while True:
        page = await store.execute(
            f"SELECT `id`, `started_at`, `finished_at`, `status`, `summary` FROM `{RUNS}` "
            + ("WHERE `id` < %s " if before is not None else "")
            + f"ORDER BY `id` DESC LIMIT {RUNS_PAGE}", () if before is None else (before,))
        for row in page:
            run = _run_of(row[1:])
            if run.lines:
                return run
        if len(page) < RUNS_PAGE:
            return None
        before = int(page[-1][0])


async def read_stats(settings: Settings, top: int = 10) -> Stats:
    """Open the database of ``settings`` and collect its statistics."""
    store = open_store(settings)
    await store.open()
    try:
        stats = await collect(store, top)
    finally:
        await store.close()
    return replace(stats, database=settings.database_label())


def _time(value: Any) -> str | None:
    """A DATETIME as text: a ``datetime`` (MariaDB) or already text (SQLite)."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value)


def _run_of(row: tuple[Any, ...]) -> LastRun:
    started, finished, status, summary = row
    data = json.loads(summary)
    return LastRun(started_at=_time(started) or "", finished_at=_time(finished) or "",
                   status=str(status), lines=int(data.get("lines", 0)),
                   rejects=int(data.get("rejects", 0)))
