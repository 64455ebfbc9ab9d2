"""``kmdb-async status``: what is imported, what is pending, and whether progress is consistent.

``gather`` only reads: the source's listing, the revision cursor (Redis or ``kmdb_revisions``)
and the database. ``assess`` is pure: it turns those facts into the report and its verdict.

The cursor agrees with the database when no row lies at or past the cursor of its revision
(rows there are harmless: a run stopped before saving progress, or Redis was lost; the next
import reads those lines again and writes nothing twice). It is inconsistent when it points
past the end of a revision, names a revision the source does not have, or says bytes were
imported into a database that holds no imported row (emptied behind the cursor's back): the
next import would then skip data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from .records import LineDecoder
from .report import giant_lines
from .resolver import REVISION_SHIFT, row_id
from .settings import Settings, redact
from .sources import Revision, Source, source_for
from .state import open_cursor
from .store import open_store
from .store.schema import ALIASES, EVENTS, KEYS, PROPERTIES, REVISIONS, RUNS, USERS

#: Exit codes of ``kmdb-async status`` (1 and 2 keep their meaning: failure, bad usage).
EXIT_UP_TO_DATE = 0
EXIT_PENDING = 3
EXIT_INCONSISTENT = 4
UP_TO_DATE, PENDING, INCONSISTENT = "up to date", "pending", "inconsistent"
EXIT_CODES = {UP_TO_DATE: EXIT_UP_TO_DATE, PENDING: EXIT_PENDING, INCONSISTENT: EXIT_INCONSISTENT}

MAIN_TABLES = (EVENTS, PROPERTIES, USERS, ALIASES, KEYS)
HELD_BACK_MAX = 1 << 20  # bytes: a longer unread tail is not read to see if it is held back
IMPORTED_ROWS = (EVENTS, PROPERTIES, USERS, ALIASES)  # rows that exist only once data was imported


@dataclass(frozen=True)
class Facts:
    """What ``gather`` read; offsets and sizes in bytes."""

    database: str
    source: str
    cursor_kind: str  # "redis" or "database"
    revisions: Sequence[Revision]  # the source's listing, ascending
    min_revision: int
    positions: Mapping[int, int]  # the cursor: revision -> bytes imported
    rows_past: Mapping[int, int] = field(default_factory=dict)  # revision -> offset of its last
    # row at or past the cursor (only revisions not fully imported are looked at)
    tables: Mapping[str, int] | None = None  # row counts; None when the schema is missing
    time_range: tuple[str, str] | None = None  # earliest and latest events.t (UTC)
    last_run: tuple[str, str, str, Mapping[str, Any]] | None = None  # kmdb_runs' last row
    held_back: Mapping[str, int] | None = None  # the latest revision's unfinished last line:
    # revision, offset, bytes (what an import holds back; see held_back())
    unfinished_first_import: bool = False  # a sliced first import has not built its indexes


def ranges(numbers: Iterable[int]) -> str:
    """``1-3, 7`` for 1, 2, 3, 7."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def assess(facts: Facts) -> dict[str, Any]:
    """The status as one JSON-able object, ``verdict`` and ``exit_code`` included."""
    listed = {r.number: r.size for r in facts.revisions}
    wanted = [r for r in facts.revisions if r.number >= facts.min_revision]
    pos = facts.positions
    imported = [r.number for r in wanted if pos.get(r.number, 0) == r.size]
    held = facts.held_back
    unread = [r for r in wanted if held is None or r.number != held["revision"]]  # an import
    # would read them; a held-back line waits for its revision to grow, or for a later one
    in_progress = [{"revision": r.number, "offset": pos[r.number], "size": r.size}
                   for r in unread if 0 < pos.get(r.number, 0) < r.size]
    pending = [r.number for r in unread if r.size > 0 and pos.get(r.number, 0) == 0]
    problems = [
        f"revision {n}: the cursor is at byte {pos[n]:,} but revisions/{n}.json has "
        f"{listed[n]:,} bytes (the object shrank, or the cursor belongs to another export)"
        for n in sorted(pos) if n in listed and pos[n] > listed[n]
    ]
    unknown = [n for n in pos if n not in listed]
    if unknown:
        problems.append(f"the cursor names revisions the source does not list: {ranges(unknown)}")
    done = sum(pos.values())
    if done and (facts.tables is None or not any(facts.tables[t] for t in IMPORTED_ROWS)):
        problems.append(
            f"the cursor says {done:,} bytes of {len(pos)} revisions were imported, but the "
            "database holds no imported row: it was emptied or recreated without its cursor "
            "(or the Redis prefix is another database's); `kmdb-async flush --yes` resets the "
            "cursor so that the next import starts over")
    behind = [{"revision": n, "cursor": pos.get(n, 0), "rows_up_to": offset}
              for n, offset in sorted(facts.rows_past.items())]
    unfinished = facts.unfinished_first_import
    verdict = (INCONSISTENT if problems else PENDING if in_progress or pending or unfinished
               else UP_TO_DATE)
    return {
        "verdict": verdict,
        "exit_code": EXIT_CODES[verdict],
        "database": facts.database,
        "source": facts.source,
        "revisions": {
            "count": len(facts.revisions),
            "highest": facts.revisions[-1].number if facts.revisions else None,
            "below_min_revision": len(facts.revisions) - len(wanted),
            "imported": len(imported),
            "in_progress": in_progress,
            "pending": pending,
            "pending_bytes": sum(max(r.size - pos.get(r.number, 0), 0) for r in unread),
            "held_back": dict(held) if held is not None else None,
        },
        "first_import_unfinished": unfinished,
        "last_run": _last_run(facts.last_run),
        "tables": dict(facts.tables) if facts.tables is not None else None,
        "events": ({"first": facts.time_range[0], "last": facts.time_range[1]}
                   if facts.time_range else None),
        "cursor": {"kind": facts.cursor_kind, "agrees": not problems and not behind,
                   "problems": problems, "behind": behind},
    }


def _last_run(run: tuple[str, str, str, Mapping[str, Any]] | None) -> dict[str, Any] | None:
    if run is None:
        return None
    started, finished, status, summary = run
    return {"started_at": started, "finished_at": finished, "status": status,
            "lines": summary.get("lines"), "rejects": summary.get("rejects"),
            "duration": summary.get("elapsed"),
            "giant_groups": dict(summary.get("giant_groups") or {})}


def render(report: Mapping[str, Any]) -> str:
    """The report for a person, one fact per line."""
    revs, run, cursor = report["revisions"], report["last_run"], report["cursor"]
    lines = [f"database: {report['database']}",
             f"source: {report['source']}: {revs['count']} revisions"
             + (f", highest {revs['highest']}" if revs["highest"] is not None else "")
             + (f" ({revs['below_min_revision']} below KMDB_MIN_REVISION, skipped)"
                if revs["below_min_revision"] else ""),
             f"imported: {revs['imported']} revisions fully"]
    lines += [f"in progress: revision {p['revision']} at byte {p['offset']:,} of {p['size']:,}"
              for p in revs["in_progress"]]
    if revs["pending"]:
        lines.append(f"pending: {len(revs['pending'])} revisions ({ranges(revs['pending'])})")
    if revs["pending_bytes"]:
        lines.append(f"to read: {revs['pending_bytes']:,} bytes")
    held = revs["held_back"]
    if held is not None:
        lines.append(f"held back: revision {held['revision']} ends in an unfinished line "
                     f"({held['bytes']:,} bytes from byte {held['offset']:,}, no newline, not "
                     "JSON yet): it is imported once complete, or rejected once a later "
                     "revision exists")
    if report["first_import_unfinished"]:
        lines.append("first import: unfinished (its slices so far are committed; the next "
                     "import loads the rest, then builds the indexes of events and properties)")
    lines.append("last run: none" if run is None else
                 f"last run: {run['started_at']} to {run['finished_at']} UTC, {run['status']}, "
                 f"{run['lines']} lines, {run['rejects']} rejects, {run['duration']} s")
    if run is not None:
        lines += [f"  {line}" for line in giant_lines(run["giant_groups"])]
    tables = report["tables"]
    lines.append("rows: no tables yet" if tables is None else
                 "rows: " + ", ".join(f"{t} {n:,}" for t, n in tables.items()))
    events = report["events"]
    lines.append("events: none" if events is None else
                 f"events: from {events['first']} to {events['last']} UTC")
    lines.append(f"cursor ({cursor['kind']}): " + (
        "agrees with the database" if cursor["agrees"] else
        "INCONSISTENT" if cursor["problems"] else "behind the database (harmless)"))
    lines += [f"  problem: {p}" for p in cursor["problems"]]
    lines += [f"  revision {b['revision']}: rows up to byte {b['rows_up_to']:,}, past the cursor "
              f"at {b['cursor']:,}: the next import reads them again, without duplicates"
              for b in cursor["behind"]]
    lines.append(f"status: {report['verdict']} (exit code {report['exit_code']})")
    return "\n".join(lines)


async def gather(settings: Settings) -> Facts:
    """Read everything ``assess`` needs; changes nothing (not even a missing database)."""
    location = settings.source_location()
    store = open_store(settings)
    await store.open(create=False)
    try:
        names = await store.table_names()
        schema = all(t in names for t in MAIN_TABLES)
        cursor = open_cursor(settings, store)
        try:
            uses_db = settings.redis() is None
            positions = await cursor.load() if not uses_db or REVISIONS in names else {}
        finally:
            await cursor.close()
        revisions, held = await _listing(settings, positions)
        facts = Facts(database=settings.database_label(), source=redact(location),
                      cursor_kind="database" if uses_db else "redis", revisions=revisions,
                      min_revision=settings.min_revision, positions=positions, held_back=held)
        if not schema:
            return facts
        rows_past = {}
        for r in revisions:
            start = positions.get(r.number, 0)
            if r.number >= settings.min_revision and start < r.size:
                top = await store.max_row_id(row_id(r.number, start), row_id(r.number + 1, 0))
                if top is not None:
                    rows_past[r.number] = top - (r.number << REVISION_SHIFT)
        return replace(
            facts, rows_past=rows_past,
            tables={t: await store.count_rows(t) for t in MAIN_TABLES},
            time_range=await store.event_time_range(),
            last_run=await store.last_run() if RUNS in names else None,
            unfinished_first_import=await store.first_import_unfinished(),
        )
    finally:
        await store.close()


async def _listing(settings: Settings, positions: Mapping[int, int],
                   ) -> tuple[list[Revision], dict[str, int] | None]:
    """The source's revisions, and the latest one's held-back last line (or None)."""
    source = source_for(settings)
    try:
        revisions = await source.revisions()
        latest = revisions[-1] if revisions else None
        if latest is None or latest.number < settings.min_revision:
            return revisions, None
        return revisions, await held_back(source, latest, positions.get(latest.number, 0))
    finally:
        await source.aclose()


async def held_back(source: Source, latest: Revision, start: int) -> dict[str, int] | None:
    """Whether the latest revision's unread bytes from ``start`` are nothing but an
    unfinished last line, which an import holds back (records.LineDecoder.flush): its
    revision, offset and size in bytes, or None. Read only when at most HELD_BACK_MAX bytes."""
    if not 0 < latest.size - start <= HELD_BACK_MAX:
        return None
    decoder = LineDecoder(start)
    items = []
    async with aclosing(source.stream(latest, start)) as chunks:  # type: ignore[type-var]
        async for chunk in chunks:
            items += decoder.feed(chunk)
    items += decoder.flush(final=False)
    if items or decoder.offset != start or not decoder.held:
        return None  # an import would read something: pending
    return {"revision": latest.number, "offset": start, "bytes": decoder.held}


async def read_status(settings: Settings) -> dict[str, Any]:
    """The status report of ``settings``' source and database."""
    return assess(await gather(settings))
