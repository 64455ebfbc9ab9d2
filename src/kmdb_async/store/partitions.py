"""Time partitions of ``events``, ``properties`` and ``aliases`` (SPEC section 2). MariaDB/MySQL only.

Layout: RANGE COLUMNS on ``t``. Partition ``pYYYYMMDD`` holds the days from that date up to
the next partition's (the first one also everything earlier), and the catch-all ``pmax``
(``MAXVALUE``) everything after the last bound. Planning below is pure (dates in, bounds and
SQL out); ``partition_tables`` at the end is the only part that talks to the database.

Re-running extends a table's partitions up to a later max date by splitting its catch-all
(``REORGANIZE PARTITION``): rows are moved by the server, never lost. A min date is only used
for a table that is not partitioned yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from ..errors import TerminalError
from ..settings import InvalidSetting, Settings
from . import open_store, schema
from .mysql import MySQLStore

#: Partitions per table allowed by the server: MariaDB, and MySQL since 5.6 (km-db's 1024 was
#: MySQL 5.5's limit).
MAX_PARTITIONS = 8192
#: km-db's advice: above about this many events per partition, time-range queries slow down.
ADVISED_EVENTS_PER_PARTITION = 1_000_000
CATCH_ALL = "pmax"
RANGE_METHOD = "RANGE COLUMNS"


def parse_date(text: str, option: str) -> date:
    """A ``YYYY-MM-DD`` option value as a date; a clear error names the option otherwise."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidSetting(option, f"must be a date YYYY-MM-DD, not {text!r}") from None


@dataclass(frozen=True)
class Layout:
    """A table's current time partitioning."""

    bounds: tuple[date, ...]  # finite upper bounds (exclusive), ascending
    catch_all: str | None  # name of the MAXVALUE partition, if there is one


def read_layout(table: str, rows: Sequence[tuple[str | None, ...]]) -> Layout | None:
    """The layout from information_schema.PARTITIONS rows (name, method, expression,
    description) in partition order; None when the table is not partitioned."""
    if not rows or rows[0][1] is None:
        return None
    bounds: list[date] = []
    catch_all = None
    for name, method, expression, description in rows:
        column = (expression or "").strip("` ")
        if method != RANGE_METHOD or column != schema.PARTITION_COLUMN:
            raise TerminalError(
                f"table `{table}` is partitioned by {method} ({expression}), not by "
                f"{RANGE_METHOD} on `{schema.PARTITION_COLUMN}`: kmdb-async will not change it"
            )
        if description == "MAXVALUE":
            catch_all = name
            continue
        text = (description or "").strip("'")
        try:
            day, _, time = text.partition(" ")
            bound = date.fromisoformat(day)
        except ValueError:
            bound = None
        if bound is None or time not in ("", "00:00:00"):
            raise TerminalError(
                f"partition {name} of `{table}` ends at {description}, not at a midnight: "
                "kmdb-async will not change it"
            )
        bounds.append(bound)
    return Layout(tuple(bounds), catch_all)


def grid(start: date, until: date, days: int) -> list[date]:
    """Upper bounds after ``start``, ``days`` apart, until one reaches ``until``."""
    step = timedelta(days=days)
    bounds: list[date] = []
    bound = start
    while bound < until:
        bound += step
        bounds.append(bound)
    return bounds


def partition_name(start: date) -> str:
    return f"p{start:%Y%m%d}"


@dataclass(frozen=True)
class TablePlan:
    """What partitioning one table means: its layout before and the bounds it gains."""

    table: str
    before: Layout | None
    start: date  # lower bound of the first added partition
    added: tuple[date, ...]  # upper bounds of the added partitions

    @property
    def bounds(self) -> tuple[date, ...]:
        """Every finite upper bound once the plan is applied."""
        return (self.before.bounds if self.before else ()) + self.added

    @property
    def total(self) -> int:
        """Partitions once the plan is applied, the catch-all included."""
        return len(self.bounds) + 1

    @property
    def changes(self) -> bool:
        return bool(self.added) or self.before is None or self.before.catch_all is None

    def sql(self) -> str | None:
        """The one ALTER TABLE that applies the plan; None when there is nothing to do."""
        if not self.changes:
            return None
        starts = (self.start, *self.added)[:len(self.added)]  # each added partition's first day
        parts = [f"PARTITION `{partition_name(s)}` VALUES LESS THAN ('{b.isoformat()}')"
                 for s, b in zip(starts, self.added, strict=True)]
        catch_all = self.before.catch_all if self.before and self.before.catch_all else CATCH_ALL
        parts.append(f"PARTITION `{catch_all}` VALUES LESS THAN (MAXVALUE)")
        definitions = ", ".join(parts)
        table = f"ALTER TABLE `{self.table}`"
        if self.before is None:
            keys = schema.PARTITION_KEYS[self.table]
            return (f"{table} {keys} PARTITION BY {RANGE_METHOD}(`{schema.PARTITION_COLUMN}`) "
                    f"({definitions})")
        if self.before.catch_all is None:
            return f"{table} ADD PARTITION ({definitions})"
        return f"{table} REORGANIZE PARTITION `{catch_all}` INTO ({definitions})"


def plan_table(table: str, before: Layout | None, min_date: date | None, max_date: date,
               days: int) -> TablePlan:
    """Partitions from ``min_date`` (a new layout) or from the last bound (an existing one)
    every ``days`` days until a bound reaches ``max_date``."""
    if days < 1:
        raise TerminalError("KMDB_DAYS_PER_PARTITION must be at least 1")
    if before is not None and before.bounds:
        start = before.bounds[-1]
    elif min_date is None:
        raise TerminalError(
            f"table `{table}` is not partitioned yet: KMDB_MIN_DATE (--min-date) is required")
    else:
        start = min_date
        if max_date <= min_date:
            raise TerminalError(f"KMDB_MAX_DATE {max_date} must be after KMDB_MIN_DATE {min_date}")
    return TablePlan(table, before, start, tuple(grid(start, max_date, days)))


def check_limit(plans: Sequence[TablePlan], limit: int = MAX_PARTITIONS) -> None:
    """Refuse, before anything changes, a plan that would pass the server's limit."""
    for plan in plans:
        if plan.total > limit:
            raise TerminalError(
                f"`{plan.table}` would have {plan.total:,} partitions (from {plan.start} to "
                f"{plan.bounds[-1]} plus the catch-all), over the server's limit of {limit:,}: "
                "use more KMDB_DAYS_PER_PARTITION or a shorter date range; nothing was changed"
            )


def events_per_partition(bounds: Sequence[date], day_counts: Mapping[date, int]) -> list[int]:
    """Events in each partition (the catch-all last) given events per UTC day."""
    counts = [0] * (len(bounds) + 1)
    for day, count in day_counts.items():
        counts[_index(bounds, day)] += count
    return counts


def _index(bounds: Sequence[date], day: date) -> int:
    low, high = 0, len(bounds)
    while low < high:  # the first bound above ``day``
        middle = (low + high) // 2
        if bounds[middle] <= day:
            low = middle + 1
        else:
            high = middle
    return low


def advice(bounds: Sequence[date], day_counts: Mapping[date, int]) -> str:
    """One line on how many events per partition the current data gives."""
    counts = events_per_partition(bounds, day_counts)
    total = sum(counts)
    if not total:
        return "events per partition: no events yet"
    used = [c for c in counts if c]
    largest = max(range(len(counts)), key=counts.__getitem__)
    name = CATCH_ALL if largest == len(bounds) else f"the one ending {bounds[largest]}"
    line = (f"events per partition with the current data: {total:,} events in {len(used)} of "
            f"{len(counts)} partitions, at most {counts[largest]:,} ({name}), "
            f"{total // len(used):,} on average over those holding events")
    if counts[largest] > ADVISED_EVENTS_PER_PARTITION:
        line += (f"; km-db advises under about {ADVISED_EVENTS_PER_PARTITION:,} per partition: "
                 "consider fewer KMDB_DAYS_PER_PARTITION")
    return line


# -- the database side -----------------------------------------------------------------------


async def partition_tables(settings: Settings, say: Callable[[str], None],
                           min_date_given_as: str = "KMDB_MIN_DATE") -> list[TablePlan]:
    """Plan every table's partitions, refuse over the limit, then apply; ``say`` reports.
    ``min_date_given_as`` names the min date as the user gave it (``--min-date``)."""
    if not settings.max_date:
        raise TerminalError("KMDB_MAX_DATE (--max-date) is required: partitions reach up to it")
    max_date = parse_date(settings.max_date, "KMDB_MAX_DATE")
    min_date = parse_date(settings.min_date, "KMDB_MIN_DATE") if settings.min_date else None
    store = open_store(settings)
    if not isinstance(store, MySQLStore):
        raise TerminalError("partitioning is a MariaDB/MySQL feature: set DATABASE_URL to a "
                            "mysql:// database (the embedded database cannot be partitioned)")
    await store.open()
    try:
        await store.acquire_import_lock("partition")  # no import writes while tables are rebuilt
        await store.ensure_schema()
        plans = [plan_table(table, read_layout(table, await store.partition_rows(table)),
                            min_date, max_date, settings.days_per_partition)
                 for table in schema.PARTITIONED_TABLES]
        check_limit(plans)
        events = next(p for p in plans if p.table == schema.EVENTS)
        say(advice(events.bounds, await store.event_days()))
        for plan in plans:
            await _apply(store, plan, min_date, say, min_date_given_as)
    finally:
        await store.close()
    return plans


async def _apply(store: MySQLStore, plan: TablePlan, min_date: date | None,
                 say: Callable[[str], None], min_date_given_as: str) -> None:
    sql = plan.sql()
    if plan.before is not None and plan.before.bounds and min_date is not None:
        say(f"{plan.table}: already partitioned (first bound {plan.before.bounds[0]}): "
            f"{min_date_given_as} is ignored")
    span = f"{plan.total:,} partitions up to {plan.bounds[-1]} plus {CATCH_ALL}"
    if sql is None:
        say(f"{plan.table}: unchanged ({span})")
        return
    what = "partitioning" if plan.before is None else f"adding {len(plan.added)} partitions to"
    say(f"{what} {plan.table} ...")
    await store.execute(sql)
    say(f"{plan.table}: {span}")
