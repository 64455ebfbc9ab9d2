"""A slow, obviously sequential model of an import: what the tables must hold at the end.

It reads every revision whole, decodes with the decoder (tested on its own), applies SPEC's
filters and dealiasing with the final alias graph, and returns rows in the shape of
``conftest.Database.dump``. Pipeline tests compare the real, concurrent import against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kmdb_async.identity import AliasGraph, alias_pair
from kmdb_async.records import LineDecoder, Record
from kmdb_async.resolver import Filters, row_id, sql_datetime
from kmdb_async.sources import revision_number


def revisions(root: Path) -> list[tuple[int, list[Record]]]:
    found = []
    for path in (root / "revisions").iterdir():
        number = revision_number(path.name)
        if number is not None:
            decoder = LineDecoder()
            items = decoder.feed(path.read_bytes()) + decoder.flush()
            found.append((number, [i for i in items if isinstance(i, Record)]))
    return sorted(found, key=lambda pair: pair[0])


def expected(root: Path, filters: Filters | None = None) -> dict[str, list[tuple[Any, ...]]]:
    filters = filters or Filters()
    kept = [(n, r) for n, records in revisions(root) for r in records if filters.keeps(r)]
    graph, users, aliases = AliasGraph(), set(), {}
    for _, r in kept:
        users.add(r.p)
        if r.p2 is not None:
            users.add(r.p2)
            graph.link(r.p, r.p2)
            pair = alias_pair(r.p, r.p2)
            aliases[pair] = min(r.t, aliases.get(pair, r.t))
    events, properties = [], []
    for n, r in kept:
        if r.p2 is not None:
            continue
        t, user, base = sql_datetime(r.t), graph.canonical(r.p), row_id(n, r.offset)
        event_id = base if r.n is not None else None
        if r.n is not None:
            events.append((base, t, r.n, user, r.p))
        for i, (key, value) in enumerate(r.props):
            if key not in filters.blacklisted_properties:
                properties.append((base + i, t, user, event_id, key, value))
    return {
        "events": sorted(events),
        "properties": sorted(properties, key=repr),
        "users": sorted((u,) for u in users),
        "aliases": sorted((a, b, sql_datetime(t)) for (a, b), t in aliases.items()),
    }
