"""SPEC section 5 under faults: Redis lost or restarted, database connections killed or the
server unreachable, S3 misbehaving, hostile strings, secrets. After each, the tables hold
exactly the rows of one clean import (tests/reference.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from kmdb_async.pipeline import run_import
from kmdb_async.settings import DatabaseURL

from . import reference
from .conftest import MYSQL, Database, admin_query, connect, settings_for
from .exportgen import write_export
from .faultproxy import RedisServer, S3FaultProxy, TcpProxy
from .s3_server import S3Bucket

TIMEOUT = 120  # seconds: bound of one import process


def upload(root: Path, bucket: S3Bucket) -> None:
    for path in sorted((root / "revisions").iterdir()):
        bucket.put(f"revisions/{path.name}", path.read_bytes())


def total_lines(root: Path) -> int:
    """Non-blank lines of the export (records and rejects)."""
    return sum(len(line.strip()) > 0 for path in (root / "revisions").iterdir()
               for line in path.read_bytes().split(b"\n"))


# -- S3 -----------------------------------------------------------------------------------------

# Per object: the n-th GET meets this fault (then everything passes). No two plain failures
# in a row, so 3 attempts suffice; each cut resumes with a Range request.
S3_PLAN = ["500", "cut", "503", "slowdown", "slow+cut", "cut"]


def s3_plan(key: str, n: int) -> str | None:
    if key == "":  # listing
        return "slowdown" if n == 0 else None
    return S3_PLAN[n] if n < len(S3_PLAN) else None


async def test_s3_faults_through_a_whole_import_lose_and_double_nothing(
        database: Database, tmp_path: Path, s3_bucket: S3Bucket) -> None:
    root = tmp_path / "export"
    write_export(root, 6000, revisions=3, seed=21)
    upload(root, s3_bucket)
    with S3FaultProxy(s3_bucket.endpoint_url, s3_plan, slow_seconds=1.0) as proxy:
        settings = settings_for(database, s3_bucket.url, s3_endpoint_url=proxy.url,
                                aws_access_key_id="test-key-id", aws_secret_access_key="test-secret",
                                batch_size=50)
        summary = await run_import(settings)
    assert proxy.injected == {"500": 3, "503": 3, "slowdown": 4, "slow": 3, "cut": 9}
    # Every cut object was asked for again from exactly the first byte it had not received.
    assert len(proxy.resumes) == 9 and all(cut == start for cut, start in proxy.resumes)
    assert summary.lines == total_lines(root)
    assert summary.bytes == sum(p.stat().st_size for p in (root / "revisions").iterdir())
    assert database.dump() == reference.expected(root)


# -- helpers for imports in a real process ----------------------------------------------------


def import_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI import: ours only (no KMDB/AWS settings of the caller)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KMDB_", "AWS_", "DATABASE_URL"))}
    # Row inserts unless a test asks for the first import's bulk load: these faults strike
    # between committed batches.
    env.update({"DATABASE_URL": database_url, "KMDB_BATCH_SIZE": "20", "KMDB_WRITERS": "3",
                "KMDB_FILES_IN_FLIGHT": "3", "KMDB_BULK_LOAD": "false", **extra})
    return env


def start_import(root: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kmdb_async", "import", str(root)], env=env,
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for the import; its exit code and everything it printed."""
    out, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, out + err


def rerun(root: Path, env: dict[str, str], cwd: Path) -> str:
    """Run the import to completion; it must succeed. Returns its output.

    At the default batch size: the small batches give the run that meets the fault many
    commits to strike between; this one only finishes (20-line commits made it slow)."""
    env = {k: v for k, v in env.items() if k != "KMDB_BATCH_SIZE"}
    code, output = finish(start_import(root, env, cwd))
    assert code == 0, output
    return output


def wait_until(condition: Any, process: subprocess.Popen[str], timeout: float = 60.0) -> bool:
    """Poll ``condition()`` until true (True) or the process ended / time ran out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.01)
    return False


def events(database: Database) -> int:
    try:
        count: int = database.query("SELECT COUNT(*) FROM events")[0][0]
        return count
    except pymysql.Error:  # the schema may not exist yet
        database.close()
        return 0


def sizes(root: Path) -> dict[str, str]:
    return {path.stem: str(path.stat().st_size) for path in (root / "revisions").iterdir()}


# -- Redis --------------------------------------------------------------------------------------

CURSOR = "kmdb-faults:cursor"


def redis_cursor(redis: RedisServer) -> dict[str, str]:
    flat = redis.cli("HGETALL", CURSOR).split()
    return dict(zip(flat[::2], flat[1::2], strict=True))


def test_redis_flushall_mid_run_and_between_runs_costs_reading_only(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 12000, revisions=5, seed=23)
    with RedisServer(tmp_path) as redis:
        env = import_env(database.url, KMDB_REDIS_URL=redis.url, KMDB_REDIS_PREFIX="kmdb-faults")
        process = start_import(root, env, tmp_path)
        assert wait_until(lambda: events(database) > 2000 and redis_cursor(redis), process)
        assert redis.cli("FLUSHALL") == "OK"  # mid-run
        code, output = finish(process)
        # The run either carries on or fails cleanly; it never crashes.
        assert code == 0 or "kmdb-async: error:" in output, output
        assert "Traceback" not in output

        assert redis.cli("FLUSHALL") == "OK"  # between runs
        output = rerun(root, env, tmp_path)
        assert f"imported 5 revisions: {total_lines(root)} lines" in output  # read again
        assert redis_cursor(redis) == sizes(root)
        assert database.dump() == reference.expected(root)


def test_redis_restarted_mid_run_the_import_retries_and_carries_on(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 12000, revisions=5, seed=24)
    with RedisServer(tmp_path) as redis:
        env = import_env(database.url, KMDB_REDIS_URL=redis.url, KMDB_REDIS_PREFIX="kmdb-faults",
                         KMDB_RETRY_ATTEMPTS="12", KMDB_WRITERS="2")
        process = start_import(root, env, tmp_path)
        assert wait_until(lambda: events(database) > 1500, process)
        redis.restart(down_for=1.0)  # the cursor's saves fail for a while
        code, output = finish(process)
        assert code == 0, output
        # The new server got the progress saved after the restart: the importer came back.
        assert redis_cursor(redis) and set(redis_cursor(redis).items()) <= set(sizes(root).items())
    assert database.dump() == reference.expected(root)


# -- MariaDB ------------------------------------------------------------------------------------


def kill_open_batches(database: Database, process: subprocess.Popen[str], wanted: int) -> int:
    """KILL CONNECTION of import connections while they insert a batch's rows (in its
    transaction). PROCESSLIST, not INNODB_TRX: the latter is a snapshot refreshed every 0.1 s."""
    admin = connect(f"{MYSQL}/mysql")
    killed: set[int] = set()
    try:
        with admin.cursor() as cur:
            def open_batch() -> bool:
                cur.execute(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND "
                    "(INFO LIKE 'INSERT INTO `events`%%' OR INFO LIKE 'INSERT INTO `properties`%%')",
                    (database.name,))
                for (thread,) in cur.fetchall():
                    if thread not in killed:
                        with _ignore_gone():
                            cur.execute(f"KILL CONNECTION {int(thread)}")
                            killed.add(thread)
                            return True
                return False

            while len(killed) < wanted and wait_until(open_batch, process, timeout=30):
                time.sleep(0.2)
    finally:
        admin.close()
    return len(killed)


class _ignore_gone:
    """The connection may have finished its transaction (or gone) between SELECT and KILL."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is not None and issubclass(kind, pymysql.err.InternalError | pymysql.err.OperationalError)


def test_killed_connection_mid_batch_is_retried_on_a_fresh_one(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 12000, revisions=5, seed=25)
    process = start_import(root, import_env(database.url), tmp_path)
    kills = kill_open_batches(database, process, wanted=3)
    code, output = finish(process)
    assert code == 0, output
    assert kills == 3
    assert database.dump() == reference.expected(root)


def loading(database: Database, table: str = "") -> list[int]:
    """Connections of the import running a first import's LOAD DATA statement (into ``table``)."""
    return [thread for (thread,) in admin_query(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND "
        "INFO LIKE CONCAT('LOAD DATA LOCAL INFILE%%INTO TABLE `', %s, '%%')",
        (database.name, table))]


@pytest.mark.parametrize("table", ["events", "users"])
def test_killed_bulk_load_connection_is_rolled_back_and_the_import_redone_with_inserts(
        database: Database, tmp_path: Path, table: str) -> None:
    """Killed, the users statement voids the ids streamed into it: no row may commit with one."""
    root = tmp_path / "export"
    write_export(root, 40000, revisions=4, seed=28)
    # 200-line batches: the load still streams for seconds, and the import done again with
    # row inserts commits 200 times, not 2,000 (which made this the slowest test of all).
    env = import_env(database.url, KMDB_BULK_LOAD="true", KMDB_BATCH_SIZE="200")
    process = start_import(root, env, tmp_path)
    assert wait_until(lambda: bool(loading(database, table)), process)
    time.sleep(0.3)  # rows are streaming into the statement
    admin_query(f"KILL CONNECTION {int(loading(database, table)[0])}")
    code, output = finish(process)
    assert code == 0, output
    assert "bulk load stopped" in output and "importing again with row inserts" in output
    assert "Traceback" not in output
    assert database.dump() == reference.expected(root)


def test_mariadb_gone_during_a_bulk_load_exits_cleanly_then_the_rerun_completes(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 40000, revisions=4, seed=29)
    with TcpProxy(DatabaseURL.parse(database.url).port) as proxy:
        env = import_env(proxied(database, proxy), KMDB_BULK_LOAD="true", KMDB_RETRY_ATTEMPTS="3")
        process = start_import(root, env, tmp_path)
        assert wait_until(lambda: bool(loading(database)), process)
        proxy.pause()
        gone = time.monotonic()
        code, output = finish(process)
        assert code == 1 and time.monotonic() - gone < 60, output
        assert f"kmdb-async: error: MariaDB at 127.0.0.1:{proxy.port}" in output
        assert "Traceback" not in output
        assert events(database) == 0  # the unfinished load was rolled back
        proxy.resume()
        output = rerun(root, env, tmp_path)
    assert database.dump() == reference.expected(root)


def proxied(database: Database, proxy: TcpProxy) -> str:
    url = DatabaseURL.parse(database.url)
    return f"mysql://{url.user}@127.0.0.1:{proxy.port}/{url.database}"


def test_mariadb_unreachable_for_a_while_the_import_waits_and_carries_on(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 12000, revisions=5, seed=26)
    with TcpProxy(DatabaseURL.parse(database.url).port) as proxy:
        env = import_env(proxied(database, proxy), KMDB_RETRY_ATTEMPTS="12")
        process = start_import(root, env, tmp_path)
        assert wait_until(lambda: events(database) > 1500, process)
        proxy.pause()
        time.sleep(1.0)
        before = proxy.connections
        proxy.resume()
        code, output = finish(process)
        assert code == 0, output
        assert proxy.connections > before  # reconnected through the proxy after the outage
    assert database.dump() == reference.expected(root)


def test_mariadb_gone_for_good_exits_cleanly_naming_it_then_the_rerun_completes(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 12000, revisions=5, seed=27)
    with TcpProxy(DatabaseURL.parse(database.url).port) as proxy:
        env = import_env(proxied(database, proxy), KMDB_RETRY_ATTEMPTS="3")
        process = start_import(root, env, tmp_path)
        assert wait_until(lambda: events(database) > 1500, process)
        proxy.pause()
        gone = time.monotonic()
        code, output = finish(process)
        assert code == 1 and time.monotonic() - gone < 30, output
        assert f"kmdb-async: error: MariaDB at 127.0.0.1:{proxy.port}" in output
        assert "Traceback" not in output
        proxy.resume()
        rerun(root, env, tmp_path)
    assert database.dump() == reference.expected(root)


# -- hostile input ------------------------------------------------------------------------------

HOSTILE = ["'; DROP TABLE events; --", 'quote " and \' both', "back\\slash\\\\", "\\303\\251 kept",
           "emoji 😀🎉", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 4-byte 𠜎", "trailing space ", "Trailing Space ", "%s %(x)s ?",
           "`keys`", "\t tab", "NUL\x00inside", "x" * 254]  # 254: with "!" an identity of 255


@pytest.mark.parametrize("bulk_load", [True, False], ids=["load-data", "inserts"])
def test_hostile_identities_keys_and_values_come_back_exactly(
        database: Database, tmp_path: Path, bulk_load: bool) -> None:
    import json

    lines = []
    for i, text in enumerate(HOSTILE):
        lines.append({"_n": text, "_p": text, "_t": 1_400_000_000 + i, text: text, "v": text})
        lines.append({"_p": f"{text}!", "_t": 1_400_000_000 + i, "k" + text[:200]: text * 100})
    lines.append({"_p": HOSTILE[0], "_p2": HOSTILE[1], "_t": 1_400_000_100})  # re-points both
    lines.append({"_p": HOSTILE[4], "_p2": "12", "_t": 1_400_000_101})
    folder = tmp_path / "export" / "revisions"
    folder.mkdir(parents=True)
    (folder / "1.json").write_text("".join(json.dumps(line, ensure_ascii=i % 2 == 0) + "\n"
                                           for i, line in enumerate(lines)), encoding="utf-8")
    import asyncio

    summary = asyncio.run(run_import(settings_for(database, str(tmp_path / "export"),
                                                  bulk_load=bulk_load)))
    assert summary.rejects == 0
    stored_users = {name for (name,) in database.query("SELECT name FROM users")}
    assert stored_users == set(HOSTILE) | {f"{text}!" for text in HOSTILE} | {"12"}
    stored_keys = {s for (s,) in database.query("SELECT string FROM `keys`")}
    assert set(HOSTILE) <= stored_keys and {"k" + text[:200] for text in HOSTILE} <= stored_keys
    values = {v for (v,) in database.query("SELECT value FROM properties")}
    assert values == set(HOSTILE) | {text * 100 for text in HOSTILE}
    assert database.query("SELECT name1, name2 FROM aliases ORDER BY name1") == [
        ("'; DROP TABLE events; --", 'quote " and \' both'), ("12", "emoji 😀🎉")]
    assert database.dump() == reference.expected(tmp_path / "export")


# -- secrets ------------------------------------------------------------------------------------


@pytest.fixture
def password_url(private_database: Database) -> Any:
    """The test database's URL for a MariaDB user with SECRET_PASSWORD (dropped afterwards),
    on the session's private server: creating a user changes the server, not a database."""
    from .test_cli import SECRET_PASSWORD

    database = private_database
    user = f"kmdb_{database.name[-12:]}"
    admin = connect(f"{database.server}/mysql")
    with admin.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (SECRET_PASSWORD,))
        cur.execute(f"GRANT ALL PRIVILEGES ON `{database.name}`.* TO '{user}'@'%'")
    try:
        yield database.url.replace("root@", f"{user}:{SECRET_PASSWORD}@")
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


def test_no_output_or_log_at_any_verbosity_shows_a_secret(
        private_database: Database, password_url: str, tmp_path: Path, s3_bucket: S3Bucket,
        caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import logging
    from dataclasses import replace

    from .test_cli import SECRET_KEY, SECRET_PASSWORD

    database = private_database  # where the user with a password is

    root = tmp_path / "export"
    write_export(root, 1500, revisions=2, seed=28)
    upload(root, s3_bucket)
    secrets = {"AWS_ACCESS_KEY_ID": SECRET_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_PASSWORD}
    outputs = []
    with S3FaultProxy(s3_bucket.endpoint_url, s3_plan, slow_seconds=0.1) as proxy, \
            TcpProxy(DatabaseURL.parse(database.url).port) as mariadb:
        bad = password_url.replace(SECRET_PASSWORD, SECRET_PASSWORD[::-1])
        via_proxy = password_url.replace(f":{DatabaseURL.parse(database.url).port}/",
                                         f":{mariadb.port}/")
        for debug in ({}, {"KMDB_DEBUG": "1"}):
            env = import_env(password_url, AWS_ENDPOINT_URL=proxy.url, KMDB_RETRY_ATTEMPTS="3",
                             **secrets, **debug)
            proxy.gets.clear()  # the whole fault plan again
            code, output = finish(start_import(s3_bucket.url, env, tmp_path))  # type: ignore[arg-type]
            assert code == 0, output
            outputs.append(output)
            code, output = finish(start_import(s3_bucket.url, {**env, "DATABASE_URL": bad},
                                               tmp_path))  # type: ignore[arg-type]
            assert code == 1 and "access denied" in output, output
            outputs.append(output)
            database.query("DELETE FROM kmdb_revisions")  # read it all again, and lose MariaDB
            process = start_import(s3_bucket.url, {**env, "DATABASE_URL": via_proxy}, tmp_path)  # type: ignore[arg-type]
            assert wait_until(lambda: mariadb.connections > 2, process)
            mariadb.pause()
            code, output = finish(process)
            mariadb.resume()
            assert code == 1 and "kmdb-async: error: MariaDB" in output, output
            outputs.append(output)
        # In process, every logger at DEBUG (the library's retry warnings included).
        caplog.set_level(logging.DEBUG)
        settings = replace(settings_for(database, s3_bucket.url), database_url=password_url,
                           s3_endpoint_url=proxy.url, aws_access_key_id=SECRET_KEY,
                           aws_secret_access_key=SECRET_PASSWORD)
        database.query("DELETE FROM kmdb_revisions")
        proxy.gets.clear()
        asyncio.run(run_import(settings))
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                       if r.name.startswith("kmdb_async"))
    assert "retry" in logged and "retry" in outputs[0] and "retry" in outputs[3]  # faults shown
    for text in [*outputs, logged]:
        assert SECRET_PASSWORD not in text and SECRET_KEY not in text
        assert "Traceback" not in text
