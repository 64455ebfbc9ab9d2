"""What an import tells its user: progress while it runs and a summary at the end."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .sources import revisions_location

if TYPE_CHECKING:  # rich is loaded only to draw on a terminal (a cron run never needs it)
    from rich.console import Console
    from rich.progress import Progress, TaskID

REDRAW = 0.5  # seconds between redraws of the progress line on a terminal
MIN_BAR = 8  # cells of the progress bar at least


@dataclass
class Summary:
    """Counts of one import run; all counts are lines or rows, sizes bytes, times seconds."""

    revisions: int = 0  # revisions read to their end in this run
    listed: int = 0  # revisions the source holds (imported or not); 0: none found at all
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
    # Alias groups of GIANT_GROUP identities or more that the run linked names into:
    # canonical identity -> identities.
    giant_groups: dict[str, int] = field(default_factory=dict)
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
        return "\n".join([(
            f"imported {self.revisions} revisions: {self.lines} lines, {self.events} events, "
            f"{self.properties} properties, {self.aliases} aliases, {self.rejects} rejects, "
            f"{self.truncated} truncated values, {self.skipped} skipped by filters "
            f"in {self.elapsed:.1f} s ({self.lines_per_second:,.0f} lines/s)"
        ) + ("" if held is None else
             f"\nrevision {held['revision']} ends in an unfinished line ({held['bytes']:,} bytes "
             f"from byte {held['offset']:,}, no newline, not JSON yet): it is imported once "
             "complete, or rejected once a later revision exists"),
            *giant_lines(self.giant_groups)])


def giant_lines(groups: dict[str, int]) -> list[str]:
    """A line for each giant alias group (a summary's, or the last run's in status)."""
    return [f"alias group of {size:,} identities (canonical {shown(canonical)}): one person "
            "in the rows; often a shared device, a bot or a bad _p2 such as 'undefined' "
            "(docs/dealiasing.md)" for canonical, size in sorted(groups.items())]


def shown(name: str) -> str:
    """An identity in a message: quoted, cut to 60 characters."""
    return repr(name if len(name) <= 60 else name[:57] + "...")


def nothing_found(location: str) -> str:
    """What to tell the user when the source holds no revision at all: where it looked, and
    a subdirectory that does hold revisions (the user named its parent)."""
    text = (f"no revisions/N.json found under {location} (looked for "
            f"{revisions_location(location)}N.json); nothing to import")
    if not location.startswith("s3://"):
        inside = sorted(p.parent for p in Path(location).glob(f"*/{revisions_location('')}"))
        if inside:
            text += f"; did you mean {inside[0]}?"
    return text


class Reporter:
    """Progress while an import runs: a live line on a terminal (rich, sized to it: bar,
    bytes, lines/s, revisions, ETA), else a log line every ``interval`` seconds (0: none)."""

    def __init__(self, summary: Summary, total_bytes: int, revisions: int, interval: float,
                 stream: TextIO | None = None) -> None:
        self.summary = summary
        self.to_read = total_bytes  # bytes
        self.total = max(total_bytes, 1)
        self.revisions = revisions
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() and os.environ.get("TERM") != "dumb"
        self.interval = REDRAW if self.tty else interval
        self._t0 = time.monotonic()
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    async def run(self) -> None:
        """Report until cancelled (on a terminal, from the start)."""
        if self.tty:
            self.show()
        while self.interval > 0:
            await asyncio.sleep(self.interval)
            self.show()

    def _measures(self) -> tuple[float, float, float | None]:
        """Share of the bytes done (0..1), lines read per second, and the seconds left at
        that pace (None before any byte is done)."""
        s = self.summary
        elapsed = time.monotonic() - self._t0
        done = min(s.bytes / self.total, 1.0) if self.to_read else 1.0
        rate = s.lines / elapsed if elapsed > 0 else 0.0
        return done, rate, (elapsed / done - elapsed) if done > 0 else None

    def show(self) -> None:
        if self.tty:
            self._draw()
            return
        s = self.summary
        done, rate, eta = self._measures()
        self.stream.write(
            f"progress: {done:.1%} {s.bytes / 1e6:,.1f}/{self.total / 1e6:,.1f} MB, "
            f"{rate:,.0f} lines/s, revisions {s.revisions}/{self.revisions}, "
            f"ETA {eta or 0:,.0f} s\n")
        self.stream.flush()

    def _draw(self) -> None:
        """Draw the one progress line (rich rewrites it in place)."""
        _, rate, eta = self._measures()
        completed = min(self.summary.bytes, self.total) if self.to_read else self.total
        fields: dict[str, Any] = {"rate": rate, "done": self.summary.revisions, "eta": clock(eta)}
        if self._bar is None or self._task is None:
            from rich.console import Console

            self._bar = progress_line(Console(file=self.stream, highlight=False))
            self._task = self._bar.add_task("import", total=self.total, completed=completed,
                                            revisions=self.revisions, **fields)
            self._bar.start()  # draws it
        else:
            self._bar.update(self._task, completed=completed, refresh=True, **fields)

    def close(self) -> None:
        """On a terminal: draw the final state and leave the line there."""
        if self.tty:
            self._draw()
            if self._bar is not None:
                self._bar.stop()


def clock(seconds: float | None) -> str:
    """``H:MM:SS`` of a duration in seconds, ``-:--:--`` when unknown."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02}:{secs:02}"


def progress_line(console: Console) -> Progress:
    """rich's progress display as one line sized to the terminal: the bar takes the width the
    figures leave; on a narrow terminal the bytes, then the rate, are left out, and cells are
    cut rather than folded, so a redraw never wraps."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn
    from rich.table import Column

    def cell() -> Column:
        return Column(no_wrap=True, overflow="crop")

    figures = [  # (column, its widest text in cells, the order it goes in when room lacks)
        (TaskProgressColumn(table_column=cell()), 4, 0),
        (DownloadColumn(table_column=cell()), 17, 4),
        (TextColumn("{task.fields[rate]:,.0f} lines/s", table_column=cell()), 15, 3),
        (TextColumn("rev {task.fields[done]}/{task.fields[revisions]}", table_column=cell()), 11, 1),
        (TextColumn("ETA {task.fields[eta]}", table_column=cell()), 12, 2),
    ]
    while sum(width + 1 for _, width, _ in figures) > console.width - MIN_BAR and len(figures) > 1:
        figures.remove(max(figures, key=lambda figure: figure[2]))
    return Progress(
        BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=MIN_BAR, no_wrap=True)),
        *(column for column, _, _ in figures),
        console=console, auto_refresh=False, expand=True)
