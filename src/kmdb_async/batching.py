"""Whole-second batches of one revision (SPEC section 5). Pure: no I/O.

A batch closes once it holds at least ``size`` records and the next record has a different
``_t`` than the last one: records sharing a second in a run of consecutive lines are never
split. Rejects travel with the batch they were read in, so a batch covers a contiguous byte
range ``[start, end)`` of its revision and the cursor can move past it as a whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .records import Item, Record, Reject


@dataclass(slots=True)
class Batch:
    """Consecutive lines of one revision: records to import and rejects to report."""

    revision: int
    start: int  # byte offset of the first line
    end: int  # byte offset just past the last line
    records: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    last: bool = False  # True for the final batch of the revision as read in this run


class Batcher:
    """Groups a revision's decoded items into whole-second batches of about ``size`` records."""

    def __init__(self, revision: int, start: int, size: int) -> None:
        self._revision = revision
        self._size = max(1, size)
        self._current = Batch(revision, start, start)

    def feed(self, items: Iterable[Item]) -> list[Batch]:
        """Add items in file order; returns the batches that are now complete."""
        done: list[Batch] = []
        current = self._current
        for item in items:
            if isinstance(item, Reject):
                current.rejects.append(item)
            else:
                records = current.records
                if len(records) >= self._size and records[-1].t != item.t:
                    done.append(current)
                    current = Batch(self._revision, current.end, current.end)
                    records = current.records
                records.append(item)
            current.end = item.end
        self._current = current
        return done

    def flush(self, end: int, last: bool = True) -> Batch:
        """The final batch (possibly empty), stretched to ``end``: the bytes decoded (a blank
        tail included). ``last`` says whether that is the revision's end (not when its
        unfinished last line is held back)."""
        batch = self._current
        batch.end, batch.last = max(batch.end, end), last
        self._current = Batch(self._revision, batch.end, batch.end)
        return batch
