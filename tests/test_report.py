"""What an import shows while it runs: a bar on a terminal, log lines otherwise."""

from __future__ import annotations

import io

from kmdb_async.report import Reporter, Summary


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_bar_with_bytes_rate_revisions_and_eta() -> None:
    summary = Summary(lines=500, bytes=50_000_000, revisions=1)
    screen = Terminal()
    reporter = Reporter(summary, total_bytes=100_000_000, revisions=4, interval=5.0, stream=screen)
    reporter.show()
    shown = screen.getvalue()
    assert shown.startswith("\r[###############               ]")
    assert "50.0%" in shown and "50.0/100.0 MB" in shown and "revisions 1/4" in shown
    assert "lines/s" in shown and "ETA" in shown
    assert reporter.interval == 0.5  # a terminal is redrawn twice a second


def test_log_lines_when_not_a_terminal() -> None:
    log = io.StringIO()
    reporter = Reporter(Summary(bytes=25), total_bytes=100, revisions=2, interval=5.0, stream=log)
    reporter.show()
    reporter.show()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("progress: 25.0%") for line in lines)
    assert reporter.interval == 5.0


def test_summary_text_and_dict_carry_every_count() -> None:
    summary = Summary(revisions=2, lines=10, events=6, properties=9, aliases=1, rejects=2,
                      truncated=1, skipped=1, elapsed=2.0)
    assert summary.text().startswith(
        "imported 2 revisions: 10 lines, 6 events, 9 properties, 1 aliases, 2 rejects, "
        "1 truncated values, 1 skipped by filters in 2.0 s (5 lines/s)")
    data = summary.as_dict()
    assert data["lines_per_second"] == 5.0 and "started" not in data
