"""The command line: parse options (each also an environment variable), run one async call.

Exit codes: 0 success (rejected lines included), 1 the run failed (the one-line cause is
printed), 2 bad usage, 130/143 stopped by SIGINT/SIGTERM after saving progress.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import uvloop

from .errors import KmdbError
from .pipeline import Interrupted, run_import
from .settings import Settings, load_dotenv
from .state import open_cursor
from .store import open_store

T = TypeVar("T")
EXIT_FAILED = 1

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Import KissMetrics raw event exports into MariaDB/MySQL, fast, in one process.",
)

DatabaseOpt = Annotated[str | None, typer.Option(
    "--database-url", envvar="DATABASE_URL", show_default=False,
    help="mysql://user:pass@host:port/db (km-db's mysql2:// accepted).")]
RedisOpt = Annotated[str | None, typer.Option(
    "--redis-url", envvar="KMDB_REDIS_URL", show_default=False,
    help="redis://host:port/db for the revision cursor; without it the database keeps it.")]
PrefixOpt = Annotated[str | None, typer.Option(
    "--redis-prefix", envvar="KMDB_REDIS_PREFIX", show_default=False,
    help="Prefix of this database's Redis keys [default: kmdb:HOST:PORT:DB].")]


def _scrub(message: str, settings: Settings | None) -> str:
    for secret in settings.secrets() if settings else []:
        message = message.replace(secret, "***")
    return message


def _run(settings: Settings, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` on uvloop; our errors become one clean line and an exit code."""
    try:
        return uvloop.run(work())
    except Interrupted as e:
        typer.echo(f"kmdb-async: {e}", err=True)
        raise typer.Exit(128 + e.signum) from None
    except KmdbError as e:
        typer.echo(f"kmdb-async: error: {_scrub(str(e), settings)}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    except Exception as e:  # a bug: say so in one line; the traceback only when asked
        if os.environ.get("KMDB_DEBUG"):
            typer.echo(_scrub(traceback.format_exc(), settings), err=True)
        typer.echo(f"kmdb-async: unexpected error: {type(e).__name__}: "
                   f"{_scrub(str(e), settings)}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


@app.command("import")
def import_(
    source_arg: Annotated[str | None, typer.Argument(
        metavar="[SOURCE]", show_default=False,
        help="Export root: a directory or s3://bucket[/prefix] (same as --source).")] = None,
    source: Annotated[str | None, typer.Option(
        "--source", envvar="KMDB_SOURCE", show_default=False,
        help="Export root: a directory or s3://bucket[/prefix] [default: s3://$AWS_BUCKET].")] = None,
    database_url: DatabaseOpt = None,
    redis_url: RedisOpt = None,
    redis_prefix: PrefixOpt = None,
    s3_endpoint_url: Annotated[str | None, typer.Option(
        "--s3-endpoint-url", envvar="AWS_ENDPOINT_URL", show_default=False,
        help="Endpoint of an S3-compatible store.")] = None,
    aws_access_key_id: Annotated[str | None, typer.Option(
        envvar="AWS_ACCESS_KEY_ID", show_default=False, help="S3 access key.")] = None,
    aws_secret_access_key: Annotated[str | None, typer.Option(
        envvar="AWS_SECRET_ACCESS_KEY", show_default=False, help="S3 secret key.")] = None,
    aws_region: Annotated[str, typer.Option(envvar="AWS_REGION", help="S3 region.")] = "us-east-1",
    min_revision: Annotated[int, typer.Option(
        envvar="KMDB_MIN_REVISION", min=1, help="First revision to import.")] = 1,
    revision_lookahead: Annotated[int, typer.Option(
        envvar="KMDB_REVISION_LOOKAHEAD", min=1,
        help="Revisions probed past the last found one when the bucket cannot be listed.")] = 10,
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
        "--strict", envvar="KMDB_STRICT", help="Stop at the first rejected line.")] = False,
    retry_attempts: Annotated[int, typer.Option(
        envvar="KMDB_RETRY_ATTEMPTS", min=1,
        help="Tries of one failing S3/database/Redis operation before the run stops.")] = 6,
) -> None:
    """Import every new revision (and the new end of grown ones) into the database."""
    settings = Settings(
        database_url=database_url, redis_url=redis_url, redis_prefix=redis_prefix,
        source=source_arg or source, s3_endpoint_url=s3_endpoint_url,
        aws_access_key_id=aws_access_key_id, aws_secret_access_key=aws_secret_access_key,
        aws_region=aws_region, min_revision=min_revision, revision_lookahead=revision_lookahead,
        batch_size=batch_size, files_in_flight=files_in_flight, writers=writers,
        queue_depth=queue_depth, rejects=rejects, strict=strict, retry_attempts=retry_attempts,
    )
    summary = _run(settings, lambda: run_import(settings))
    typer.echo(summary.text())
    if summary.rejects:
        typer.echo(f"rejected lines were written to {settings.rejects}")


@app.command()
def flush(
    yes: Annotated[bool, typer.Option("--yes", help="Really empty the imported data.")] = False,
    database_url: DatabaseOpt = None,
    redis_url: RedisOpt = None,
    redis_prefix: PrefixOpt = None,
) -> None:
    """Create the schema if missing, then empty imported data, progress and this database's
    Redis keys. The filter tables are kept."""
    settings = Settings(database_url=database_url, redis_url=redis_url, redis_prefix=redis_prefix)
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
        await store.ensure_schema()
        await store.flush()
        cursor = open_cursor(settings, store)
        try:
            await cursor.clear()
        finally:
            await cursor.close()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: read ``.env``, then run the Typer app."""
    load_dotenv()
    return app(args=argv if argv is not None else sys.argv[1:], prog_name="kmdb-async")
