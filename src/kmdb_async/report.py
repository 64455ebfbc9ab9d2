"""What an import tells its user: progress while it runs and a summary at the end."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO


@dataclass
class Summary:
    """Counts of one import run; all counts are lines or rows, sizes bytes, times seconds."""

    revisions: int = 0  # revisions read to their end in this run
    lines: int = 0  # non-blank lines read (records + rejects)
    events: int = 0
    properties: int = 0
    aliases: int = 0  # alias records imported
    rejects: int = 0
    truncated: int = 0  # values cut to 65,535 characters
    skipped: int = 0  # records dropped by the filter tables
    bytes: int = 0  # bytes committed
    elapsed: float = 0.0
    peak_queue: int = 0  # largest number of batches waiting between stages
    # The latest revision's unfinished last line, held back: revision, offset and bytes.
    held_back: dict[str, int] | None = None
    started: float = field(default_factory=time.time)

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lines_per_second"] = round(self.lines_per_second, 1)
        data["elapsed"] = round(self.elapsed, 3)
        del data["started"]
        return data

    def text(self) -> str:
        held = self.held_back
        return (
            f"imported {self.revisions} revisions: {self.lines} lines, {self.events} events, "
            f"{self.properties} properties, {self.aliases} aliases, {self.rejects} rejects, "
            f"{self.truncated} truncated values, {self.skipped} skipped by filters "
            f"in {self.elapsed:.1f} s ({self.lines_per_second:,.0f} lines/s)"
        ) + ("" if held is None else
             f"\nrevision {held['revision']} ends in an unfinished line ({held['bytes']:,} bytes "
             f"from byte {held['offset']:,}, no newline, not JSON yet): it is imported once "
             "complete, or rejected once a later revision exists")


class Reporter:
    """Progress every ``interval`` seconds: a bar on a terminal, a log line otherwise."""

    def __init__(self, summary: Summary, total_bytes: int, revisions: int, interval: float,
                 stream: TextIO | None = None) -> None:
        self.summary = summary
        self.total = max(total_bytes, 1)
        self.revisions = revisions
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.5 if self.tty else interval
        self._t0 = time.monotonic()

    async def run(self) -> None:
        """Report until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.show()

    def show(self) -> None:
        s = self.summary
        elapsed = time.monotonic() - self._t0
        rate = s.lines / elapsed if elapsed > 0 else 0.0
        done = min(s.bytes / self.total, 1.0)
        eta = (elapsed / done - elapsed) if done > 0 else 0.0
        status = (f"{s.bytes / 1e6:,.1f}/{self.total / 1e6:,.1f} MB, {rate:,.0f} lines/s, "
                  f"revisions {s.revisions}/{self.revisions}, ETA {eta:,.0f} s")
        if self.tty:
            bar = "#" * int(done * 30)
            self.stream.write(f"\r[{bar:<30}] {done:6.1%} {status}\x1b[K")
        else:
            self.stream.write(f"progress: {done:.1%} {status}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
