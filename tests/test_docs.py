"""Every code block of the README and docs/ that a user would run, run as a user would: in
order, page after page, in one working directory, after the quick start on the bundled sample.

How the Markdown says what to do with a block:

- ```sh: each line is a command, run by bash in the working directory; it must succeed.
  ``pip install`` is not run (the suite runs in the installed environment; `.ci/quickstart`
  runs the real install in a fresh one): a ``pip install ... &&`` prefix is dropped.
- ``<!-- output -->`` before an untagged block: what the ```sh block before it prints.
- ```console: ``$ command`` lines, each followed by what it prints (stdout and stderr, as a
  terminal shows them), and ``[exit N]`` when it exits N, not 0.
- ```pycon: a doctest; the blocks of one page share their names, in order.
- ```sql: one statement, then ``-- `` lines: the columns and rows it returns; run on the
  embedded database of the quick start and on MariaDB holding the same import.
- ``<!-- not run: why -->`` before a block: not run (it needs a server, a bucket or cron).
- Any other block (untagged, ``ini``...) is text to read.

Output that changes from run to run (durations, rates, the dates of runs) is masked on both
sides before comparing.
"""

from __future__ import annotations

import doctest
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import Database, connect

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/configuration.md", "docs/data-model.md", "docs/dealiasing.md",
         "docs/first-import.md", "docs/guarantees.md", "docs/operations.md",
         "docs/how-it-works.md"]
RUN_AT_LEAST = {"README.md": 2, "docs/configuration.md": 3, "docs/data-model.md": 15,
                "docs/dealiasing.md": 1, "docs/operations.md": 2}  # blocks a page runs
FENCE = re.compile(r"^(?:<!-- (?P<note>[^>]*?) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$",
                   re.M | re.S)
MASKS = [  # (what varies, what it becomes)
    (re.compile(r"\b20[2-9]\d-\d\d-\d\d \d\d:\d\d:\d\d\b"), "<time>"),  # when a run happened
    (re.compile(r"\b\d+(\.\d+)? s\b"), "<n> s"),  # durations
    (re.compile(r"\b[\d,]+ lines/s\b"), "<n> lines/s"),
]


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    note: str | None

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.lang or 'text'})"


def blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text(encoding="utf-8")
    return [Block(page, text.count("\n", 0, m.start("lang")) + 1, m["lang"], m["body"], m["note"])
            for m in FENCE.finditer(text)]


def mask(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text.rstrip("\n")


@dataclass
class Workdir:
    """The user's working directory: the sample at ``examples/``, the commands on PATH."""

    path: Path
    env: dict[str, str]
    mariadb: Database

    def shell(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], cwd=self.path, env=self.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workdir]:
    path = tmp_path_factory.mktemp("user")
    (path / "examples").symlink_to(ROOT / "examples")
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "kmdb-async").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m kmdb_async "$@"\n')
    (bin_dir / "kmdb-async").chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KMDB_", "AWS_", "DATABASE_URL", "COLUMNS"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHONPATH=str(ROOT / "src"), COLUMNS="80",
               KMDB_PROGRESS_INTERVAL="0")  # no progress line in outputs on a slow machine
    mariadb = Database(f"kmdb_test_{uuid.uuid4().hex[:12]}")
    done = subprocess.run([sys.executable, "-m", "kmdb_async", "import", "examples/sample-export",
                           "--database-url", mariadb.url, "--rejects", os.devnull],
                          cwd=path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    try:
        yield Workdir(path, env, mariadb)
    finally:
        mariadb.drop()


def test_every_page_is_run() -> None:
    assert {p.as_posix() for p in (ROOT / "docs").glob("*.md")} == {
        (ROOT / page).as_posix() for page in PAGES[1:]}
    skipped = [str(b) for page in PAGES for b in blocks(page)
               if b.note and b.note.startswith("not run")]
    assert len(skipped) <= 6, skipped  # few, each saying why


@pytest.mark.parametrize("page", PAGES)
def test_the_code_blocks_of_a_page_do_what_it_shows(page: str, workdir: Workdir,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir.path)  # the pycon blocks' open_session(): ./kmdb.sqlite3
    monkeypatch.delenv("DATABASE_URL", raising=False)
    globs: dict[str, Any] = {}
    found = blocks(page)
    ran = 0
    try:
        for i, block in enumerate(found):
            if block.note and block.note.startswith("not run"):
                continue
            if block.lang == "sh":
                after = found[i + 1] if i + 1 < len(found) else None
                shown = after.body if after and after.note == "output" else None
                run_sh(workdir, block, shown)
            elif block.lang == "console":
                run_console(workdir, block)
            elif block.lang == "pycon":
                run_pycon(block, globs)
            elif block.lang == "sql":
                run_sql(workdir, block)
            else:
                continue
            ran += 1
    finally:
        session = globs.get("session")
        if session is not None:
            session.close()
            session.get_bind().dispose()
    assert ran >= RUN_AT_LEAST.get(page, 0), f"{page}: only {ran} blocks run"


def run_sh(workdir: Workdir, block: Block, shown: str | None) -> None:
    out = []
    for line in block.body.splitlines():
        command = re.sub(r"^pip install [^&]*&&\s*", "", line)
        if not command.strip() or command.startswith("pip install "):
            continue
        done = workdir.shell(command)
        assert done.returncode == 0, f"{block}: {command}\n{done.stdout}"
        out.append(done.stdout)
    if shown is not None:
        assert mask("".join(out)) == mask(shown), f"{block} printed:\n{''.join(out)}"


def run_console(workdir: Workdir, block: Block) -> None:
    steps = re.split(r"^\$ ", block.body, flags=re.M)
    assert steps[0] == "", f"{block}: a console block starts with '$ '"
    for step in steps[1:]:
        command, _, shown = step.partition("\n")
        code = 0
        if (end := re.search(r"^\[exit (\d+)\]\n?\Z", shown, re.M)) is not None:
            code, shown = int(end[1]), shown[:end.start()]
        done = workdir.shell(command)
        assert (done.returncode, mask(done.stdout)) == (code, mask(shown)), (
            f"{block}: $ {command}\nexit {done.returncode}, printed:\n{done.stdout}")


def run_pycon(block: Block, globs: dict[str, Any]) -> None:
    test = doctest.DocTestParser().get_doctest(block.body, globs, str(block), block.page,
                                               block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    globs.update(test.globs)  # (a DocTest works on a copy)
    assert runner.failures == 0, "".join(report)


def run_sql(workdir: Workdir, block: Block) -> None:
    lines = block.body.strip().splitlines()
    last = max(i for i, line in enumerate(lines) if not line.startswith("--"))
    sql = "\n".join(line for line in lines[:last + 1] if not line.startswith("--")).rstrip(";")
    shown = [line.removeprefix("-- ") for line in lines[last + 1:]]
    embedded = sqlite3.connect(workdir.path / "kmdb.sqlite3")
    try:
        cursor = embedded.execute(sql)
        assert table(cursor.description, cursor.fetchall()) == shown, f"{block} (embedded)"
    finally:
        embedded.close()
    conn = connect(workdir.mariadb.url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            assert table(cur.description, cur.fetchall()) == shown, f"{block} (MariaDB)"
    finally:
        conn.close()


def table(description: Any, rows: list[tuple[Any, ...]]) -> list[str]:
    def show(value: Any) -> str:
        return "NULL" if value is None else str(value)

    return [" | ".join(d[0] for d in description)] + [
        " | ".join(show(v) for v in row) for row in rows]


def test_masks_leave_the_data_alone() -> None:
    assert mask("2012-01-01 00:03:03 | Event 241") == "2012-01-01 00:03:03 | Event 241"
    assert mask("last check  2026-01-05 09:14:03 (UTC)") == "last check  <time> (UTC)"
    assert mask("in 0.4 s (8,187 lines/s)") == "in <n> s (<n> lines/s)"
