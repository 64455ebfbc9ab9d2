"""SIGKILL an import at many random points, re-run it, and count the points that held.

Each point: a fresh database, one import killed at a randomly chosen moment (one of the
named points of tests/test_crash.py looked for after a random delay, or plainly after a
random time), then a re-run to completion; the point *held* when the tables then equal a
clean import's (tests/reference.py), row by row. Needs the test services (MariaDB, Redis).

    .venv/bin/python benchmarks/kill_points.py --points 20 [--seed 7] [--lines 12000] [--bulk]

With ``--bulk`` every killed import is a first import by bulk load (LOAD DATA streams, users
included), killed at the bulk load's named points or after a random time.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import reference  # noqa: E402
from tests.conftest import MYSQL, REDIS, Database, connect  # noqa: E402
from tests.test_crash import (  # noqa: E402
    BULK_POINTS,
    POINTS,
    Watch,
    crash_env,
    kill_at,
    write_crash_export,
)

KINDS = (*POINTS, "after-a-random-time")
BULK_KINDS = (*BULK_POINTS, "after-a-random-time")  # a first import's bulk load


def one_point(kind: str, delay: float, cursor: str, root: Path, expected: object,
              workdir: Path, bulk: bool) -> tuple[str, bool]:
    """Kill one import at ``kind``, re-run it; (how the point was met, whether it held)."""
    database = Database(f"kmdb_kill_{uuid.uuid4().hex[:12]}")
    prefix = f"kmdb-kill:{uuid.uuid4().hex[:12]}" if cursor == "redis" else None
    watch = Watch(database, root, prefix)
    env = crash_env(database, prefix, bulk=bulk)
    command = [sys.executable, "-m", "kmdb_async", "import", str(root)]
    try:
        if kind == "after-a-random-time":
            process = subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            time.sleep(delay)
            outcome = "reached" if process.poll() is None else "missed"
            process.kill()
            process.wait()
        else:
            outcome = kill_at(kind, watch, command, env, workdir, delay=delay)
        final = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True,
                               timeout=300)
        database.close()
        return outcome, final.returncode == 0 and database.dump() == expected
    finally:
        watch.close()
        database.close()
        admin = connect(f"{MYSQL}/mysql")
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database.name}`")
        admin.close()
        if prefix is not None:
            subprocess.run(["redis-cli", "-u", REDIS, "DEL", f"{prefix}:cursor"],
                           capture_output=True, timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20, help="kill points to try")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--lines", type=int, default=12000, help="lines of the export")
    parser.add_argument("--bulk", action="store_true",
                        help="kill first imports by bulk load (default: row inserts)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="kmdb-kill-") as tmp:
        workdir = Path(tmp)
        root = workdir / "export"
        write_crash_export(root, args.lines, revisions=5, seed=seed % 1000)
        expected = reference.expected(root)
        print(f"seed {seed}, {args.lines} lines in 5 revisions")
        print(f"{'#':>3} {'point':<27} {'cursor':<9} {'delay s':>7} {'met':<10} held")
        held = killed = 0
        for n in range(1, args.points + 1):
            kind = rnd.choice(BULK_KINDS if args.bulk else KINDS)
            # These two only exist at the start of a fresh import (re-pointing locks rows).
            fresh = kind in ("re-pointing", "before-first-commit")
            delay = 0.0 if fresh else round(rnd.uniform(0.0, 3.0), 2)
            if kind == "after-a-random-time":
                delay = round(rnd.uniform(0.5, 5.0), 2)
            cursor = rnd.choice(["database", "redis"])
            outcome, ok = one_point(kind, delay, cursor, root, expected, workdir, args.bulk)
            held += ok
            killed += outcome != "missed"
            print(f"{n:>3} {kind:<27} {cursor:<9} {delay:>7.2f} {outcome:<10} "
                  f"{'yes' if ok else 'NO'}", flush=True)
        print(f"killed at {killed} of {args.points} points; held: {held}/{args.points}")
        return 0 if held == args.points else 1


if __name__ == "__main__":
    sys.exit(main())
