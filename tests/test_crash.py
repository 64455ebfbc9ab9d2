"""SPEC section 5: SIGKILL at any moment, then run again: the rows of one clean import."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from . import reference
from .conftest import REDIS, Database
from .exportgen import write_export


def wait_for_rows(database: Database, rows: int, process: subprocess.Popen[bytes],
                  timeout: float = 60.0) -> None:
    """Return once ``events`` holds at least ``rows`` rows (or the process has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if database.query("SELECT COUNT(*) FROM events")[0][0] >= rows:
                return
        except Exception:  # the schema may not exist yet
            database.close()
        time.sleep(0.02)


@pytest.mark.parametrize("backend,cursor", [("mariadb", "redis"), ("mariadb", "database"),
                                            ("sqlite", "database")])
def test_sigkill_part_way_then_rerun_gives_the_clean_rows(
        make_database: Any, tmp_path: Path, redis_prefix: str, backend: str, cursor: str) -> None:
    database = make_database(backend)
    root = tmp_path / "export"
    write_export(root, 12000, revisions=5, seed=11)
    env = {**os.environ, "DATABASE_URL": database.url, "KMDB_BATCH_SIZE": "20",
           "KMDB_WRITERS": "3", "KMDB_FILES_IN_FLIGHT": "3"}
    if cursor == "redis":
        env.update(KMDB_REDIS_URL=REDIS, KMDB_REDIS_PREFIX=redis_prefix)
    command = [sys.executable, "-m", "kmdb_async", "import", str(root)]

    kills = 0
    for rows in (0, 200, 2500, 6000):  # before the first commit, then deeper and deeper
        process = subprocess.Popen(command, env=env, cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rows == 0:
            time.sleep(0.3)
        else:
            wait_for_rows(database, rows, process)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 3

    final = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr
    database.close()
    assert database.dump() == reference.expected(root)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_progress_and_exit_promptly(
        database: Database, tmp_path: Path, signum: int) -> None:
    root = tmp_path / "export"
    write_export(root, 12000, revisions=4, seed=13)
    env = {**os.environ, "DATABASE_URL": database.url, "KMDB_BATCH_SIZE": "20", "KMDB_WRITERS": "2"}
    command = [sys.executable, "-m", "kmdb_async", "import", str(root)]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for_rows(database, 500, process)
    assert process.poll() is None, "the import ended before it could be interrupted"
    process.send_signal(signum)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert process.returncode == 128 + signum
    assert "progress saved" in stderr and "Traceback" not in stderr
    saved = database.query("SELECT SUM(`offset`) FROM kmdb_revisions")[0][0]
    assert saved and saved > 0  # committed batches were recorded

    final = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr
    assert "imported" in final.stdout
    database.close()
    assert database.dump() == reference.expected(root)
