"""What has committed: the cursor's watermark per revision, and the resolved batches in order.

Writers commit batches out of order. The cursor may move past a batch only once every batch
before it in its revision has committed (``Watermark``); a batch that re-points rows, and a
first import's slice, wait until every batch resolved before them has committed
(``Sequence``).
"""

from __future__ import annotations

import asyncio


class Watermark:
    """Per revision, the end of the longest prefix of committed batches (bytes)."""

    def __init__(self) -> None:
        self._offset: dict[int, int] = {}
        self._pending: dict[int, dict[int, int]] = {}  # revision -> batch start -> end

    def begin(self, revision: int, start: int) -> None:
        self._offset[revision] = start
        self._pending[revision] = {}

    def commit(self, revision: int, start: int, end: int) -> bool:
        """Mark ``[start, end)`` committed; True when the watermark moved."""
        pending = self._pending[revision]
        pending[start] = end
        offset = moved = self._offset[revision]
        while offset in pending:
            offset = pending.pop(offset)
        self._offset[revision] = offset
        return offset != moved

    def offset(self, revision: int) -> int:
        return self._offset[revision]


class Sequence:
    """Which resolved batches (numbered 1, 2, ...) have fully committed."""

    def __init__(self) -> None:
        self._low = 0  # every batch numbered <= _low is done
        self._done: set[int] = set()
        self._changed = asyncio.Condition()

    async def done(self, seq: int) -> None:
        async with self._changed:
            self._done.add(seq)
            while self._low + 1 in self._done:
                self._low += 1
                self._done.remove(self._low)
            self._changed.notify_all()

    def committed(self) -> int:
        """The highest number below which every batch is done."""
        return self._low

    async def wait_before(self, seq: int) -> None:
        """Return once every batch numbered below ``seq`` is done."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._low >= seq - 1)
