"""The scale benchmark's instruments: its traffic generator, its TSV round trip through MariaDB,
and its restore of the buffer pool (benchmarks/traffic.py, benchmarks/scale.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from kmdb_async.store.schema import ddl

from .conftest import MYSQL, Database, admin_query, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scale  # noqa: E402
import traffic  # noqa: E402

SMALL = traffic.Traffic(40_000, seed=7, giant_group=1_500)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return traffic.write(SMALL, tmp_path_factory.mktemp("traffic"))


def records(folder: Path) -> list[tuple[int, dict[str, Any]]]:
    """(revision, record) of every line JSON reads (octal escapes and cut lines are not JSON)."""
    found = []
    for path in sorted(folder.iterdir(), key=lambda p: int(p.stem)):
        for line in path.read_bytes().splitlines():
            try:
                found.append((int(path.stem), json.loads(line)))
            except ValueError:
                continue
    return found


def test_same_parameters_same_bytes_and_a_cached_export_is_reused(export: Path, tmp_path: Path) -> None:
    again = traffic.write(SMALL, tmp_path)
    other = traffic.write(traffic.Traffic(40_000, seed=8, giant_group=1_500), tmp_path)
    for name in os.listdir(export / "full" / "revisions"):
        assert (again / "full" / "revisions" / name).read_bytes() == \
            (export / "full" / "revisions" / name).read_bytes()
    assert (other / "full" / "revisions" / "2.json").read_bytes() != \
        (export / "full" / "revisions" / "2.json").read_bytes()
    made = (again / "meta.json").stat().st_mtime_ns
    assert traffic.write(SMALL, tmp_path) == again
    assert (again / "meta.json").stat().st_mtime_ns == made  # not generated again


def test_the_history_is_a_prefix_and_the_cron_run_finds_its_last_revision_grown(export: Path) -> None:
    history, full = export / "history" / "revisions", export / "full" / "revisions"
    about = traffic.meta(export)
    last = about["grown_revision"]
    assert last == about["history_revisions"] < about["revisions"]  # and new revisions after it
    assert sorted(int(p.stem) for p in history.iterdir()) == list(range(1, last + 1))
    for path in history.iterdir():
        if int(path.stem) < last:
            assert path.stat().st_ino == (full / path.name).stat().st_ino  # a hard link
    grown = (full / f"{last}.json").read_bytes()
    cut = (history / f"{last}.json").read_bytes()
    assert grown.startswith(cut) and len(grown) > len(cut) and cut.endswith(b"\n")
    count = sum(len(p.read_bytes().splitlines()) for p in history.iterdir())
    assert count == SMALL.lines
    assert sum(len(p.read_bytes().splitlines()) for p in full.iterdir()) == SMALL.total


def test_lines_look_like_visitors_not_uniform_draws(export: Path) -> None:
    found = records(export / "full" / "revisions")
    lines: Counter[str] = Counter()
    aliases: dict[str, set[str]] = defaultdict(set)
    first_seen: dict[str, int] = {}
    for i, (_, r) in enumerate(found):
        lines[r["_p"]] += 1
        first_seen.setdefault(r["_p"], i)
        if "_p2" in r:
            aliases[r["_p"]].add(r["_p2"])
            aliases[r["_p2"]].add(r["_p"])
    # one giant group: anonymous identities linked to one name, as many as asked
    hub = traffic.GIANT_HUB.decode()
    assert len(aliases[hub]) == traffic.meta(export)["counts"]["giant_members"] > 1_000  # fixed seed
    # anonymous identities linked to numeric ones that appear only then (sign-ups)
    signups = [(a, n) for a, names in aliases.items() if not a.isdigit() for n in names
               if n.isdigit() and lines[n] > 1 and first_seen[n] > first_seen[a]]
    assert len(signups) > 100
    # a long tail of identities seen in one visit, and a few very active ones
    assert sum(1 for n in lines.values() if n <= 10) > 0.6 * len(lines)
    assert all(lines[h.decode()] > 0.002 * len(found) for h in traffic.HOT)
    # events with 0 to 10 properties; referrers longer than km-db's 255 characters
    sizes = Counter(len(r) - 3 for _, r in found if "_n" in r and r["_n"] != "Visited Site"
                    and r["_p"].encode() not in traffic.HOT)
    assert min(sizes) == 0 and max(sizes) == 10
    assert any(len(r.get("Referrer", "")) > 255 for _, r in found)
    assert any("_n" not in r and "_p2" not in r and len(r) > 2 for _, r in found)  # property sets


def test_times_are_out_of_order_within_a_revision_some_months_old_and_lines_repeat(
        export: Path) -> None:
    times: dict[int, list[int]] = defaultdict(list)
    for revision, r in records(export / "full" / "revisions"):
        times[revision].append(r["_t"])
    assert all(any(b < a for a, b in zip(t, t[1:], strict=False)) for t in times.values())
    # the export spans hours of receipt; a session delivered months late lies far before them
    assert any(max(t) - min(t) > 30 * 86400 for t in times.values())
    raw = (export / "full" / "revisions" / "3.json").read_bytes().splitlines()
    assert any(a == b for a, b in zip(raw, raw[1:], strict=False))  # an exact duplicate


@pytest.fixture
def bench_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the benchmark's connections (run.py's, the mariadb client's) at the test server."""
    import run

    host, port = MYSQL.removeprefix("mysql://root@").split(":")
    monkeypatch.setitem(run.MYSQL, "host", host)
    monkeypatch.setitem(run.MYSQL, "port", int(port))
    monkeypatch.setattr(scale, "MARIADB", [*scale.MARIADB[:1], f"-h{host}", f"-P{port}", *scale.MARIADB[3:]])


@pytest.mark.usefixtures("bench_server")
@pytest.mark.parametrize("parallel", [False, True])
def test_loaddata_of_the_dump_gives_the_same_rows(make_database: Any, tmp_path: Path,
                                                  parallel: bool) -> None:
    """What LOAD DATA is given is exactly what the importer wrote: tabs, newlines, backslashes,
    NULL against the text 'NULL' and '\\N', non-ASCII, long values; and, after a watermark,
    only the rows past it. A load that fails says so."""
    source, target = make_database(), make_database()
    for db in (source, target):
        admin_query(f"CREATE DATABASE `{db.name}`")
    for statement in ddl("utf8mb4_nopad_bin"):
        source.query(statement)
    values = [None, "NULL", "\\N", "a\tb\nc\\d\\\\e\r", "café 🚀", "x" * 70_000, "", "\\"]
    for i, value in enumerate(values, 1):
        source.query("INSERT INTO properties VALUES (%s, '2014-01-01 00:00:01', 1, 1, %s, 2, %s)",
                     (i, None if i % 2 else i * 10, value))
    source.query("INSERT INTO users (name) VALUES ('a\tb'), ('1'), ('é')")
    source.query("INSERT INTO `keys` (string) VALUES ('k\\\\'), ('Visited Site')")
    source.query("INSERT INTO aliases (name1, name2, t) VALUES ('1', 'a\tb', '2014-01-01')")
    watermark = scale.largest_ids(source.name)
    source.query("INSERT INTO events VALUES (1099511627776, '2015-01-01 00:00:00', 2, 3, 1)")
    scale.copy_tables(source.name, target.name)
    files = scale.dump(source.name, tmp_path / "all")
    subprocess.run(scale.loader(target.name, files, parallel), check=True)
    assert rows(target) == rows(source)
    assert target.query("SELECT value FROM properties ORDER BY id") == [(v,) for v in values]
    missing = {"events": tmp_path / "missing.tsv", "users": files["users"]}
    assert subprocess.run(scale.loader(target.name, missing, parallel), capture_output=True).returncode
    new = scale.dump(source.name, tmp_path / "new", watermark)
    assert new["events"].read_bytes().count(b"\n") == 1
    assert all(new[t].read_bytes() == b"" for t in ("properties", "users", "keys", "aliases"))


def rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    return {t: db.query(f"SELECT * FROM `{t}` ORDER BY id") for t in scale.TABLES}


def test_the_buffer_pool_is_restored_when_the_benchmark_is_terminated(private_mysql: str) -> None:
    def pool() -> int:
        with connect(f"{private_mysql}/mysql").cursor() as cur:
            cur.execute("SELECT @@innodb_buffer_pool_size")
            return int(cur.fetchone()[0])

    before, handler = pool(), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), \
            scale.BufferPool(before // 2**20 + 128, lambda: connect(f"{private_mysql}/mysql")):
        assert pool() >= before + 128 * 2**20
        signal.raise_signal(signal.SIGTERM)  # its handler runs before this call returns
    assert pool() == before
    assert signal.getsignal(signal.SIGTERM) is handler


def test_the_server_cpu_is_read_from_the_server_the_benchmark_uses(
        private_mysql: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not from whichever mariadbd a process list shows first: the tests' private servers run
    beside the shared one."""
    import run

    def served_by(url: str) -> list[bytes]:
        host, port = url.removeprefix("mysql://root@").split(":")
        monkeypatch.setitem(run.MYSQL, "host", host)
        monkeypatch.setitem(run.MYSQL, "port", int(port))
        assert run.server_cpu() is not None
        return Path(f"/proc/{run.server_pid()}/cmdline").read_bytes().split(b"\0")

    private = f"--port={private_mysql.rsplit(':', 1)[1]}".encode()
    assert private in served_by(private_mysql)
    assert private not in served_by(MYSQL)


def test_a_step_still_running_after_its_timeout_is_stopped_with_its_children(tmp_path: Path) -> None:
    import run

    marker = tmp_path / "pid"
    with pytest.raises(SystemExit) as stopped:
        run.measured(["sh", "-c", f"sleep 60 & echo $! > {marker}; wait"], timeout=1)
    assert scale.failure(str(stopped.value)) == "timed out after 1 s"
    stat = Path(f"/proc/{marker.read_text().strip()}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # ended


def test_a_failed_step_is_told_by_the_importers_error_line_else_its_exit() -> None:
    said = "['python'] failed (exit 1): progress: 0.0%\nkmdb-async: error: MariaDB at h: gone\n"
    assert scale.failure(said) == "kmdb-async: error: MariaDB at h: gone"
    assert scale.failure("['python'] failed (exit -15): progress: 0.0%\n") == "(exit -15)"
