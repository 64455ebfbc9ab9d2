"""A/B: the same first import with two source trees, alternating, on one export.

    python benchmarks/ab.py --lines 1000000 --rounds 3 OLD_TREE NEW_TREE

A tree is a checkout of this project (e.g. ``git worktree add /tmp/old HEAD~1``); its
``src`` goes first on PYTHONPATH. Each round imports the export once per tree, each time into
a fresh database, so the machine's drift hits both alike. Prints wall, client CPU and server
CPU seconds per import, and each tree's medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from run import fresh_db, measured, server_cpu

from tests.exportgen import write_export


def settle(limit: float = 60.0) -> None:
    """Wait until the server is idle (the previous database's drop is purged in the
    background and would otherwise bill its CPU to the next import)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = server_cpu()
        time.sleep(1.0)
        after = server_cpu()
        if before is None or after is None or after - before < 0.05:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("trees", type=Path, nargs="+")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[Path, list[tuple[float, float, float]]] = {tree: [] for tree in args.trees}
    with tempfile.TemporaryDirectory(prefix="kmdb-ab-") as work:
        export = Path(work) / "export"
        write_export(export, args.lines, revisions=max(8, 8 * args.lines // 1_000_000), seed=42)
        for _ in range(args.rounds):
            for tree in args.trees:
                db = fresh_db("kmdb_bench_ab")
                settle()
                env = {"DATABASE_URL": f"mysql://root@127.0.0.1:3306/{db}",
                       "PYTHONPATH": str(tree.resolve() / "src")}
                before = server_cpu() or 0.0
                wall, _, cpu = measured([sys.executable, "-m", "kmdb_async", "import", str(export),
                                         "--rejects", os.devnull], env)
                server = (server_cpu() or 0.0) - before
                results[tree].append((wall, cpu, server))
                print(f"{tree}: wall {wall:6.1f} s  client CPU {cpu:6.1f} s  server CPU {server:6.1f} s",
                      flush=True)
    for tree, runs in results.items():
        wall, cpu, server = (statistics.median(column) for column in zip(*runs, strict=True))
        print(f"{tree}: median wall {wall:6.1f} s  client CPU {cpu:6.1f} s  server CPU {server:6.1f} s")


if __name__ == "__main__":
    main()
