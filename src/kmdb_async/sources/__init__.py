"""Where revisions come from: an S3 bucket (optionally under a key prefix) or a local directory.

Both hold the same layout: ``revisions/<N>.json`` under a root, N a positive integer written
without leading zeros. Every other object under the root (``index.csv``, ``status.csv``,
``hello.txt``, ``revisions/abc.json``, ``revisions/0.json``, ``revisions/1.json.bak``) is
ignored. A source lists revisions and streams one revision's bytes from a byte offset.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Protocol

import msgspec

from kmdb_async.errors import TerminalError
from kmdb_async.settings import InvalidSetting, Settings, redact

#: Chunk size of streamed bytes (bytes): large enough to amortise per-chunk work, small
#: enough that many revisions can be in flight at once.
DEFAULT_CHUNK_SIZE = 1 << 20

#: Directory of the revisions under a root, with its trailing slash.
REVISIONS_DIR = "revisions/"

# Leading zeros excluded: `01.json` is not revision 1, or two objects would claim one number.
_REVISION_NAME = re.compile(r"([1-9][0-9]*)\.json")


class Revision(msgspec.Struct, frozen=True, gc=False):
    """One ``revisions/<number>.json`` object, as seen when the root was listed."""

    number: int
    """N of ``revisions/N.json``; positive."""
    size: int
    """Object size in bytes when listed (the object may have grown since)."""


class Source(Protocol):
    """A root of revisions: list them, stream one from a byte offset, close."""

    async def revisions(self) -> list[Revision]:
        """Every revision under the root, sorted by number."""
        ...

    def stream(self, revision: Revision, start: int) -> AsyncIterator[bytes]:
        """The revision's bytes from byte offset ``start`` to its end, in chunks of about
        ``DEFAULT_CHUNK_SIZE`` bytes; nothing when ``start`` equals the listed size."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads; the source is unusable afterwards."""
        ...


def revision_number(name: str) -> int | None:
    """N if ``name`` (a file name inside ``revisions/``) is ``<N>.json``, else None."""
    match = _REVISION_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def revision_key(number: int) -> str:
    """Path of revision ``number`` relative to the root, e.g. ``revisions/12.json``."""
    return f"{REVISIONS_DIR}{number}.json"


def check_start(revision: Revision, start: int) -> None:
    """Refuse an offset (bytes) that cannot be a position inside ``revision``."""
    if start < 0:
        raise ValueError(f"negative start offset {start}")
    if start > revision.size:
        # The cursor says more was read than exists: the object was replaced by a shorter one.
        raise TerminalError(
            f"{revision_key(revision.number)} is {revision.size} bytes, but the import had "
            f"already read {start} bytes of it: the object shrank; it will not be re-read"
        )


def open_source(
    location: str,
    *,
    endpoint_url: str | None,
    access_key: str | None,
    secret_key: str | None,
    min_revision: int,
    lookahead: int,
    region: str = "us-east-1",
    attempts: int = 6,
    max_wait: float = 10.0,
    timeout: float = 30.0,
) -> Source:
    """The source at ``location``: ``s3://bucket[/prefix]`` or a local directory.

    ``min_revision`` and ``lookahead`` (counts of revision numbers) drive probing when an S3
    bucket cannot be listed. Credentials left None fall back to botocore's usual chain
    (environment, profile, instance role). Raises TerminalError for a location that cannot
    be a root of revisions; no network I/O happens until the source is used. An S3 request
    is tried ``attempts`` times (at most ``max_wait`` seconds apart) and each try fails after
    ``timeout`` seconds without an answer (connecting, or between two chunks of a response).
    """
    check_location(location)
    # Imported here so a local import never loads aiobotocore (slow, and not needed).
    if location.startswith("s3://"):
        from kmdb_async.sources.s3 import S3Source, parse_s3_url

        bucket, prefix = parse_s3_url(location)
        return S3Source(
            bucket,
            prefix,
            endpoint_url=endpoint_url,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            min_revision=min_revision,
            lookahead=lookahead,
            attempts=attempts,
            max_wait=max_wait,
            connect_timeout=timeout,
            read_timeout=timeout,
        )
    from kmdb_async.sources.local import LocalSource

    if not os.path.isdir(location):
        what = "is not a directory" if os.path.exists(location) else "does not exist"
        raise TerminalError(f"source directory {redact(location)!r} {what}")
    return LocalSource(location)


def check_location(location: str) -> None:
    """Refuse a location that cannot name a root, whatever exists there (InvalidSetting)."""
    if location.startswith("s3://"):
        from kmdb_async.sources.s3 import parse_s3_url

        parse_s3_url(location)
    elif re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", location):
        raise InvalidSetting(
            "KMDB_SOURCE",
            f"{redact(location)!r} is not supported: use s3://bucket[/prefix] or a directory",
        )


def revisions_location(location: str) -> str:
    """Where the revisions of the root ``location`` are looked for, for messages:
    ``DIR/revisions/`` or ``s3://bucket/prefix/revisions/``."""
    if location.startswith("s3://"):
        return f"{location.rstrip('/')}/{REVISIONS_DIR}"
    return os.path.join(location, REVISIONS_DIR)


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Revision",
    "Source",
    "check_location",
    "open_source",
    "revisions_location",
    "revision_key",
    "revision_number",
]


def source_for(settings: Settings) -> Source:
    """The source the settings name (``--source``, else ``s3://$AWS_BUCKET``), not yet used."""
    return open_source(
        settings.source_location(),
        endpoint_url=settings.s3_endpoint_url,
        access_key=settings.aws_access_key_id,
        secret_key=settings.aws_secret_access_key,
        min_revision=settings.min_revision,
        lookahead=settings.revision_lookahead,
        region=settings.aws_region,
        attempts=settings.retry_attempts,
        max_wait=settings.retry_max_wait,
        timeout=settings.network_timeout,
    )
