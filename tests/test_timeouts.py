"""Nothing hangs: every network operation has a bounded time (README, "Timeouts").

A closed port and a black hole (a server that accepts and never answers) stand for each of
Redis, MariaDB and S3 under every command that talks to it: each command ends with exit 1 and
one line naming the service, in the time --retry-attempts and --network-timeout allow. Then
the MariaDB waits in detail (a long statement is not cut, a server gone silent fails the wait,
a connection the server forgot is replaced, a bulk load's streams) and an S3 body that stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from kmdb_async.cli import FILTER_COMMANDS, app
from kmdb_async.errors import TransientError
from kmdb_async.settings import DatabaseURL, Settings
from kmdb_async.sources import source_for
from kmdb_async.store import open_store

from .conftest import Database, settings_for
from .exportgen import write_export
from .faultproxy import BlackHole, S3FaultProxy, TcpProxy, free_port
from .s3_server import ACCESS_KEY, SECRET_KEY, S3Bucket
from .test_cli import cli
from .test_faults import events, finish, import_env, loading, proxied, start_import, wait_until
from .test_import import export_files, write_dir

ATTEMPTS, TIMEOUT = 2, 0.5  # --retry-attempts, --network-timeout (seconds) of the commands
# Seconds a command may take: 2 tries of at most 3 timeouts each (a wait, the watchdog's check,
# its second chance), the backoff between them (under a second) and a process start on a busy
# machine, with room to spare. Before, these commands never ended (S3: 6 tries of 60 s).
LIMIT = 30.0

COMMANDS = {"redis": ["import", "status", "flush"],
            "mariadb": ["import", "status", "flush", "stats"],
            "s3": ["import", "status"]}  # stats reads the database only; flush never reads S3


def embedded(path: Path) -> str:
    """The URL of an embedded database with the schema (status reads only what exists)."""
    url = f"sqlite:///{path}"

    async def create() -> None:
        store = open_store(Settings(database_url=url))
        await store.open()
        try:
            await store.ensure_schema()
        finally:
            await store.close()

    asyncio.run(create())
    return url


def arguments(service: str, command: str, port: int, tmp_path: Path) -> list[str]:
    """``command``'s arguments with ``service`` at ``port`` and the others working."""
    args = [command, "--retry-attempts", str(ATTEMPTS), "--network-timeout", str(TIMEOUT)]
    args += ["--yes"] if command == "flush" else []
    if service == "mariadb":
        args += ["--database-url", f"mysql://root@127.0.0.1:{port}/kmdb_unreachable"]
    else:
        args += ["--database-url", embedded(tmp_path / "kmdb.sqlite3")]
    if service == "redis":
        args += ["--redis-url", f"redis://127.0.0.1:{port}/0"]
    if service == "s3":
        args += ["s3://kmdb-unreachable", "--s3-endpoint-url", f"http://127.0.0.1:{port}"]
    elif command in ("import", "status"):
        args.append(write_dir(tmp_path / "export", export_files()))
    return args


MODES = ["closed-port", "black-hole"]
CASES = [(mode, service, command) for mode in MODES
         for service, commands in COMMANDS.items() for command in commands]


@dataclass(frozen=True)
class Outcome:
    """One command run against a dead port: how it ended, in how many seconds."""

    done: subprocess.CompletedProcess[str]
    elapsed: float
    port: int
    connections: int | None  # the black hole's accepted connections (None: closed port)


def run_case(mode: str, service: str, command: str, folder: Path) -> Outcome:
    with contextlib.ExitStack() as stack:
        hole = stack.enter_context(BlackHole()) if mode == "black-hole" else None
        port = hole.port if hole else free_port()
        args = arguments(service, command, port, folder)
        started = time.monotonic()
        done = cli(*args, cwd=folder, AWS_ACCESS_KEY_ID=ACCESS_KEY,
                   AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        return Outcome(done, time.monotonic() - started, port, hole and hole.connections)


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Outcome]:
    """The outcome of every case selected in this session, three processes at a time (they
    mostly wait: a fraction of the serial time, and each still has a core most of the time)."""
    selected = [item.callspec.params for item in request.session.items  # type: ignore[attr-defined]
                if getattr(item, "originalname", "") == MATRIX]
    with ThreadPoolExecutor(3) as pool:
        futures = {case: pool.submit(run_case, *case, tmp_path_factory.mktemp("case"))
                   for case in [(p["mode"], p["service"], p["command"]) for p in selected]}
        return {case: future.result() for case, future in futures.items()}


MATRIX = "test_an_unreachable_or_silent_service_ends_the_command_with_one_line_naming_it"


@pytest.mark.parametrize(("mode", "service", "command"), CASES)
def test_an_unreachable_or_silent_service_ends_the_command_with_one_line_naming_it(
        mode: str, service: str, command: str,
        outcomes: dict[tuple[str, str, str], Outcome]) -> None:
    outcome = outcomes[mode, service, command]
    done, port = outcome.done, outcome.port
    output = done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("kmdb-async: error:")]
    assert done.returncode == 1 and len(errors) == 1, output
    assert "Traceback" not in output
    assert outcome.elapsed < LIMIT, output
    where = {"redis": f"Redis at 127.0.0.1:{port}", "mariadb": f"MariaDB at 127.0.0.1:{port}",
             "s3": f"s3://kmdb-unreachable/revisions/ at http://127.0.0.1:{port}"}[service]
    assert where in errors[0]
    if mode == "black-hole":
        assert "timed out" in errors[0]
        assert outcome.connections == ATTEMPTS  # each try, and only each, waited its bound


# -- MariaDB: how a wait for the server is watched ----------------------------------------------


async def test_a_statement_longer_than_the_timeout_is_not_cut(database: Database) -> None:
    store = open_store(settings_for(database, network_timeout=0.5))
    await store.open()
    try:  # the server says it still runs the statement: the wait goes on
        assert await store.execute("SELECT SLEEP(2)") == [(0,)]
    finally:
        await store.close()


async def test_a_server_gone_silent_fails_the_statement_within_the_bound(database: Database) -> None:
    with TcpProxy(DatabaseURL.parse(database.url).port) as proxy:
        store = open_store(settings_for(database, network_timeout=0.5, retry_attempts=2,
                                        database_url=proxied(database, proxy)))
        await store.open()
        try:
            proxy.freeze()  # a hung server: connections stay open, no byte moves
            started = time.monotonic()
            with pytest.raises(TransientError, match=f"MariaDB at 127.0.0.1:{proxy.port}: timed out"):
                await store.execute("SELECT 1")
            assert time.monotonic() - started < LIMIT
        finally:
            await store.close()


async def test_a_connection_the_server_no_longer_answers_is_replaced(database: Database) -> None:
    with TcpProxy(DatabaseURL.parse(database.url).port) as proxy:
        store = open_store(settings_for(database, network_timeout=0.5,
                                        database_url=proxied(database, proxy)))
        await store.open()
        try:
            before = proxy.connections
            proxy.freeze(new_connections=False)  # the pooled connection is dead, the server fine
            assert await store.execute("SELECT 1") == [(1,)]
            # The watchdog's checks, then the retry's new connection.
            assert proxy.connections >= before + 3
        finally:
            await store.close()


def test_a_bulk_load_whose_server_goes_silent_ends_with_exit_1(
        database: Database, tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_export(root, 40000, revisions=4, seed=29)
    with TcpProxy(DatabaseURL.parse(database.url).port) as proxy:
        env = import_env(proxied(database, proxy), KMDB_BULK_LOAD="true",
                         KMDB_RETRY_ATTEMPTS=str(ATTEMPTS), KMDB_NETWORK_TIMEOUT="1")
        process = start_import(root, env, tmp_path)
        # Rows are streaming: a LOAD DATA statement runs and a packet of rows went through.
        assert wait_until(lambda: bool(loading(database)) and proxy.sent_up > 1 << 20, process)
        proxy.freeze()
        frozen = time.monotonic()
        code, output = finish(process)
        assert code == 1 and time.monotonic() - frozen < LIMIT, output
        assert f"kmdb-async: error: MariaDB at 127.0.0.1:{proxy.port}: timed out" in output
        assert "Traceback" not in output
    assert events(database) == 0  # the unfinished load was rolled back


# -- S3: a body that stops mid-object -----------------------------------------------------------


async def test_an_s3_body_that_stops_mid_object_is_resumed_after_the_timeout(
        s3_bucket: S3Bucket) -> None:
    data = b"".join(b'{"_p":"u%d","_t":%d,"_n":"e"}\n' % (i, i) for i in range(20000))
    s3_bucket.put("revisions/1.json", data)
    # The first GET of the object sends half of it, then nothing, keeping the connection open.
    with S3FaultProxy(s3_bucket.endpoint_url, lambda key, n: "stall" if key and n == 0 else None
                      ) as proxy:
        source = source_for(Settings(
            source=s3_bucket.url, s3_endpoint_url=proxy.url, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, network_timeout=TIMEOUT, retry_attempts=ATTEMPTS,
            retry_max_wait=0.2))
        try:
            [revision] = await source.revisions()
            started = time.monotonic()
            received = b"".join([chunk async for chunk in source.stream(revision, 0)])
            elapsed = time.monotonic() - started
        finally:
            await source.aclose()
    assert received == data
    assert proxy.injected["stall"] == 1 and proxy.gets["revisions/1.json"] == 2
    assert elapsed < LIMIT


def test_every_command_that_talks_to_a_server_takes_the_timeout_options() -> None:
    commands: dict[str, Any] = dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for name in FILTER_COMMANDS:
        verbs = commands.pop(name).commands.items()
        commands.update({f"{name} {verb}": command for verb, command in verbs})
    assert len(commands) == 5 + 3 * len(FILTER_COMMANDS)
    for name, command in commands.items():
        options = {option for param in command.params for option in param.opts}
        assert {"--network-timeout", "--retry-attempts"} <= options, name
