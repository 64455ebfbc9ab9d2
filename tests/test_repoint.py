"""Re-pointing rows when aliases join groups: exact in every case, linear in what moves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kmdb_async.pipeline import run_import
from kmdb_async.resolver import Repoint
from kmdb_async.store.repoint import repoint_statements

from . import reference
from .conftest import Database, settings_for

T = 1_400_000_000


def line(p: str, t: int, p2: str | None = None, n: str | None = None, **props: str) -> bytes:
    record: dict[str, Any] = {"_p": p, "_t": t, **props}
    if p2 is not None:
        record["_p2"] = p2
    if n is not None:
        record["_n"] = n
    return json.dumps(record).encode() + b"\n"


def test_statements_stay_under_their_limit_and_name_every_former_once() -> None:
    big = Repoint(canonical_id=7, names=list(range(100, 200_100)))
    small = Repoint(canonical_id=8, names=[5, 6])
    numeric = Repoint(canonical_id=9, names=[], numerics=[50, 60],
                      members=list(range(300_000, 400_000)))
    statements = list(repoint_statements("events", [big, numeric, small], 64 << 10))
    assert all(len(s.encode()) <= 64 << 10 for s in statements)
    whens = [tuple(map(int, m)) for s in statements
             for m in re.findall(r"WHEN (\d+) THEN (\d+)", s)]
    assert sorted(whens) == sorted([(i, 7) for i in range(100, 200_100)] + [(5, 8), (6, 8)])
    # The numeric former canonicals move only rows of the group's members, in bounded lists.
    moved = [s for s in statements if "`origin_user_id` IN" in s]
    assert all(s.startswith("UPDATE `events` SET `user_id` = 9 WHERE `user_id` IN (50,60) AND")
               for s in moved)
    origins = [int(i) for s in moved for i in s.split("`origin_user_id` IN (")[1][:-1].split(",")]
    assert sorted(origins) == list(range(300_000, 400_000))


# Each revision is imported by its own run (a cron run onto the ones before), and after each
# the rows must equal the model's. Names: a..f, x, y non-numeric; numbers attached.
STEPS: list[list[bytes]] = [
    [line("a", T, n="A"), line("b", T, n="B"), line("c", T, n="C"), line("d", T, n="D"),
     line("x", T, n="X"), line("500", T, n="own 500"), line("700", T, n="own 700"),
     line("a", T + 1, "b"), line("c", T + 1, "d"), line("a", T + 1, "500"),
     line("x", T + 1, "500"),  # 500 is attached to {a, b} and to {x}: canonical of both
     line("d", T + 1, "700"),
     line("a", T + 2, n="A2"), line("x", T + 2, n="X2"), line("d", T + 2, n="D2")],
    # {a, b}: 500 -> 100. {x} keeps 500, and 500's own rows stay its own.
    [line("b", T + 3, "100"), line("b", T + 4, n="B3"), line("500", T + 4, n="own 500 again")],
    # {a, b, 100, 500} and {c, d, 700} merge: the rows of c and d move from 700 to 100.
    [line("c", T + 5, "a"), line("c", T + 6, n="C5")],
    # In one batch, e joins f, then f joins a: e and f move from "e" to 100.
    [line("e", T + 7, n="E"), line("f", T + 7, n="F"), line("e", T + 8, "f"),
     line("f", T + 8, "a"), line("e", T + 8, n="E8")],
    # y joins {x}; {x} gets 50: only x's and y's rows move off 500, not {a, ...}'s or 500's.
    [line("y", T + 9, n="Y"), line("y", T + 10, "x"), line("x", T + 10, "50"),
     line("y", T + 11, n="Y11")],
]


@pytest.mark.parametrize("kind", ["mariadb", "sqlite"])
@pytest.mark.parametrize("alias_cache_size", [100_000, 2], ids=["cached", "looked-up"])
async def test_cron_runs_move_the_rows_of_changed_groups_and_no_others(
        make_database: Any, tmp_path: Path, kind: str, alias_cache_size: int) -> None:
    database: Database = make_database(kind)
    root = tmp_path / "export"
    (root / "revisions").mkdir(parents=True)
    settings = settings_for(database, str(root), batch_size=2, alias_cache_size=alias_cache_size)
    for number, lines in enumerate(STEPS, start=1):
        (root / "revisions" / f"{number}.json").write_bytes(b"".join(lines))
        await run_import(settings)
        assert database.dump() == reference.expected(root), f"after revision {number}"
    users = dict(database.query("SELECT name, id FROM users"))
    owners = {name: user for name, user in database.query(
        "SELECT k.string, u.name FROM events e JOIN `keys` k ON k.id = e.n "
        "JOIN users u ON u.id = e.user_id")}
    assert users and owners["own 500"] == "500" and owners["own 700"] == "700"
    assert owners["A"] == owners["C"] == owners["E8"] == owners["F"] == "100"
    assert owners["X"] == owners["Y"] == owners["Y11"] == "50"


GROUP = 100_000  # non-numeric identities of the giant group


def giant_history(root: Path) -> None:
    """One group of GROUP identities around a hub (a shared device), with events of some."""
    (root / "revisions").mkdir(parents=True)
    with open(root / "revisions" / "1.json", "wb") as f:
        for i in range(GROUP - 1):
            f.write(line(f"anon-{i:06d}", T + i // 100, "hub-device"))
            if i % 4 == 0:
                f.write(line(f"anon-{i:06d}", T + i // 100, n="Visited", page=str(i % 7)))
        f.write(line("hub-device", T, n="Visited"))


def giant_cron(root: Path) -> None:
    """New members linked into the group, their events, and a numeric identity that becomes
    the group's canonical: every row of the group moves, once."""
    with open(root / "revisions" / "2.json", "wb") as f:
        t = T + GROUP // 100 + 10
        for i in range(2000):
            f.write(line(f"new-{i:05d}", t + i // 50, "hub-device"))
            f.write(line(f"new-{i:05d}", t + i // 50, n="Signed Up"))
            f.write(line(f"anon-{i * 37:06d}", t + i // 50, n="Came Back"))
        f.write(line("anon-000001", t + 100, "12345"))
        f.write(line("anon-000002", t + 101, n="Paid"))


def cli(env: dict[str, str], cwd: Path, *args: str, limit: int | None = None,
        ) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the CLI under an address-space limit; returns the result and its peak RSS (KiB).

    The peak is the process's own VmHWM: getrusage's ru_maxrss would also count the RSS of
    the process it was forked from before its exec (the test runner's, hundreds of MB)."""
    peak = cwd / "peak-rss"
    wrapper = ("import atexit, re, sys\n"
               "path = sys.argv[1]\n"
               "def peak():\n"
               "    status = open('/proc/self/status').read()\n"
               "    open(path, 'w').write(re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
               "atexit.register(peak)\n"
               "sys.argv = ['kmdb-async', *sys.argv[2:]]\n"
               "from kmdb_async.cli import main\nmain()\n")
    command = [sys.executable, "-c", wrapper, str(peak), *args]
    if limit is not None:
        command = ["prlimit", f"--as={limit}", "--", *command]
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=600)
    return result, int(peak.read_text()) if peak.exists() else 0


def test_a_cron_run_onto_a_giant_group_is_exact_and_bounded_in_memory(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    giant_history(root)
    env = {**os.environ, "DATABASE_URL": database.url, "KMDB_PROGRESS_INTERVAL": "600"}
    first, _ = cli(env, tmp_path, "import", str(root))
    assert first.returncode == 0, first.stderr
    assert f"alias group of {GROUP:,} identities" in first.stdout

    giant_cron(root)
    second, peak = cli(env, tmp_path, "import", str(root), limit=2 << 30)
    assert second.returncode == 0, second.stderr
    assert 0 < peak <= 300 * 1024, f"peak RSS {peak / 1024:.0f} MB"
    print(f"peak RSS of the cron run: {peak / 1024:.0f} MB")
    assert f"alias group of {GROUP + 2001:,} identities" in second.stdout
    assert "'12345'" in second.stdout
    database.close()
    assert database.dump() == reference.expected(root)

    status, _ = cli(env, tmp_path, "status", str(root))
    assert status.returncode == 0, status.stderr
    assert f"alias group of {GROUP + 2001:,} identities" in status.stdout
