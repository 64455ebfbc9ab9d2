"""One frozen settings object: environment, ``.env`` and CLI options. Every limit lives here."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import TerminalError

DEFAULT_PORTS = {"mysql": 3306, "redis": 6379}
NO_SOURCE = ("no source: pass SOURCE or --source (a directory or s3://bucket[/prefix]), or set "
             "KMDB_SOURCE or AWS_BUCKET")
DEFAULT_PROGRESS_INTERVAL = 5.0  # seconds between progress log lines when not on a terminal
SQLITE = "sqlite:///"
DEFAULT_DATABASE = SQLITE + "kmdb.sqlite3"  # the embedded default, in the working directory


class InvalidSetting(TerminalError):
    """A value that is wrong in itself, whatever the servers say (bad usage: the CLI exits 2).

    ``setting`` names its variable (``DATABASE_URL``); ``problem`` says what is wrong, without
    the name, so the CLI can name the option or variable the user actually gave.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting} {problem}")
        self.setting = setting
        self.problem = problem


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed ``mysql://user:pass@host:port/db`` (km-db's ``mysql2://`` accepted)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        parts = _split(url, ("mysql", "mysql2", "mariadb", "mysql+aiomysql"), "DATABASE_URL")
        database = parts.path.lstrip("/")
        if not database or "/" in database:
            raise InvalidSetting("DATABASE_URL", f"{redact(url)} must name a database: "
                                 "mysql://user:pass@host/db")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=_port(parts, "mysql", "DATABASE_URL", url),
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=unquote(database),
        )

    def __str__(self) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class RedisURL:
    """A parsed ``redis://[:pass@]host[:port][/db]``."""

    host: str
    port: int
    db: int
    password: str | None = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        parts = _split(url, ("redis",), "KMDB_REDIS_URL")
        path = parts.path.lstrip("/")
        if path and not path.isdigit():
            raise InvalidSetting("KMDB_REDIS_URL", f"{redact(url)}: the path must be a database number")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=_port(parts, "redis", "KMDB_REDIS_URL", url),
            db=int(path or 0),
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


def _split(url: str, schemes: tuple[str, ...], name: str):  # type: ignore[no-untyped-def]
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidSetting(name, f"is not a valid URL: {redact(url)}") from None
    if parts.scheme not in schemes:
        raise InvalidSetting(name, f"{redact(url)} must start with {schemes[0]}://")
    return parts


def _port(parts, scheme: str, name: str, url: str) -> int:  # type: ignore[no-untyped-def]
    try:
        return parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise InvalidSetting(name, f"{redact(url)} has an invalid port") from None


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


@dataclass(frozen=True)
class Settings:
    """Everything one command needs; built once by the CLI."""

    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str | None = None  # Redis key prefix; default derived from the database
    source: str | None = None
    s3_endpoint_url: str | None = None
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_region: str = "us-east-1"
    min_revision: int = 1
    revision_lookahead: int = 10  # revisions probed past the last known one when S3 cannot list
    batch_size: int = 1000  # records per batch (advisory: whole seconds are kept together)
    files_in_flight: int = 4  # revisions streamed and decoded concurrently
    writers: int = 4  # database connections writing batches concurrently
    queue_depth: int = 16  # batches buffered between stages (backpressure bound)
    user_cache_size: int = 300_000  # identities whose users.id is cached in memory (at most)
    alias_cache_size: int = 100_000  # aliased identities whose groups are held in memory
    bulk_load: bool = True  # a first import into empty MariaDB tables streams LOAD DATA
    rejects: Path | None = None  # JSON-lines file receiving rejected lines
    strict: bool = False  # stop at the first rejected line
    retry_attempts: int = 6  # tries of one transient operation before giving up
    retry_max_wait: float = 10.0  # seconds, cap of the exponential backoff between tries
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL  # seconds; 0: no progress log lines
    min_date: str | None = None  # YYYY-MM-DD: first day of the first time partition
    max_date: str | None = None  # YYYY-MM-DD: time partitions reach at least this day
    days_per_partition: int = 7  # days of one time partition

    def database_location(self) -> str:
        """DATABASE_URL, or the embedded default ``sqlite:///kmdb.sqlite3``."""
        return self.database_url or DEFAULT_DATABASE

    def sqlite_path(self) -> Path | None:
        """The embedded database's file (``sqlite:///rel`` or ``sqlite:////abs``), else None."""
        location = self.database_location()
        if not location.startswith("sqlite:"):
            return None
        if not location.startswith(SQLITE) or len(location) == len(SQLITE):
            raise InvalidSetting("DATABASE_URL", f"{location} must look like sqlite:///path/to/file")
        return Path(location[len(SQLITE):])

    def database(self) -> DatabaseURL:
        """The MariaDB/MySQL server of DATABASE_URL."""
        return DatabaseURL.parse(self.database_location())

    def database_label(self) -> str:
        """The database as shown to the user (never with its password)."""
        path = self.sqlite_path()
        return f"{SQLITE}{path}" if path is not None else str(self.database())

    def redis(self) -> RedisURL | None:
        return RedisURL.parse(self.redis_url) if self.redis_url else None

    def source_location(self) -> str:
        if self.source:
            return self.source
        bucket = os.environ.get("AWS_BUCKET")
        if bucket:
            return bucket if bucket.startswith("s3://") else f"s3://{bucket}"
        raise TerminalError(NO_SOURCE)

    def key_prefix(self) -> str:
        """Redis key prefix of this database: two databases sharing a Redis never collide."""
        if self.redis_prefix:
            return self.redis_prefix
        path = self.sqlite_path()
        if path is not None:
            return f"kmdb:sqlite:{path.resolve()}"
        db = self.database()
        return f"kmdb:{db.host}:{db.port}:{db.database}"

    def secrets(self) -> list[str]:
        """Strings that must never appear in output (for the final scrubbing of messages)."""
        found = [self.aws_secret_access_key, self.aws_access_key_id]
        for url in (self.database_url, self.redis_url):
            if url:
                try:
                    found.append(unquote(urlsplit(url).password or ""))
                except ValueError:
                    pass
        return [s for s in found if s]


def load_dotenv(path: Path = Path(".env")) -> None:
    """Read ``KEY=VALUE`` lines of ``.env`` into the environment; real variables win."""
    if not path.is_file():
        return
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key.strip(), value)
