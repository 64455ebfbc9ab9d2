"""The command line: parse options (each also an environment variable), run one async call.

Exit codes: 0 success (rejected lines included), 1 the run failed (the one-line cause is
printed), 2 bad usage (an unknown option, or a value wrong in itself: see usage.py),
130/143 stopped by SIGINT/SIGTERM after saving progress.

Help texts are plain text (no rich markup: ``s3://bucket[/prefix]`` is not a tag); each
option's help says its default, with ``[default: ...]`` written out where it is not a value.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from . import runner
from .errors import KmdbError, out_of_memory
from .pipeline import Interrupted, run_import
from .report import nothing_found
from .settings import (
    DEFAULT_NETWORK_TIMEOUT,
    DEFAULT_PROGRESS_INTERVAL,
    DEFAULT_RETRY_ATTEMPTS,
    InvalidSetting,
    Settings,
    load_dotenv,
    scrub,
)
from .state import open_cursor
from .stats import read_stats
from .status import read_status
from .status import render as render_status
from .store import open_store
from .store.schema import BLACKLISTED_PROPERTIES, IGNORED_USERS, MAX_NAME, WHITELISTED_EVENTS
from .usage import bad_usage, checked, partition_dates, valid_date

T = TypeVar("T")
EXIT_FAILED = 1
OUT_OF_MEMORY = "out of memory; raise the process's memory limit and run the command again"
IMPORT_OUT_OF_MEMORY = (  # one line: what happened, what is kept, what to do
    "the import ran out of memory; what it committed is kept and the next run goes on from "
    "there. Run it with a higher memory limit, or lower --queue-depth, --batch-size, "
    "--files-in-flight, --writers, --user-cache-size or --alias-cache-size")

MARKUP = None  # help texts are plain: "[/prefix]" or "[default: x]" are text, not rich tags
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=MARKUP,
    help="Import KissMetrics raw event exports into MariaDB/MySQL, fast, in one process.",
)

DatabaseOpt = Annotated[str | None, typer.Option(
    "--database-url", envvar="DATABASE_URL", show_default=False,
    help="mysql://user:pass@host:port/db (km-db's mysql2:// accepted), or sqlite:///FILE for "
         "the embedded database. [default: sqlite:///kmdb.sqlite3]")]
RedisOpt = Annotated[str | None, typer.Option(
    "--redis-url", envvar="KMDB_REDIS_URL", show_default=False,
    help="redis://[:pass@]host:port/db to keep the revision cursor in. [default: none: the "
         "database keeps it]")]
PrefixOpt = Annotated[str | None, typer.Option(
    "--redis-prefix", envvar="KMDB_REDIS_PREFIX", show_default=False,
    help="Prefix of this database's Redis keys. [default: kmdb:HOST:PORT:DB, or "
         "kmdb:sqlite:PATH]")]
SourceArg = Annotated[str | None, typer.Argument(
    metavar="SOURCE", show_default=False,
    help="Export root: a directory or s3://bucket[/prefix] (same as --source).")]
SourceOpt = Annotated[str | None, typer.Option(
    "--source", envvar="KMDB_SOURCE", show_default=False,
    help="Export root: a directory or s3://bucket[/prefix]. [default: s3://$AWS_BUCKET]")]
EndpointOpt = Annotated[str | None, typer.Option(
    "--s3-endpoint-url", envvar="AWS_ENDPOINT_URL", show_default=False,
    help="Endpoint of an S3-compatible store. [default: AWS]")]
AccessKeyOpt = Annotated[str | None, typer.Option(
    envvar="AWS_ACCESS_KEY_ID", show_default=False,
    help="S3 access key. [default: botocore's chain: profile, instance role]")]
SecretKeyOpt = Annotated[str | None, typer.Option(
    envvar="AWS_SECRET_ACCESS_KEY", show_default=False,
    help="S3 secret key. [default: botocore's chain: profile, instance role]")]
RegionOpt = Annotated[str, typer.Option(envvar="AWS_REGION", help="S3 region.")]
MinRevisionOpt = Annotated[int, typer.Option(
    envvar="KMDB_MIN_REVISION", min=1, help="First revision to import.")]
LookaheadOpt = Annotated[int, typer.Option(
    envvar="KMDB_REVISION_LOOKAHEAD", min=1,
    help="Revisions probed past the last found one when the bucket cannot be listed.")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", show_default=False, help="Print one JSON object. [default: text]")]
RetryOpt = Annotated[int, typer.Option(
    envvar="KMDB_RETRY_ATTEMPTS", min=1,
    help="Tries of one failing S3/database/Redis operation before the run stops.")]
TimeoutOpt = Annotated[float, typer.Option(
    envvar="KMDB_NETWORK_TIMEOUT", min=0.1,
    help="Seconds a server may stay silent when an answer is due (connecting, a Redis "
         "command, an S3 read) before the try fails; a MariaDB statement the server still "
         "runs is never cut.")]


def _scrub(message: str, settings: Settings | None) -> str:
    return scrub(message, settings.secrets()) if settings else message


def _run(settings: Settings, work: Callable[[], Coroutine[Any, Any, T]],
         out_of_memory_message: str = OUT_OF_MEMORY) -> T:
    """Run ``work`` (runner.py: ends in bounded time); our errors become one line and a code."""
    try:
        return runner.run(work())
    except Interrupted as e:
        typer.echo(f"kmdb-async: {e}", err=True)
        raise typer.Exit(128 + e.signum) from None
    except InvalidSetting as e:  # a value judged only once the run needed it
        raise bad_usage(e, settings) from None
    except KmdbError as e:
        typer.echo(f"kmdb-async: error: {_scrub(str(e), settings)}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    except Exception as e:  # a bug: say so in one line; the traceback only when asked
        if out_of_memory(e):  # not a bug: the process's memory limit (runner.py)
            typer.echo(f"kmdb-async: error: {out_of_memory_message}", err=True)
            raise typer.Exit(EXIT_FAILED) from None
        if os.environ.get("KMDB_DEBUG"):
            typer.echo(_scrub(traceback.format_exc(), settings), err=True)
        typer.echo(f"kmdb-async: unexpected error: {type(e).__name__}: "
                   f"{_scrub(str(e), settings)}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


@app.command("import")
def import_(
    source_arg: SourceArg = None,
    source: SourceOpt = None,
    database_url: DatabaseOpt = None,
    redis_url: RedisOpt = None,
    redis_prefix: PrefixOpt = None,
    s3_endpoint_url: EndpointOpt = None,
    aws_access_key_id: AccessKeyOpt = None,
    aws_secret_access_key: SecretKeyOpt = None,
    aws_region: RegionOpt = "us-east-1",
    min_revision: MinRevisionOpt = 1,
    revision_lookahead: LookaheadOpt = 10,
    batch_size: Annotated[int, typer.Option(
        envvar="KMDB_BATCH_SIZE", min=1,
        help="Records per batch (advisory: a second's records stay together).")] = 1000,
    files_in_flight: Annotated[int, typer.Option(
        envvar="KMDB_FILES_IN_FLIGHT", min=1, help="Revisions streamed at once.")] = 4,
    writers: Annotated[int, typer.Option(
        envvar="KMDB_WRITERS", min=1, help="Database connections writing at once.")] = 4,
    queue_depth: Annotated[int, typer.Option(
        envvar="KMDB_QUEUE_DEPTH", min=1, help="Batches buffered between stages.")] = 16,
    rejects: Annotated[Path, typer.Option(
        envvar="KMDB_REJECTS", help="JSON-lines file receiving rejected lines.")] = Path(
        "kmdb-rejects.jsonl"),
    strict: Annotated[bool, typer.Option(
        "--strict", envvar="KMDB_STRICT", show_default=False,
        help="Stop at the first rejected line. [default: off]")] = False,
    retry_attempts: RetryOpt = DEFAULT_RETRY_ATTEMPTS,
    network_timeout: TimeoutOpt = DEFAULT_NETWORK_TIMEOUT,
    user_cache_size: Annotated[int, typer.Option(
        envvar="KMDB_USER_CACHE_SIZE", min=2,
        help="Identities whose users.id is kept in memory (at most).")] = 300_000,
    alias_cache_size: Annotated[int, typer.Option(
        envvar="KMDB_ALIAS_CACHE_SIZE", min=2,
        help="Aliased identities whose groups are kept in memory (at most).")] = 100_000,
    bulk_load: Annotated[bool, typer.Option(
        "--bulk-load/--no-bulk-load", envvar="KMDB_BULK_LOAD",
        help="A first import into empty MariaDB/MySQL tables loads them by LOAD DATA "
             "streams (faster), committed every --slice-mib.")] = True,
    slice_mib: Annotated[float, typer.Option(
        envvar="KMDB_SLICE_MIB", min=0.01,
        help="A first import loading more than this many MiB of export commits its progress "
             "every slice of this size and builds its indexes at the end.")] = 1024,
    progress_interval: Annotated[float, typer.Option(
        envvar="KMDB_PROGRESS_INTERVAL", min=0,
        help="Seconds between progress log lines when stderr is not a terminal (cron); 0: "
             "none. A terminal gets a live progress line instead.")] = DEFAULT_PROGRESS_INTERVAL,
) -> None:
    """Import every new revision (and the new end of grown ones) into the database."""
    settings = Settings(
        database_url=database_url, redis_url=redis_url, redis_prefix=redis_prefix,
        source=source_arg or source, s3_endpoint_url=s3_endpoint_url,
        aws_access_key_id=aws_access_key_id, aws_secret_access_key=aws_secret_access_key,
        aws_region=aws_region, min_revision=min_revision, revision_lookahead=revision_lookahead,
        batch_size=batch_size, files_in_flight=files_in_flight, writers=writers,
        queue_depth=queue_depth, rejects=rejects, strict=strict, retry_attempts=retry_attempts,
        user_cache_size=user_cache_size, alias_cache_size=alias_cache_size, bulk_load=bulk_load,
        slice_mib=slice_mib,
        network_timeout=network_timeout, progress_interval=progress_interval,
    )
    summary = _run(checked(settings, source=True), lambda: run_import(settings),
                   IMPORT_OUT_OF_MEMORY)
    if summary.listed == 0:  # exit 0 all the same: a new, still empty bucket is no failure
        typer.echo(f"kmdb-async: warning: {nothing_found(settings.source_location())}", err=True)
    typer.echo(summary.text())
    if summary.rejects:
        typer.echo(f"rejected lines were written to {settings.rejects}")


@app.command()
def flush(
    yes: Annotated[bool, typer.Option(
        "--yes", show_default=False,
        help="Really empty the imported data. [default: off: explain and refuse]")] = False,
    database_url: DatabaseOpt = None,
    redis_url: RedisOpt = None,
    redis_prefix: PrefixOpt = None,
    retry_attempts: RetryOpt = DEFAULT_RETRY_ATTEMPTS,
    network_timeout: TimeoutOpt = DEFAULT_NETWORK_TIMEOUT,
) -> None:
    """Create the schema if missing, then empty imported data, progress and this database's
    Redis keys. The filter tables are kept."""
    settings = checked(Settings(database_url=database_url, redis_url=redis_url,
                                 redis_prefix=redis_prefix, retry_attempts=retry_attempts,
                                 network_timeout=network_timeout))
    if not yes:
        typer.echo("flush deletes every imported event, property, user, alias and the import "
                   "progress of this database; run again with --yes to do it.", err=True)
        raise typer.Exit(EXIT_FAILED)
    _run(settings, lambda: _flush(settings))
    typer.echo(f"flushed {settings.database_label()}")


async def _flush(settings: Settings) -> None:
    store = open_store(settings)
    await store.open()
    try:
        await store.acquire_import_lock("flush")  # never empties tables an import writes
        await store.ensure_schema()
        await store.flush()
        cursor = open_cursor(settings, store)
        try:
            await cursor.clear()
        finally:
            await cursor.close()
    finally:
        await store.close()


@app.command()
def stats(
    as_json: JsonOpt = False,
    top: Annotated[int, typer.Option(min=1, help="Rows of each ranking.")] = 10,
    database_url: DatabaseOpt = None,
    retry_attempts: RetryOpt = DEFAULT_RETRY_ATTEMPTS,
    network_timeout: TimeoutOpt = DEFAULT_NETWORK_TIMEOUT,
) -> None:
    """Counts, time range, top events, users with the most events, the last import (and its
    rejects) and when the database was last checked for new data."""
    settings = _database(database_url, retry_attempts, network_timeout)
    result = _run(settings, lambda: read_stats(settings, top))
    typer.echo(json.dumps(result.as_dict(), ensure_ascii=False, indent=2) if as_json else result.text())


@app.command()
def partition(
    ctx: typer.Context,
    min_date: Annotated[str | None, typer.Option(
        envvar="KMDB_MIN_DATE", show_default=False, callback=valid_date,
        help="First day (YYYY-MM-DD) of the first partition; ignored for partitioned tables. "
             "[default: none: required to partition a table the first time]")] = None,
    max_date: Annotated[str | None, typer.Option(
        envvar="KMDB_MAX_DATE", show_default=False, callback=valid_date,
        help="Partitions reach at least this day (YYYY-MM-DD); later rows go to the catch-all. "
             "[default: none: required]")] = None,
    days_per_partition: Annotated[int, typer.Option(
        envvar="KMDB_DAYS_PER_PARTITION", min=1, help="Days of one partition.")] = 7,
    database_url: DatabaseOpt = None,
    retry_attempts: RetryOpt = DEFAULT_RETRY_ATTEMPTS,
    network_timeout: TimeoutOpt = DEFAULT_NETWORK_TIMEOUT,
) -> None:
    """Partition events, properties and aliases by time (MariaDB/MySQL), or extend them to a
    later max date. Rows are kept; the same arguments again change nothing."""
    from .store.partitions import partition_tables  # MySQL-only: not loaded by other commands

    settings = checked(Settings(database_url=database_url, min_date=min_date, max_date=max_date,
                                 days_per_partition=days_per_partition,
                                 retry_attempts=retry_attempts, network_timeout=network_timeout))
    min_date_given_as = partition_dates(ctx, min_date, max_date)
    _run(settings, lambda: partition_tables(settings, typer.echo, min_date_given_as))


@app.command()
def status(
    source_arg: SourceArg = None,
    source: SourceOpt = None,
    as_json: JsonOpt = False,
    database_url: DatabaseOpt = None,
    redis_url: RedisOpt = None,
    redis_prefix: PrefixOpt = None,
    s3_endpoint_url: EndpointOpt = None,
    aws_access_key_id: AccessKeyOpt = None,
    aws_secret_access_key: SecretKeyOpt = None,
    aws_region: RegionOpt = "us-east-1",
    min_revision: MinRevisionOpt = 1,
    revision_lookahead: LookaheadOpt = 10,
    retry_attempts: RetryOpt = DEFAULT_RETRY_ATTEMPTS,
    network_timeout: TimeoutOpt = DEFAULT_NETWORK_TIMEOUT,
) -> None:
    """Show what is imported, in progress and pending, the last run and the cursor's health,
    changing nothing. Exit code 0 when all is imported, 3 when work is pending, 4 when the
    cursor and the database disagree."""
    settings = Settings(
        database_url=database_url, redis_url=redis_url, redis_prefix=redis_prefix,
        source=source_arg or source, s3_endpoint_url=s3_endpoint_url,
        aws_access_key_id=aws_access_key_id, aws_secret_access_key=aws_secret_access_key,
        aws_region=aws_region, min_revision=min_revision, revision_lookahead=revision_lookahead,
        retry_attempts=retry_attempts, network_timeout=network_timeout,
    )
    report = _run(checked(settings, source=True), lambda: read_status(settings))
    typer.echo(json.dumps(report, ensure_ascii=False) if as_json else render_status(report))
    raise typer.Exit(report["exit_code"])


NamesArg = Annotated[list[str], typer.Argument(metavar="NAME", show_default=False)]
FILTER_COMMANDS = {  # command -> (table, what its names do)
    "ignore-user": (IGNORED_USERS, "identities whose records are skipped"),
    "whitelist-event": (WHITELISTED_EVENTS, "if not empty, only these events are imported"),
    "blacklist-property": (BLACKLISTED_PROPERTIES, "property keys never stored"),
}


def _filter_app(table: str, what: str) -> typer.Typer:
    """``add`` / ``remove`` / ``list`` of one filter table."""
    sub = typer.Typer(no_args_is_help=True, rich_markup_mode=MARKUP,
                      help=f"Manage `{table}`: {what}. Changes apply to lines imported afterwards.")

    def edit(names: list[str], settings: Settings, add: bool) -> None:
        valid = _names(names)
        changed = _run(settings, lambda: _edit_filter(settings, table, valid, add=add))
        typer.echo(f"{table}: {'added' if add else 'removed'} {len(changed)} of {len(set(names))}"
                   + (f": {', '.join(changed)}" if changed else ""))

    @sub.command("add")
    def add(names: NamesArg, database_url: DatabaseOpt = None,
            retry_attempts: RetryOpt = DEFAULT_RETRY_ATTEMPTS,
            network_timeout: TimeoutOpt = DEFAULT_NETWORK_TIMEOUT) -> None:
        """Add NAMEs (a name already there is left as it is)."""
        edit(names, _database(database_url, retry_attempts, network_timeout), add=True)

    @sub.command("remove")
    def remove(names: NamesArg, database_url: DatabaseOpt = None,
               retry_attempts: RetryOpt = DEFAULT_RETRY_ATTEMPTS,
               network_timeout: TimeoutOpt = DEFAULT_NETWORK_TIMEOUT) -> None:
        """Remove NAMEs (a name that is not there is ignored)."""
        edit(names, _database(database_url, retry_attempts, network_timeout), add=False)

    @sub.command("list")
    def list_(database_url: DatabaseOpt = None, retry_attempts: RetryOpt = DEFAULT_RETRY_ATTEMPTS,
              network_timeout: TimeoutOpt = DEFAULT_NETWORK_TIMEOUT) -> None:
        """Print the names, one a line."""
        settings = _database(database_url, retry_attempts, network_timeout)
        for name in _run(settings, lambda: _list_filter(settings, table)):
            typer.echo(name)

    return sub


def _database(database_url: str | None, retry_attempts: int, network_timeout: float) -> Settings:
    """Settings of a command that talks to the database only (checked: a bad URL exits 2)."""
    return checked(Settings(database_url=database_url, retry_attempts=retry_attempts,
                            network_timeout=network_timeout))


def _names(names: list[str]) -> list[str]:
    for name in names:
        if len(name) > MAX_NAME:
            raise typer.BadParameter(f"{name[:40]!r}... is longer than {MAX_NAME} characters")
    return names


async def _edit_filter(settings: Settings, table: str, names: list[str], add: bool) -> list[str]:
    store = open_store(settings)
    await store.open()
    try:
        await store.acquire_import_lock("filter change")
        await store.ensure_schema()
        if add:
            return await store.add_filter_names(table, names)
        return await store.remove_filter_names(table, names)
    finally:
        await store.close()


async def _list_filter(settings: Settings, table: str) -> list[str]:
    store = open_store(settings)
    await store.open(create=False)
    try:
        return await store.filter_names(table) if table in await store.table_names() else []
    finally:
        await store.close()


for _command, (_table, _what) in FILTER_COMMANDS.items():
    app.add_typer(_filter_app(_table, _what), name=_command)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: read ``.env``, then run the Typer app."""
    load_dotenv()
    return app(args=argv if argv is not None else sys.argv[1:], prog_name="kmdb-async")
