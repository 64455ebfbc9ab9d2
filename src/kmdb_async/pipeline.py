"""The import: readers -> resolver -> bounded queue -> writers, and the cursor watermark.

    revisions ──► readers (files_in_flight) ──► decoded queue ──► resolver (one)
                  stream, decode, batch, intern                   filters, aliases, ids
                                                  resolved queue ◄─┘
                                                        │
                                   writers (writers) ◄──┘  rows, then links; cursor

Exactly once: row ids come from the export (revision, byte offset) and every write is an
upsert, so a batch written twice leaves the same rows. The cursor moves past a batch only
once it and every batch before it in its revision have committed. A batch that re-points
rows (it links identities) writes its links only after every earlier-resolved batch has
committed, so the re-pointing covers all rows resolved with the old canonical users.

A first import into empty MariaDB tables goes faster (store/loaddata.py): it reads its alias
records ahead (so rows get their final canonical users), then writers stream the rows into
one LOAD DATA statement per table, nothing commits until every batch is in, then the groups
linked late (aliases the read-ahead could not see) are re-pointed, the alias pairs commit,
and the cursor moves. One larger than a slice commits every slice instead, the resolver
handing out no batch meanwhile, and builds its indexes at the end (store/firstimport.py).
If a load fails, the run starts again with row inserts (nothing is doubled).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing, suppress
from pathlib import Path
from typing import IO

import msgspec

from .aliases import AliasCache
from .batching import Batch, Batcher
from .errors import TerminalError, TransientError
from .ordering import Sequence, Watermark
from .records import AliasScanner, Item, LineDecoder, Record
from .report import Reporter, Summary
from .resolver import MAX_REVISION, Prepared, ResolvedBatch, Resolver, row_id
from .settings import Settings
from .sources import Revision, Source, source_for
from .state import Cursor, open_cursor
from .store import SQLStore, open_store
from .store.loaddata import BulkLoad
from .tasks import TaskGroup


class Interrupted(Exception):
    """The run was stopped by SIGINT/SIGTERM after saving progress."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}; progress saved")
        self.signum = signum


class Import:
    """One import run over ``revisions``; ``run`` returns the summary."""

    def __init__(self, settings: Settings, store: SQLStore, source: Source, cursor: Cursor,
                 resolver: Resolver, summary: Summary, bulk: BulkLoad | None = None,
                 latest: int | None = None) -> None:
        self.settings = settings
        self.latest = latest  # the source's highest revision: its last line may be unfinished
        self.store, self.source, self.cursor, self.resolver = store, source, cursor, resolver
        self.summary = summary
        self.bulk = bulk
        self._loaded: list[Batch] = []  # bulk: batches streamed, their progress saved at the end
        depth = max(1, settings.queue_depth)
        self.decoded: asyncio.Queue[Prepared | None] = asyncio.Queue(maxsize=depth)
        self.resolved: asyncio.Queue[ResolvedBatch | None] = asyncio.Queue(maxsize=depth)
        self.watermark = Watermark()
        self.sequence = Sequence()
        self._cursor_lock = asyncio.Lock()
        self._rejects: IO[bytes] | None = None
        self.signum: int | None = None
        self._readers: asyncio.Task[None] | None = None
        self._oversized = store.oversized()  # None: the database stores any line

    def stop(self, signum: int) -> None:
        """Stop reading; batches already read are written and their progress saved."""
        self.signum = signum
        if self._readers is not None:
            self._readers.cancel()

    async def run(self, revisions: list[Revision], positions: dict[int, int]) -> None:
        settings = self.settings
        try:
            if self.bulk is not None:
                self._readers = asyncio.create_task(self._link_ahead(revisions, positions))
                try:
                    await self._readers
                except asyncio.CancelledError:
                    if self.signum is None:
                        raise
                if self.signum is not None:
                    raise Interrupted(self.signum)  # nothing was read: nothing to save
            async with TaskGroup() as tg:  # bounded: a failure ends the run (tasks.py)
                self._readers = tg.create_task(self._read_all(revisions, positions))
                tg.create_task(self._resolve())
                for _ in range(max(1, settings.writers)):
                    tg.create_task(self._write())
            if self.bulk is not None and self.bulk.sliced:
                await self.store.commit_slice(self.resolver.late_names(), more=False)
                await self._advance(self._loaded)
                if self.signum is None:  # stopped: the next run completes it
                    await complete_first_import(self.store, self.resolver)
            elif self.bulk is not None:
                await self.bulk.finish(await self.resolver.late_repoints())
                await self._advance(self._loaded)
        finally:
            if self.bulk is not None:
                self.bulk.close()  # after a failure: the unfinished load is rolled back
            if self._rejects is not None:
                self._rejects.close()
        if self.signum is not None:
            raise Interrupted(self.signum)

    # -- reading ----------------------------------------------------------------------------

    async def _link_ahead(self, revisions: list[Revision], positions: dict[int, int]) -> None:
        """A first import reads its alias records ahead (only lines that mention ``_p2`` are
        decoded): its rows then go in with their final canonical users, and the closing
        re-pointing pass, which cost a fifth of a 1M-line import, has (almost) nothing to do.
        Past the alias cache's bound its pairs go into the load's transaction as they are read,
        and the rows' groups are looked up there (AliasCache.link_ahead)."""

        assert self.bulk is not None
        bulk = self.bulk

        async def scan(revision: Revision, start: int) -> None:
            scanner = AliasScanner(start)
            async with aclosing(self.source.stream(revision, start)) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    await bulk.add_aliases(self.resolver.link_ahead(scanner.feed(chunk)))
            await bulk.add_aliases(self.resolver.link_ahead(scanner.flush()))

        await self._each_revision(revisions, positions, scan)
        self.resolver.end_link_ahead()

    async def _read_all(self, revisions: list[Revision], positions: dict[int, int]) -> None:
        try:
            await self._each_revision(revisions, positions, self._read)
        except asyncio.CancelledError:
            # Only a stop() lets the rest drain; otherwise a sibling failed and nobody reads
            # the queue any more (a blocking put here would hang the run forever).
            if self.signum is None:
                raise
        await self.decoded.put(None)

    async def _each_revision(self, revisions: list[Revision], positions: dict[int, int],
                             read: Callable[[Revision, int], Awaitable[None]]) -> None:
        """``read(revision, start)`` for every revision, files_in_flight at a time."""
        pending: Iterator[Revision] = iter(revisions)

        async def reader() -> None:
            for revision in pending:  # the readers share one iterator: each revision read once
                await read(revision, positions.get(revision.number, 0))

        async with TaskGroup() as tg:
            for _ in range(max(1, self.settings.files_in_flight)):
                tg.create_task(reader())

    async def _read(self, revision: Revision, start: int) -> None:
        size = self.settings.batch_size
        decoder, batcher = LineDecoder(start), Batcher(revision.number, start, size)
        self.watermark.begin(revision.number, start)
        end = start
        async with aclosing(self.source.stream(revision, start)) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                end += len(chunk)
                for batch in batcher.feed(self._storable(decoder.feed(chunk), decoder)):
                    await self._emit(batch)
        # Once a later revision exists, KissMetrics has moved on: the last line is final.
        final = revision.number != self.latest
        for batch in batcher.feed(self._storable(decoder.flush(final=final), decoder)):
            await self._emit(batch)
        if decoder.held:  # the cursor stops before the unfinished line, until it is complete
            self.summary.held_back = {"revision": revision.number, "offset": decoder.offset,
                                      "bytes": decoder.held}
        await self._emit(batcher.flush(decoder.offset, last=not decoder.held))

    def _storable(self, items: list[Item], decoder: LineDecoder) -> list[Item]:
        """``items``, a record the database cannot store (a row larger than the server's
        max_allowed_packet) made a reject of its whole line, on every write path alike."""
        check = self._oversized
        if check is None:
            return items
        return [decoder.reject(item, reason)
                if isinstance(item, Record) and (reason := check(item)) is not None else item
                for item in items]

    async def _emit(self, batch: Batch) -> None:
        if batch.rejects and self.settings.strict:
            first = batch.rejects[0]
            raise TerminalError(
                f"--strict: revision {batch.revision} byte {first.offset}: {first.reason}"
            )
        await self.decoded.put(await self.resolver.prepare(batch))
        self.summary.peak_queue = max(self.summary.peak_queue, self.decoded.qsize())

    # -- resolving and writing --------------------------------------------------------------

    async def _resolve(self) -> None:
        sliced = self.bulk is not None and self.bulk.sliced
        loaded = 0  # bytes of export in the slice so far
        while (prepared := await self.decoded.get()) is not None:
            resolved = await self.resolver.resolve(prepared)
            await self.resolved.put(resolved)
            self.summary.peak_queue = max(self.summary.peak_queue, self.resolved.qsize())
            if sliced:
                loaded += prepared.batch.end - prepared.batch.start
                if loaded >= self.settings.slice_bytes:
                    loaded = 0
                    await self._commit_slice(resolved.seq)
        for _ in range(max(1, self.settings.writers)):
            await self.resolved.put(None)

    async def _commit_slice(self, seq: int) -> None:
        """Commit the sliced load's rows of the batches up to ``seq``, then move the cursor
        past them. No later batch is handed out meanwhile, so what commits is, per revision,
        everything up to the cursor and nothing past it."""
        await self.sequence.wait_before(seq + 1)
        await self.store.commit_slice(self.resolver.late_names())
        loaded, self._loaded = self._loaded, []
        await self._advance(loaded)

    async def _write(self) -> None:
        while (rb := await self.resolved.get()) is not None:
            if self.bulk is not None:
                await self.bulk.add(rb)
                self._count(rb)
                b = rb.batch  # only its place and rejects are kept until the load commits
                self._loaded.append(Batch(b.revision, b.start, b.end, rejects=b.rejects, last=b.last))
                await self.sequence.done(rb.seq)  # its alias pairs are in the load's transaction
                continue
            await self.store.write_rows(rb)
            if rb.links:
                await self.sequence.wait_before(rb.seq)
            await self.store.write_links(rb)
            await self.sequence.done(rb.seq)
            self._count(rb)
            await self._advance([rb.batch])

    def _count(self, rb: ResolvedBatch) -> None:
        batch, summary = rb.batch, self.summary
        summary.lines += len(batch.records) + len(batch.rejects)
        summary.events += len(rb.events)
        summary.properties += rb.properties
        summary.aliases += rb.alias_records
        summary.rejects += len(batch.rejects)
        summary.truncated += rb.truncated
        summary.skipped += rb.skipped
        summary.bytes += batch.end - batch.start

    async def _advance(self, batches: list[Batch]) -> None:
        """Committed batches: report their rejects, move the cursor past them."""
        moved: set[int] = set()
        for batch in batches:
            self._write_rejects(batch)
            if self.watermark.commit(batch.revision, batch.start, batch.end):
                moved.add(batch.revision)
            if batch.last:
                self.summary.revisions += 1
        if moved:
            async with self._cursor_lock:  # saves in order: the stored cursor never moves back
                await self.store.keep_import_lock()  # a lost lock lets a second import start
                for revision in sorted(moved):
                    await self.cursor.save(revision, self.watermark.offset(revision))

    def _write_rejects(self, batch: Batch) -> None:
        if not batch.rejects:
            return
        if self._rejects is None:
            path = self.settings.rejects or Path("kmdb-rejects.jsonl")
            self._rejects = path.open("ab")
        for reject in batch.rejects:
            self._rejects.write(msgspec.json.encode({
                "revision": batch.revision, "offset": reject.offset,
                "reason": reject.reason, "raw": reject.raw,
            }) + b"\n")
        self._rejects.flush()


async def run_import(settings: Settings) -> Summary:
    """Import everything new from the source into the database; returns the summary."""
    thresholds = gc.get_threshold()
    # An import allocates millions of short-lived row tuples and few reference cycles: the
    # default thresholds ran a collection every 700 allocations, each walking the long-lived
    # caches and alias graph (15% of the client's CPU, measured: benchmarks/README.md).
    gc.set_threshold(100_000, 50, 100)
    try:
        return await _run_import(settings)
    finally:
        gc.set_threshold(*thresholds)


async def _run_import(settings: Settings) -> Summary:
    summary = Summary()
    t0 = time.monotonic()
    store = open_store(settings)
    settings.source_location()  # no source is a clean error before anything is touched
    await store.open()
    try:
        await store.acquire_import_lock()
        await store.ensure_schema()
        cursor = open_cursor(settings, store)
        source = source_for(settings)
        try:
            try:
                await _import(settings, store, source, cursor, summary, settings.bulk_load)
            except BulkLoadFailed as failed:
                print(f"kmdb-async: {failed}; importing again with row inserts", file=sys.stderr)
                summary = Summary(started=summary.started)
                await _import(settings, store, source, cursor, summary, bulk_load=False)
        finally:
            summary.elapsed = time.monotonic() - t0
            with suppress(Exception):
                await source.aclose()
            with suppress(Exception):
                await cursor.close()
        await store.record_run(_utc(summary.started), _utc(time.time()), "ok", summary.as_dict())
    finally:
        await store.close()
    return summary


class BulkLoadFailed(Exception):
    """A first import's bulk load failed on a transient error (rolled back, nothing lost)."""


async def _import(settings: Settings, store: SQLStore, source: Source, cursor: Cursor,
                  summary: Summary, bulk_load: bool) -> None:
    """One pass over what is new: by a bulk load when allowed and possible, else by batches."""
    aliases = await AliasCache.open(store, settings.alias_cache_size)
    positions = await cursor.load()
    listed = await source.revisions()
    summary.listed = len(listed)
    revisions = [
        r for r in listed
        if r.number >= settings.min_revision and positions.get(r.number, 0) < r.size
    ]
    if revisions and revisions[-1].number > MAX_REVISION:
        raise TerminalError(f"revision {revisions[-1].number} is beyond {MAX_REVISION}")
    total = sum(r.size - positions.get(r.number, 0) for r in revisions)
    advice = await store.memory_advice(total)
    if advice:
        print(f"kmdb-async: {advice}", file=sys.stderr)
    filters = await store.load_filters()
    unfinished = await store.first_import_unfinished()
    bulk = None
    if bulk_load and revisions:
        if unfinished:  # rows committed past the cursor by the killed run: loaded again
            await store.forget_rows([(row_id(r.number, positions.get(r.number, 0)),
                                      row_id(r.number + 1, 0)) for r in revisions])
        bulk = await store.begin_bulk_load(sliced=total > settings.slice_bytes, resume=unfinished)
    resolver = Resolver(store, aliases, filters, repoint=bulk is None)
    if bulk is None and unfinished:  # its indexes before any row is inserted
        await complete_first_import(store, resolver)
    run = Import(settings, store, source, cursor, resolver, summary, bulk,
                 latest=listed[-1].number if listed else None)
    aliases.committed = run.sequence.committed
    reporter = Reporter(summary, total, len(revisions), settings.progress_interval)
    try:
        await _with_signals(run, reporter, revisions, positions)
        summary.giant_groups = resolver.giants()
    except TransientError as e:
        if bulk is None:
            raise
        raise BulkLoadFailed(f"the first import's bulk load stopped ({e})") from e


async def _with_signals(run: Import, reporter: Reporter, revisions: list[Revision],
                        positions: dict[int, int]) -> None:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, run.stop, signum)
    progress = asyncio.create_task(reporter.run())  # cancelled below, whatever happens
    try:
        await run.run(revisions, positions)
    finally:
        progress.cancel()
        with suppress(asyncio.CancelledError):
            await progress
        reporter.close()
        for signum in signals:
            loop.remove_signal_handler(signum)


async def complete_first_import(store: SQLStore, resolver: Resolver) -> None:
    """The end of a first import in slices: its indexes, a long step, announced first."""
    print("kmdb-async: building the first import's indexes (long on a large history)",
          file=sys.stderr, flush=True)
    await store.complete_first_import(resolver.repoints_of)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
