"""Scale: first imports and cron runs as the history grows, beside LOAD DATA of the same rows.

    python benchmarks/scale.py --sizes 1000000,5000000,20000000 [--data /work/bench-data]
        [--buffer-pool-mib 512] [--json scale.json] [--png scale.png] [--env KEY=VALUE ...]
        [--partition-days N] [--giant-group N] [--memory-limit-mib 4096] [--parallel-load]
        [--step-timeout 10800] [--tree CHECKOUT] [--keep]

For each size N (lines of the history), on an export of ``benchmarks/traffic.py`` (cached
under DATA/exports), into databases ``kmdb_bench_scale_a`` (the importer) and
``kmdb_bench_scale_c`` (LOAD DATA), in this order:

  1. (a) first import: ``kmdb-async import HISTORY`` into a fresh database;
  2. its rows are dumped to TSV (a streamed SELECT by the ``mariadb`` client);
  3. (c) first import: one LOAD DATA LOCAL per table of those rows, into tables created LIKE
     (a)'s (the same indexes and partitions), ``unique_checks=0, foreign_key_checks=0``, one
     table after another on one connection (as ``run.py``'s (c)), or with ``--parallel-load``
     every table at once on a connection each (the importer streams its tables at once);
  4. (a) cron run: ``kmdb-async import FULL`` (the last revision grown, new revisions: N/10
     more lines) onto (a);
  5. the rows the cron run added (ids past (a)'s largest after step 1) are dumped to TSV;
  6. (c) cron run: LOAD DATA LOCAL of those rows appended to (c), which holds the history.

The importer and LOAD DATA alternate on the same server with the same buffer pool. Before each
timed step the OS page cache is dropped (when permitted; else the step's input is read once, so
both find it cached), the previous step's dirty pages are written out (FLUSH TABLES ... FOR
EXPORT; its time is recorded, not counted) and the server is let idle. The buffer pool is set
to ``--buffer-pool-mib`` for the run and restored at the end, also on failure, Ctrl-C or
SIGTERM. Per step: wall time, lines/s, the ratio to LOAD DATA, client CPU per line (us, the
importer's or the mariadb client's), the local server's CPU (from /proc), peak RSS.
A step that fails (the importer runs under ``prlimit --as``, so a runaway one fails alone; an
import still running after ``--step-timeout`` is stopped) is recorded with its reason, and the
steps that need its rows are skipped. JSON is written after every size; the table (markdown,
for benchmarks/README.md) and the chart at the end (``scale_report.py`` redraws them from the
JSON). Databases and TSV files are dropped at the end unless ``--keep``. Needs root (``SET GLOBAL``) and the
``mariadb`` client; exports take about 200 bytes a line (20M lines: 4.4 GB), TSV files as much.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import scale_report
import traffic
from ab import settle
from run import ROOT, admin, fresh_db, measured, server_cpu, server_pid, server_settings

from kmdb_async.store import schema

TABLES = (schema.EVENTS, schema.PROPERTIES, schema.USERS, schema.KEYS, schema.ALIASES)
IMPORTER, LOADER = "kmdb_bench_scale_a", "kmdb_bench_scale_c"
MARIADB = ["mariadb", "-h127.0.0.1", "-P3306", "-uroot", "--default-character-set=utf8mb4"]
TEXT_TYPES = ("char", "varchar", "tinytext", "text", "mediumtext", "longtext")


def step(name: str, lines: int, command: list[str], env: dict[str, str] | None,
         inputs: list[Path], timeout: float | None = None) -> dict[str, Any]:
    """Run one timed step in a subprocess, after the caches are made equal; its figures."""
    cache = "dropped" if drop_page_cache() else warm(inputs)
    flushed = sum(flush(each) for each in (IMPORTER, LOADER))  # the previous step's pages too
    settle(20.0)
    pid, before, t0 = server_pid(), server_cpu(), time.perf_counter()
    try:
        wall, rss, cpu = measured(command, env, timeout)
    except SystemExit as e:  # the step failed: say why, and go on with what can be measured
        reason = failure(str(e))
        print(f"    {name}: FAILED after {time.perf_counter() - t0:.1f} s: {reason}", flush=True)
        return {"failed": reason, "wall_s": time.perf_counter() - t0, "page_cache": cache}
    after = server_cpu()
    served = None if before is None or after is None or server_pid() != pid else after - before
    print(f"    {name}: {wall:8.1f} s {lines / wall:9,.0f} lines/s  client {cpu / lines * 1e6:5.1f} us/line"
          f"  server {served or 0:7.1f} s  RSS {rss:5.0f} MB", flush=True)
    return {"wall_s": wall, "lines_per_s": lines / wall, "client_cpu_s": cpu,
            "client_us_per_line": cpu / lines * 1e6, "server_cpu_s": served,
            "server_us_per_line": None if served is None else served / lines * 1e6,
            "peak_rss_mb": rss, "page_cache": cache, "flush_before_s": flushed}


def failure(message: str) -> str:
    """Why a step failed, in one line: the importer's error line, else its exit or timeout."""
    said = [line for line in message.splitlines() if line.startswith("kmdb-async:")]
    how = re.search(r"\(exit -?\d+\)|timed out after \d+ s", message)
    return said[-1] if said else how.group(0) if how else message.strip().splitlines()[-1]


def drop_page_cache() -> bool:
    """Drop the OS page cache (needs root, and a sandbox may refuse); whether it was dropped."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def warm(paths: list[Path]) -> str:
    """Read ``paths`` once, so the step finds its input cached as the other one does."""
    for path in paths:
        with path.open("rb") as f:
            while f.read(1 << 22):
                pass
    return "warmed"


def flush(db: str) -> float:
    """Write out ``db``'s dirty pages before the next step; seconds it took."""
    with admin() as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (db,))
        if cur.fetchone()[0] < len(TABLES):
            return 0.0
        cur.execute(f"USE `{db}`")
        t0 = time.perf_counter()
        cur.execute("FLUSH TABLES " + ", ".join(f"`{t}`" for t in TABLES) + " FOR EXPORT")
        cur.execute("UNLOCK TABLES")
        return time.perf_counter() - t0


def importer(args: argparse.Namespace, db: str, extra: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The command and environment of ``kmdb-async import`` from ``--tree``'s sources, its
    address space limited so that a runaway import fails alone on this shared machine."""
    env = {"DATABASE_URL": f"mysql://root@127.0.0.1:3306/{db}", "PYTHONPATH": str(args.tree / "src"),
           **extra}
    return ["prlimit", f"--as={args.memory_limit_mib * 2**20}", "--", sys.executable, "-m",
            "kmdb_async", "import", "--rejects", os.devnull], env


def partition(args: argparse.Namespace, db: str, extra: dict[str, str], export: dict[str, Any]) -> None:
    """``kmdb-async partition`` over the export's time range, before the first import."""
    spec = export["traffic"]
    first = datetime.fromtimestamp(spec["start"], UTC)
    last = datetime.fromtimestamp(spec["start"] + 86400 * (spec["lines"] * (1 + spec["cron_share"])
                                                            // spec["lines_per_day"] + 2), UTC)
    command, env = importer(args, db, extra)
    subprocess.run([*command[:-3], "partition", "--min-date", f"{first:%Y-%m-%d}", "--max-date",
                    f"{last:%Y-%m-%d}", "--days-per-partition", str(args.partition_days)],
                   env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)


def largest_ids(db: str) -> dict[str, int]:
    with admin(db) as conn, conn.cursor() as cur:
        ids = {}
        for table in TABLES:
            cur.execute(f"SELECT COALESCE(MAX(`id`), 0) FROM `{table}`")
            ids[table] = int(cur.fetchone()[0])
        return ids


def dump(db: str, folder: Path, after: dict[str, int] | None = None) -> dict[str, Path]:
    """Each table's rows (with ids past ``after``'s) as TSV for LOAD DATA, streamed by the
    mariadb client: text escaped in the SELECT, NULL as \\N."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    with admin(db) as conn, conn.cursor() as cur:
        for table in TABLES:
            cur.execute("SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE "
                        "TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (db, table))
            columns = [_tsv_column(name, kind) for name, kind in cur.fetchall()]
            where = f" WHERE `id` > {after[table]}" if after else ""
            files[table] = folder / f"{table}.tsv"
            with files[table].open("wb") as out:
                subprocess.run([*MARIADB, "-N", "-B", "--raw", "--quick", db, "-e",
                                f"SELECT {', '.join(columns)} FROM `{table}`{where}"],
                               stdout=out, check=True)
    return files


def _tsv_column(name: str, kind: str) -> str:
    r"""SQL giving column ``name`` as LOAD DATA's default format reads it (\, tab, newline
    escaped; NULL as \N); written in hex literals, which no client or sql_mode reinterprets."""
    value = f"`{name}`"
    if kind in TEXT_TYPES:
        for raw, escaped in (("5C", "5C5C"), ("09", "5C74"), ("0A", "5C6E")):
            value = f"REPLACE({value}, _utf8mb4 x'{raw}', _utf8mb4 x'{escaped}')"
    return f"IFNULL({value}, _utf8mb4 x'5C4E')"


def loader(db: str, files: dict[str, Path], parallel: bool = False) -> list[str]:
    """The command loading ``files`` into ``db`` by the mariadb client, one statement per
    table, one after another or (``parallel``) each on its own connection at once."""
    session = "SET unique_checks = 0, foreign_key_checks = 0"
    loads = [f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{table}` CHARACTER SET utf8mb4 "
             "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
             for table, path in files.items()]
    client = [*MARIADB, "--local-infile=1", db, "-e"]
    if not parallel:
        return [*client, "; ".join([session, *loads])]
    started = "; ".join(f"{shlex.join([*client, f'{session}; {load}'])} & p{i}=$!"
                        for i, load in enumerate(loads))
    waited = "; ".join(f"wait $p{i} || failed=1" for i in range(len(loads)))
    return ["sh", "-c", f"failed=0; {started}; {waited}; exit $failed"]


def copy_tables(source: str, target: str) -> None:
    with admin(target) as conn, conn.cursor() as cur:
        for table in TABLES:
            cur.execute(f"CREATE TABLE `{table}` LIKE `{source}`.`{table}`")


def row_counts(db: str) -> dict[str, int]:
    with admin(db) as conn, conn.cursor() as cur:
        counts = {}
        for table in TABLES:
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            counts[table] = int(cur.fetchone()[0])
        return counts


def sizes_mib(db: str) -> dict[str, float]:
    """Data and index sizes (MiB, InnoDB's statistics after ANALYZE) of ``db``'s tables."""
    with admin(db) as conn, conn.cursor() as cur:
        cur.execute("ANALYZE TABLE " + ", ".join(f"`{t}`" for t in TABLES))
        cur.fetchall()
        cur.execute("SELECT SUM(DATA_LENGTH), SUM(INDEX_LENGTH) FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = %s", (db,))
        data, index = cur.fetchone()
        return {"data_mib": int(data) / 2**20, "index_mib": int(index) / 2**20}


def measure_size(lines: int, args: argparse.Namespace, extra: dict[str, str]) -> dict[str, Any]:
    """Steps 1-6 for a history of ``lines`` lines; the figures of each."""
    t0 = time.perf_counter()
    spec = traffic.Traffic(lines, seed=args.seed, giant_group=args.giant_group)
    export = traffic.write(spec, args.data / "exports")
    about = traffic.meta(export)
    cron_lines = spec.total - lines
    print(f"{lines:,} lines: export {export.name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    work = args.data / "work" / str(lines)
    shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {"lines": lines, "cron_lines": cron_lines, "export": about}
    fresh_db(IMPORTER)
    if args.partition_days:
        partition(args, IMPORTER, extra, about)
    command, env = importer(args, IMPORTER, extra)
    after: dict[str, int] | None = None  # the largest ids of the history, once imported
    for case, count, source in (("first_import", lines, export / "history"),
                                ("cron", cron_lines, export / "full")):
        kmdb = step(f"(a) {case:13}", count, [*command, str(source)], env,
                    sorted((source / "revisions").iterdir()), args.step_timeout)
        result[case] = {"kmdb": kmdb, "load_data": None, "ratio": None}
        if "failed" in kmdb:
            break  # (a)'s rows are missing or partial: no LOAD DATA can match them
        files = dump(IMPORTER, work / case, after)
        if after is None:
            result["history"] = {"rows": row_counts(IMPORTER), **sizes_mib(IMPORTER)}
            copy_tables(IMPORTER, fresh_db(LOADER))
            after = largest_ids(IMPORTER)
        load = step("(c) LOAD DATA    ", count, loader(LOADER, files, args.parallel_load), None,
                    list(files.values()))
        if "failed" not in load:
            result[case].update(load_data=load, ratio=kmdb["wall_s"] / load["wall_s"])
    else:
        result["rows"] = row_counts(IMPORTER)
        if result["rows"] != row_counts(LOADER):
            raise SystemExit(f"(c) does not hold (a)'s rows: {result['rows']} / {row_counts(LOADER)}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    ratios = ", ".join(f"{case} {_ratio(result, case)}" for case in ("first_import", "cron"))
    index = result.get("history", {}).get("index_mib", 0.0)
    print(f"  ratio to LOAD DATA: {ratios}; history indexes {index:,.0f} MiB, "
          f"{index / args.buffer_pool_mib:.1f}x the buffer pool ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    return result


def _ratio(result: dict[str, Any], case: str) -> str:
    ratio = result.get(case, {}).get("ratio")
    return "-" if ratio is None else f"{ratio:.2f}x"


class BufferPool:
    """Sets innodb_buffer_pool_size for the run; restores it on exit, error, SIGINT or SIGTERM.

    ``connect``: a root connection to the server (autocommit)."""

    def __init__(self, mib: int, connect: Callable[[], Any] = admin) -> None:
        self.size = mib * 2**20
        self.connect = connect
        self.saved: int | None = None
        self.handlers: dict[int, Any] = {}

    def __enter__(self) -> BufferPool:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self.handlers[sig] = signal.signal(sig, self._interrupt)
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT @@innodb_buffer_pool_size")
            self.saved = int(cur.fetchone()[0])
            cur.execute("SET GLOBAL innodb_buffer_pool_size = %s", (self.size,))
            cur.execute("SELECT @@innodb_buffer_pool_size")
            self.size = int(cur.fetchone()[0])  # the server rounds it to whole chunks
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.saved is not None:
                with self.connect() as conn, conn.cursor() as cur:
                    cur.execute("SET GLOBAL innodb_buffer_pool_size = %s", (self.saved,))
                print(f"innodb_buffer_pool_size restored to {self.saved / 2**20:.0f} MiB", flush=True)
        finally:
            for sig, handler in self.handlers.items():
                signal.signal(sig, handler)

    @staticmethod
    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)  # unwinds through every finally


def checkout(tree: Path) -> str:
    """The last commit of ``tree``'s src/ (``+dirty`` when src/ has uncommitted changes)."""
    head = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h", "--", "src"],
                          capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "src"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return head + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="1000000,5000000,20000000", help="history lines, comma-separated")
    parser.add_argument("--data", type=Path, default=Path("/work/bench-data"),
                        help="exports (cached), TSV files; not the repo, not a small /tmp")
    parser.add_argument("--buffer-pool-mib", type=int, default=512)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="for the importer, e.g. KMDB_ALIAS_CACHE_SIZE=400000 (repeatable)")
    parser.add_argument("--partition-days", type=int, default=0,
                        help="run `kmdb-async partition` with these days per partition first")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose src/ is imported")
    parser.add_argument("--giant-group", type=int, default=None,
                        help="members of the export's giant alias group (default: traffic.py's; 0: none)")
    parser.add_argument("--memory-limit-mib", type=int, default=4096,
                        help="address space of the importer (a runaway one fails alone)")
    parser.add_argument("--parallel-load", action="store_true",
                        help="LOAD DATA: every table at once, a connection each (default: in turn)")
    parser.add_argument("--step-timeout", type=float, default=10_800,
                        help="seconds after which an import is stopped and counted as failed")
    parser.add_argument("--keep", action="store_true", help="keep the databases and TSV files")
    parser.add_argument("--json", type=Path, default=Path("scale.json"))
    parser.add_argument("--png", type=Path, default=Path("scale.png"))
    args = parser.parse_args()
    args.tree = args.tree.resolve()
    extra = dict(item.split("=", 1) for item in args.env)
    commit = checkout(args.tree)
    results: list[dict[str, Any]] = []
    try:
        with BufferPool(args.buffer_pool_mib) as pool:
            print(f"code at {commit}; innodb_buffer_pool_size {pool.size / 2**20:.0f} MiB", flush=True)
            server = server_settings()
            for lines in (int(s) for s in args.sizes.split(",")):
                results.append(measure_size(lines, args, extra))
                summary = {"commit": commit, "server": server, "buffer_pool_mib": pool.size / 2**20,
                           "importer_env": extra, "partition_days": args.partition_days,
                           "giant_group": args.giant_group, "parallel_load": args.parallel_load,
                           "memory_limit_mib": args.memory_limit_mib,
                           "results": results}
                args.json.write_text(json.dumps(summary, indent=2, default=str))  # after every size
    finally:
        if not args.keep:
            with admin() as conn, conn.cursor() as cur:
                for db in (IMPORTER, LOADER):
                    cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    if results:
        print(scale_report.table(results))
        scale_report.chart(results, args.png, scale_report.title(summary))


if __name__ == "__main__":
    main()
