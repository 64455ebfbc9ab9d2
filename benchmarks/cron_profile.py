"""Where a cron run's time goes: the statements it sends, timed from the client.

    python benchmarks/cron_profile.py [--lines 1000000] [--data /work/bench-data]

Imports a ``traffic.py`` export's history into a fresh database ``kmdb_bench_cron`` (a first
import, not timed), then runs the cron import of its new lines in this process with every
statement of aiomysql's cursors timed, and prints the seconds spent per kind of statement
(summed over the concurrent writers, so the total exceeds the wall time) and how many ran.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomysql.cursors
import traffic
from run import admin, fresh_db

from kmdb_async.pipeline import run_import
from kmdb_async.settings import Settings

DB = "kmdb_bench_cron"
SPENT: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])


def kind(query: Any) -> str:
    """A statement's first words, numbers masked: its kind."""
    raw = bytes(query).decode() if isinstance(query, bytes | bytearray) else str(query)
    text = re.sub(r"\s+", " ", raw)
    return re.sub(r"\d+", "N", text[:48])


def timed(method: Callable[..., Awaitable[Any]], prefix: str = "") -> Callable[..., Awaitable[Any]]:
    async def run(self: Any, query: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await method(self, query, *args)
        finally:
            entry = SPENT[prefix + kind(query)]
            entry[0] += 1
            entry[1] += time.perf_counter() - t0

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path("/work/bench-data"))
    args = parser.parse_args()
    export = traffic.write(traffic.Traffic(args.lines), args.data / "exports")
    fresh_db(DB)
    url = f"mysql://root@127.0.0.1:3306/{DB}"
    subprocess.run([sys.executable, "-m", "kmdb_async", "import", str(export / "history"),
                    "--rejects", os.devnull], env={**os.environ, "DATABASE_URL": url,
                                                    "KMDB_PROGRESS_INTERVAL": "0"},
                   check=True, stdout=subprocess.DEVNULL)
    cursor = aiomysql.cursors.Cursor
    cursor.execute = timed(cursor.execute)  # type: ignore[method-assign]
    cursor.executemany = timed(cursor.executemany, "many: ")  # type: ignore[method-assign]
    settings = Settings(database_url=url, source=str(export / "full"), rejects=Path(os.devnull),
                        progress_interval=0)
    t0 = time.perf_counter()
    summary = asyncio.run(run_import(settings))
    print(f"cron run: {summary.lines:,} lines in {time.perf_counter() - t0:.1f} s")
    for name, (count, seconds) in sorted(SPENT.items(), key=lambda kv: -kv[1][1])[:15]:
        print(f"{seconds:8.2f} s {int(count):7d}  {name}")
    with admin() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{DB}`")


if __name__ == "__main__":
    main()
