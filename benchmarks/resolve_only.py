"""The client's CPU for dealiasing and rows, no database: decode and batch a first import's
lines, link its aliases ahead, then time ``Resolver.prepare`` + ``resolve`` over every batch
and the LOAD DATA text of its rows. Ids come from a dict (the id caches' best case), so the
figure is the resolver's own cost. Best of ``--repeat`` passes.

    python benchmarks/resolve_only.py EXPORT_DIR [--lines 250000] [--repeat 5]

``--lines``: whole revisions are read until at least that many lines are.

Run it with two checkouts' ``src`` on PYTHONPATH to compare a change (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Collection
from pathlib import Path

from kmdb_async.aliases import AliasCache
from kmdb_async.batching import Batch, Batcher
from kmdb_async.records import LineDecoder
from kmdb_async.resolver import Filters, Resolver
from kmdb_async.sources import revision_number
from kmdb_async.store.loaddata import event_rows, property_rows


class DictIds:
    """users.id and keys.id from one dict, new names numbered as they come."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.next = itertools.count(1)

    async def user_ids(self, names: Collection[str]) -> dict[str, int]:
        ids = self.ids
        return {n: ids[n] if n in ids else ids.setdefault(n, next(self.next)) for n in names}

    key_ids = user_ids

    async def alias_links(self, names: Collection[str]) -> list[tuple[str, str]]:
        return []  # the cache is complete: never asked


def read(root: Path, limit: int) -> list[Batch]:
    batches: list[Batch] = []
    lines = 0
    for path in sorted((root / "revisions").iterdir(), key=lambda p: revision_number(p.name) or 0):
        number = revision_number(path.name)
        if number is None or lines >= limit:
            continue
        decoder, batcher = LineDecoder(), Batcher(number, 0, 10_000)
        data = path.read_bytes()
        for batch in [*batcher.feed(decoder.feed(data)), *batcher.feed(decoder.flush())]:
            batches.append(batch)
            lines += len(batch.records)
    return batches


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--lines", type=int, default=250_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    batches = read(args.export, args.lines)
    resolver = Resolver(DictIds(), AliasCache(DictIds(), 1 << 40), Filters(), repoint=False)
    for batch in batches:
        resolver.link_ahead(batch.records)
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        for batch in batches:
            rb = await resolver.resolve(await resolver.prepare(batch))
            event_rows(rb.events)
            property_rows(rb)
        best = min(best, time.perf_counter() - t0)
    records = sum(len(b.records) for b in batches)
    print(f"{records:,} records: {best:.3f} s, {records / best:,.0f} records/s (best of {args.repeat})")


if __name__ == "__main__":
    asyncio.run(main())
