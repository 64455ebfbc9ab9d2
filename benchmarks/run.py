"""Import throughput and memory, side by side with named baselines, in one run.

    python benchmarks/run.py --lines 1000000 [--skip-s3] [--json out.json] [--png out.png]

Measures on the same MariaDB, same schema (all of km-db's indexes), same generated export:
  (a) kmdb-async import from a local directory
  (b) kmdb-async import from moto's S3 server (in this process, loopback)
  (c) LOAD DATA LOCAL INFILE of exactly the rows (a) produced, into fresh tables of the same
      schema, one statement per table with unique_checks=0, foreign_key_checks=0: the server's
      own ingest limit
  (d) a naive importer: json.loads per line, one connection, executemany by 1000
  (e) decode only: read and decode the files, no database
Each runs in a subprocess; peak RSS is that subprocess's. Prints a table, writes JSON and, when
matplotlib is installed, a PNG chart. Server settings are recorded: they decide the result.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.exportgen import write_export  # noqa: E402

MYSQL = dict(host="127.0.0.1", port=3306, user="root", password="", charset="utf8mb4")
TABLES = ("events", "properties", "users", "keys", "aliases")


def admin(db: str | None = None, **kw: Any) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(**MYSQL, database=db, autocommit=True, **kw)  # type: ignore[arg-type]


def fresh_db(name: str) -> str:
    with admin() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin")
    return name


def measured(command: list[str], env: dict[str, str] | None = None,
             timeout: float | None = None) -> tuple[float, float, float]:
    """Run ``command``; returns (wall seconds, peak RSS in MB, CPU seconds) of that process.
    Exits (SystemExit) when it fails, or is stopped after ``timeout`` seconds.

    The peak comes from GNU time in between: a child forked straight from this (large) process
    would count this process's pages in its own high-water mark.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as usage:
        t0 = time.perf_counter()
        # its own process group: interrupted, the benchmark stops the command too, not only time
        with subprocess.Popen(["/usr/bin/time", "-f", "%M %U %S", "-o", usage.name, *command],
                              env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True) as child:
            try:
                _, stderr = child.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_group(child)
                raise SystemExit(f"{command[:4]} failed: timed out after {timeout:.0f} s") from None
            except BaseException:
                stop_group(child)
                raise
        wall = time.perf_counter() - t0
        if child.returncode != 0:
            raise SystemExit(f"{command[:4]} failed (exit {child.returncode}): {stderr.decode()}")
        rss, user, system = usage.read().split()[-3:]
        return wall, int(rss) / 1024, float(user) + float(system)


def stop_group(child: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM ``child``'s process group (an import saves its progress and ends), SIGKILL it
    if any of it is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace
        try:
            os.killpg(child.pid, sig)
            while time.monotonic() < deadline:
                child.poll()  # reaps GNU time, whose exit does not wait for the command's
                os.killpg(child.pid, 0)
                time.sleep(0.2)
        except ProcessLookupError:
            return


def server_pid() -> int | None:
    """The pid of the MariaDB server at ``MYSQL``'s address, from its pid file (None when it
    is not on this machine). Other mariadbd processes may run beside it (the tests' private
    servers): a process name does not tell which one serves the benchmark."""
    try:
        with admin() as conn, conn.cursor() as cur:
            cur.execute("SELECT @@pid_file, @@datadir")
            pid_file, datadir = cur.fetchone()
        return int((Path(datadir) / pid_file).read_text().split()[0])  # an absolute pid_file wins
    except (OSError, ValueError, IndexError, pymysql.MySQLError):
        return None


def server_cpu() -> float | None:
    """CPU seconds the local MariaDB server has used so far (None when it is not local)."""
    pid = server_pid()
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def row_count(db: str) -> dict[str, int]:
    with admin(db) as conn, conn.cursor() as cur:
        counts = {}
        for table in TABLES:
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            counts[table] = cur.fetchone()[0]
        return counts


def kmdb_import(source: str, db: str, extra: dict[str, str]) -> tuple[float, float, float]:
    env = {"DATABASE_URL": f"mysql://root@127.0.0.1:3306/{db}", **extra}
    return measured([sys.executable, "-m", "kmdb_async", "import", source,
                     "--rejects", os.devnull], env)


def load_data(source_db: str, target_db: str, folder: Path) -> tuple[float, float | None]:
    """(c): dump (a)'s rows to TSV, then time one LOAD DATA LOCAL per table into copies;
    returns the wall seconds and the server's CPU seconds of the loads."""
    with admin(target_db, local_infile=True) as conn, conn.cursor() as cur:
        for table in TABLES:
            cur.execute(f"CREATE TABLE `{table}` LIKE `{source_db}`.`{table}`")
        files = {}
        for table in TABLES:
            path = folder / f"{table}.tsv"
            cur.execute(f"SELECT * FROM `{source_db}`.`{table}`")
            with path.open("w", encoding="utf-8") as out:
                for row in cur.fetchall():
                    out.write("\t".join(_tsv(v) for v in row) + "\n")
            files[table] = path
        cur.execute("SET unique_checks = 0, foreign_key_checks = 0, sql_log_bin = 0")
        t0, cpu0 = time.perf_counter(), server_cpu()
        for table, path in files.items():
            cur.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4 "
                        "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'",
                        (str(path),))
        wall, cpu1 = time.perf_counter() - t0, server_cpu()
        return wall, None if cpu0 is None or cpu1 is None else cpu1 - cpu0


def _tsv(value: Any) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def server_settings() -> dict[str, Any]:
    with admin() as conn, conn.cursor() as cur:
        cur.execute("SELECT VERSION(), @@innodb_buffer_pool_size, @@innodb_log_file_size, "
                    "@@innodb_flush_log_at_trx_commit, @@max_allowed_packet")
        names = ("version", "innodb_buffer_pool_size", "innodb_log_file_size",
                 "innodb_flush_log_at_trx_commit", "max_allowed_packet")
        return dict(zip(names, cur.fetchone(), strict=True))


def s3_source(export: Path) -> tuple[Any, dict[str, str], str]:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request in the table

    from tests.services import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                      aws_secret_access_key="bench", region_name="us-east-1")
    s3.create_bucket(Bucket="bench")
    for path in sorted((export / "revisions").iterdir()):
        s3.upload_file(str(path), "bench", f"revisions/{path.name}")
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    return server, env, "s3://bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--revisions", type=int, default=8)
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("benchmark.json"))
    parser.add_argument("--png", type=Path, default=Path("benchmark.png"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kmdb-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # the export and (c)'s TSV files
    export = work / "export"
    write_export(export, args.lines, revisions=args.revisions, seed=42)
    megabytes = sum(p.stat().st_size for p in (export / "revisions").iterdir()) / 1e6
    results: dict[str, dict[str, float]] = {}

    def record(name: str, wall: float, rss: float, rows: int, cpu: float,
               server: float | None) -> None:
        """One row of the table; ``cpu``: the client's CPU seconds, ``server``: the server's
        during the run (both cores: their sum against 2 x wall tells how busy the box was)."""
        results[name] = {"wall_s": wall, "lines_per_s": args.lines / wall, "rows_per_s": rows / wall,
                         "mb_per_s": megabytes / wall, "peak_rss_mb": rss, "client_cpu_s": cpu,
                         "server_cpu_s": server}
        print(f"  {name}: {wall:.1f} s", flush=True)

    def server_since(start: float | None) -> float | None:
        now = server_cpu()
        return None if start is None or now is None else now - start

    wall, rss, cpu = measured([sys.executable, str(ROOT / "benchmarks" / "decode_only.py"),
                               str(export)])
    record("(e) decode only", wall, rss, 0, cpu, None)

    before = server_cpu()
    wall, rss, cpu = kmdb_import(str(export), fresh_db("kmdb_bench_a"), {})
    served = server_since(before)
    rows = sum(row_count("kmdb_bench_a").values())
    record("(a) kmdb-async, directory", wall, rss, rows, cpu, served)

    if not args.skip_s3:
        server, env, url = s3_source(export)
        try:
            before = server_cpu()
            wall, rss, cpu = kmdb_import(url, fresh_db("kmdb_bench_b"), env)
            served = server_since(before)
            record("(b) kmdb-async, S3 (moto)", wall, rss, sum(row_count("kmdb_bench_b").values()),
                   cpu, served)
        finally:
            server.stop()

    target = fresh_db("kmdb_bench_c")
    wall, served = load_data("kmdb_bench_a", target, work)
    record("(c) LOAD DATA LOCAL (server limit)", wall, 0.0, rows, 0.0, served)

    if not args.skip_naive:
        before = server_cpu()
        wall, rss, cpu = measured([sys.executable, str(ROOT / "benchmarks" / "naive.py"),
                                   str(export), fresh_db("kmdb_bench_d")])
        served = server_since(before)
        record("(d) naive importer", wall, rss, sum(row_count("kmdb_bench_d").values()), cpu, served)

    limit = results["(c) LOAD DATA LOCAL (server limit)"]["wall_s"]
    naive = results.get("(d) naive importer", {}).get("wall_s")
    print(f"\n{args.lines:,} lines, {megabytes:.1f} MB, {rows:,} rows; server: {server_settings()}\n")
    print(f"{'':38} {'wall s':>8} {'lines/s':>9} {'rows/s':>9} {'MB/s':>6} {'RSS MB':>7} "
          f"{'x (c)':>6} {'(d)/x':>6} {'cpu s':>6} {'srv s':>6}")
    for name, r in results.items():
        vs_naive = f"{naive / r['wall_s']:6.2f}" if naive else "     -"
        served = f"{r['server_cpu_s']:6.1f}" if r["server_cpu_s"] is not None else "     -"
        print(f"{name:38} {r['wall_s']:8.1f} {r['lines_per_s']:9,.0f} {r['rows_per_s']:9,.0f} "
              f"{r['mb_per_s']:6.2f} {r['peak_rss_mb']:7.0f} {r['wall_s'] / limit:6.2f} {vs_naive} "
              f"{r['client_cpu_s']:6.1f} {served}")
    print("cpu s: the client process's CPU seconds; srv s: the local server's during the run")
    args.json.write_text(json.dumps({"lines": args.lines, "megabytes": megabytes, "rows": rows,
                                     "server": server_settings(), "results": results}, indent=2,
                                    default=str))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = list(results)
        ax.barh(names, [results[n]["lines_per_s"] for n in names])
        ax.set_xlabel("lines/s")
        ax.set_title(f"kmdb-async, {args.lines:,} lines")
        fig.tight_layout()
        fig.savefig(args.png)
    except ImportError:
        print("(matplotlib not installed: no chart)")


if __name__ == "__main__":
    main()
