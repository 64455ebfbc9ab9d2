"""What an import shows while it runs: one live line on a terminal, log lines otherwise
(tests/test_progress.py runs a real import on a pseudo-terminal)."""

from __future__ import annotations

import io
import re

from kmdb_async.report import Reporter, Summary, clock


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def visible(text: str) -> str:
    """What the last redraw left on the line, without colours."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).split("\r")[-1]


def test_terminal_gets_a_line_with_bytes_rate_revisions_and_eta() -> None:
    summary = Summary(lines=500, bytes=50_000_000, revisions=1)
    screen = Terminal()
    reporter = Reporter(summary, total_bytes=100_000_000, revisions=4, interval=5.0, stream=screen)
    reporter.show()
    summary.bytes, summary.revisions = 100_000_000, 4
    reporter.close()
    shown = visible(screen.getvalue())
    assert "100%" in shown and "100.0/100.0 MB" in shown and "rev 4/4" in shown
    assert "lines/s" in shown and "ETA 0:00:00" in shown
    assert reporter.interval == 0.5  # a terminal is redrawn twice a second


def test_a_run_with_nothing_to_read_is_complete() -> None:
    screen = Terminal()
    reporter = Reporter(Summary(), total_bytes=0, revisions=0, interval=5.0, stream=screen)
    reporter.close()
    assert "100%" in visible(screen.getvalue())


def test_log_lines_when_not_a_terminal() -> None:
    log = io.StringIO()
    reporter = Reporter(Summary(bytes=25), total_bytes=100, revisions=2, interval=5.0, stream=log)
    reporter.show()
    reporter.show()
    reporter.close()  # adds nothing: the summary follows
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("progress: 25.0%") for line in lines)
    assert reporter.interval == 5.0


def test_clock() -> None:
    assert (clock(None), clock(0), clock(59.9), clock(3725)) == (
        "-:--:--", "0:00:00", "0:00:59", "1:02:05")


def test_summary_text_and_dict_carry_every_count() -> None:
    summary = Summary(revisions=2, lines=10, events=6, properties=9, aliases=1, rejects=2,
                      truncated=1, skipped=1, elapsed=2.0)
    assert summary.text().startswith(
        "imported 2 revisions: 10 lines, 6 events, 9 properties, 1 aliases, 2 rejects, "
        "1 truncated values, 1 skipped by filters in 2.0 s (5 lines/s)")
    data = summary.as_dict()
    assert data["lines_per_second"] == 5.0 and "started" not in data
