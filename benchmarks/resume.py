"""Resume: what a killed first import costs, and what slicing costs a first import.

    python benchmarks/resume.py [--lines 1000000] [--slice-mib 32] [--kill-at 0.8]
        [--data /work/bench-data] [--json resume.json]

On one ``benchmarks/traffic.py`` export (cached under DATA/exports), in this order, each
import into a fresh database ``kmdb_bench_resume``:

  1. one-load: the first import in one slice (``--slice-mib`` larger than the export): one
     LOAD DATA per table into empty tables with their indexes;
  2. sliced: the same import in slices of ``--slice-mib`` (primary key only, committed every
     slice, the indexes built at the end);
  3. killed: the sliced import again, SIGKILLed once its cursor passes ``--kill-at`` of the
     export's bytes, then
  4. rerun: the import run again, which loads the rest and builds the indexes.

Reported: wall seconds of each, ``sliced / one-load`` (what slicing costs) and ``rerun /
sliced`` (what a kill at 80% costs: issue 14's target is <= 0.3), and the rows after the
rerun checked against the sliced import's (per table: count and a checksum of the columns).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import traffic
from run import admin, fresh_db, measured

DB = "kmdb_bench_resume"
# What each table stores, ids of users and keys replaced by their names (ids depend on the
# order in which concurrent readers met the names).
CHECKED = {
    "events": ("`events` e JOIN `keys` k ON k.id = e.n JOIN users u ON u.id = e.user_id "
               "JOIN users o ON o.id = e.origin_user_id",
               "e.id, e.t, k.string, u.name, o.name"),
    "properties": ("`properties` p JOIN `keys` k ON k.id = p.key JOIN users u ON "
                   "u.id = p.user_id JOIN users o ON o.id = p.origin_user_id",
                   "p.id, p.t, k.string, u.name, o.name, p.event_id, MD5(p.value)"),
    "users": ("users", "name"),
    "aliases": ("aliases", "name1, name2, t"),
}


def env_for(slice_mib: float) -> dict[str, str]:
    return {"DATABASE_URL": f"mysql://root@127.0.0.1:3306/{DB}", "KMDB_SLICE_MIB": str(slice_mib),
            "KMDB_PROGRESS_INTERVAL": "0"}


def command(source: Path) -> list[str]:
    return [sys.executable, "-m", "kmdb_async", "import", str(source), "--rejects", os.devnull]


def fingerprint() -> dict[str, tuple[int, str]]:
    """Per table: rows and a checksum of what the import stored."""
    found = {}
    with admin(DB) as conn, conn.cursor() as cur:
        for table, (source, columns) in CHECKED.items():
            cur.execute(f"SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS(',', {columns}))), 0) "
                        f"FROM {source}")
            count, crc = cur.fetchone()
            found[table] = (int(count), str(crc))
    return found


def cursor_bytes() -> int:
    try:
        with admin(DB) as conn, conn.cursor() as cur:
            cur.execute("SELECT COALESCE(SUM(`offset`), 0) FROM kmdb_revisions")
            return int(cur.fetchone()[0])
    except Exception:  # noqa: BLE001 - the tables may not exist yet
        return 0


def killed_at(source: Path, slice_mib: float, share: float, total: int) -> float:
    """Start the sliced import, SIGKILL it once its cursor passes ``share`` of ``total``."""
    fresh_db(DB)
    child = subprocess.Popen(command(source), env={**os.environ, **env_for(slice_mib)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while child.poll() is None and cursor_bytes() < share * total:
        time.sleep(0.2)
    if child.poll() is not None:
        raise SystemExit("the import ended before the kill point: use a smaller --slice-mib")
    child.send_signal(signal.SIGKILL)
    child.wait()
    return cursor_bytes() / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--slice-mib", type=float, default=32)
    parser.add_argument("--kill-at", type=float, default=0.8)
    parser.add_argument("--data", type=Path, default=Path("/work/bench-data"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    source = traffic.write(traffic.Traffic(args.lines), args.data / "exports") / "history"
    total = sum(p.stat().st_size for p in (source / "revisions").iterdir())
    times: dict[str, float] = {}

    fresh_db(DB)
    times["one-load"] = measured(command(source), env_for(total / 2**20 * 2))[0]
    clean = fingerprint()
    fresh_db(DB)
    times["sliced"] = measured(command(source), env_for(args.slice_mib))[0]
    sliced = fingerprint()
    reached = killed_at(source, args.slice_mib, args.kill_at, total)
    times["rerun"] = measured(command(source), env_for(args.slice_mib))[0]
    rerun = fingerprint()
    result: dict[str, Any] = {
        "lines": args.lines, "export_mib": round(total / 2**20, 1), "slice_mib": args.slice_mib,
        "killed_at": round(reached, 3), "seconds": {k: round(v, 1) for k, v in times.items()},
        "sliced_over_one_load": round(times["sliced"] / times["one-load"], 2),
        "rerun_over_sliced": round(times["rerun"] / times["sliced"], 2),
        "rows_equal": clean == sliced == rerun,
    }
    with admin() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not result["rows_equal"]:
        raise SystemExit("the rows differ: " + json.dumps({"one-load": clean, "sliced": sliced,
                                                           "rerun": rerun}))


if __name__ == "__main__":
    main()
