"""Progress as a user sees it: one live line on a terminal (checked through a pseudo-terminal),
plain log lines at a chosen interval otherwise."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from rich.cells import cell_len

from .test_cli import cli

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample-export"
CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # cursor, colour and erase sequences
CURSOR_UP = re.compile(r"\x1b\[[0-9]*A")


def on_terminal(args: list[str], columns: int, cwd: Path) -> str:
    """Run ``kmdb-async ARGS`` with stdin, stdout and stderr on a pseudo-terminal of
    ``columns`` x 24; everything it wrote, as the terminal received it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KMDB_", "DATABASE_URL", "COLUMNS", "LINES"))}
    process = subprocess.Popen([sys.executable, "-m", "kmdb_async", *args], cwd=cwd,
                               env={**env, "TERM": "xterm-256color"},
                               stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            received += chunk
        assert process.wait(timeout=60) == 0, received.decode(errors="replace")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return received.decode("utf-8", errors="replace")


@pytest.mark.parametrize("columns", [80, 40])
def test_progress_on_a_terminal_stays_on_one_line(tmp_path: Path, columns: int) -> None:
    shown = on_terminal(["import", str(SAMPLE), "--database-url", "sqlite:///k.sqlite3"],
                        columns, tmp_path)
    assert not CURSOR_UP.search(shown), "the progress display went up: it took several lines"
    # Each line, cut at its carriage returns: what each redraw wrote over the line.
    lines = [CSI.sub("", line).split("\r") for line in shown.split("\n")]
    with_progress = [i for i, line in enumerate(lines) if any("ETA" in p for p in line)]
    assert len(with_progress) == 1, shown  # every refresh rewrote the same line
    redraws = [p for p in lines[with_progress[0]] if p.strip()]
    assert len(redraws) >= 2, shown  # drawn at the start, redrawn at the end at least
    for piece in redraws:  # (the summary after it is printed once: it may wrap)
        assert cell_len(piece) <= columns, f"wider than the terminal: {piece!r}"
    final = redraws[-1]
    assert "100%" in final and "rev 4/4" in final and "ETA 0:00:00" in final
    if columns >= 80:  # room for everything
        assert "534.8/534.8 kB" in final and "lines/s" in final and "━━━━━━━━━━" in final
    summary = [i for i, line in enumerate(lines) if any("imported 4 revisions" in p for p in line)]
    assert summary and summary[0] > with_progress[0]


def test_log_lines_come_at_the_interval_chosen(tmp_path: Path) -> None:
    """Without a terminal: plain lines, as often as --progress-interval says (0: none)."""
    from .exportgen import write_export

    write_export(tmp_path / "export", 20_000, revisions=2, seed=3)
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'k.sqlite3'}"}
    quiet = cli("import", str(tmp_path / "export"), "--progress-interval", "0", **env)
    assert quiet.returncode == 0, quiet.stderr
    assert "progress:" not in quiet.stderr and "imported 2 revisions" in quiet.stdout

    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'k2.sqlite3'}"
    chatty = cli("import", str(tmp_path / "export"), KMDB_PROGRESS_INTERVAL="0.05", **env)
    assert chatty.returncode == 0, chatty.stderr
    progress = [line for line in chatty.stderr.splitlines() if line.startswith("progress: ")]
    assert progress, chatty.stderr  # a run of a second or more, a line every 0.05 s
    assert all("lines/s" in line and "ETA" in line for line in progress)
    assert "\r" not in chatty.stderr and "\x1b" not in chatty.stderr
