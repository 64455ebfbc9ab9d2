"""Revisions in an S3 bucket or an S3-compatible store, through aiobotocore.

This is the only module that talks to S3. It translates every botocore/aiohttp failure into
TransientError or TerminalError, and retries TransientError in one place (`S3Source._call`);
botocore's own retries are off so that nothing retries twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import RetryCallState

from kmdb_async.errors import KmdbError, TerminalError, TransientError, retrying
from kmdb_async.settings import InvalidSetting, redact, scrub, secret_forms, url_password
from kmdb_async.sources import (
    DEFAULT_CHUNK_SIZE,
    REVISIONS_DIR,
    Revision,
    check_start,
    revision_key,
    revision_number,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Failures of the S3 client and its HTTP layer; each is translated by `S3Source._translate`.
WIRE_ERRORS: tuple[type[BaseException], ...] = (
    BotoCoreError,
    ClientError,
    aiohttp.ClientError,
    TimeoutError,
    OSError,
)
_READ_ERRORS: tuple[type[BaseException], ...] = (*WIRE_ERRORS, TransientError)
#: What a request that got no answer in time raises (aiohttp's ServerTimeoutError included).
_TIMEOUTS = (TimeoutError, ConnectTimeoutError, ReadTimeoutError)

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
    }
)
_TERMINAL_REASONS = {
    "NoSuchBucket": "the bucket does not exist",
    "NoSuchKey": "the object does not exist",
    "AccessDenied": "access denied (check the permissions granted to this access key)",
    "InvalidAccessKeyId": "the access key ID is unknown to the store (check AWS_ACCESS_KEY_ID)",
    "SignatureDoesNotMatch": (
        "the secret key does not match the access key ID (check AWS_SECRET_ACCESS_KEY)"
    ),
    "InvalidRange": "the object is shorter than the import expected (it shrank)",
    "RequestTimeTooSkewed": "this machine's clock is too far from the store's",
}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


def parse_s3_url(location: str) -> tuple[str, str]:
    """Bucket and key prefix of ``s3://bucket[/prefix]``; the prefix is "" or ends with "/"."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    if not _BUCKET_NAME.fullmatch(bucket):
        raise InvalidSetting(
            "KMDB_SOURCE",
            f"{redact(location)!r} does not name an S3 bucket: use s3://bucket[/prefix]",
        )
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


class _ListingDenied(TerminalError):
    """ListObjectsV2 was refused; revisions must be found by probing their names."""


class _ObjectReader:
    """Position within one object being streamed, and the HTTP body currently open on it."""

    def __init__(self, key: str, start: int) -> None:
        self.key = key
        self.pos = start
        """Offset (bytes) of the next byte to hand out."""
        self.end: int | None = None
        """Object size (bytes) as of the first GetObject; fixed for the whole stream."""
        self.body: Any = None

    async def close_body(self) -> None:
        body, self.body = self.body, None
        if body is not None:
            await body.aclose()


class S3Source:
    """Revisions under ``s3://bucket/prefix``: listed, or probed when listing is denied."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        min_revision: int = 1,
        lookahead: int = 10,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        attempts: int = 6,
        max_wait: float = 30.0,
        probe_concurrency: int = 16,
        max_connections: int = 32,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        """Nothing is sent before first use.

        ``min_revision`` is the first revision number probed, and probing stops after
        ``lookahead`` consecutive missing numbers. ``chunk_size`` is in bytes. A failure that
        may be transient is tried ``attempts`` times in all, with exponential backoff and
        jitter between tries of at most ``max_wait`` seconds (the policy of
        `kmdb_async.errors.retrying`). Timeouts are in seconds.
        """
        if min_revision < 1 or lookahead < 1:
            raise TerminalError(
                f"the minimum revision ({min_revision}) and the revision lookahead "
                f"({lookahead}) must be at least 1"
            )
        self.bucket = bucket
        self.prefix = prefix
        self._endpoint_url = endpoint_url
        self._access_key = access_key
        self._secret_key = secret_key
        # What messages must never show: the keys, and a password in the endpoint URL.
        self._secrets = {
            form
            for secret in (secret_key, access_key, endpoint_url and url_password(endpoint_url))
            if secret
            for form in secret_forms(secret)
        }
        self._region = region
        self._min_revision = min_revision
        self._lookahead = lookahead
        self._chunk_size = chunk_size
        self._attempts = attempts
        self._max_wait = max_wait
        self._probe_concurrency = probe_concurrency
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},  # _call retries instead
            # A checksum verdict arrives after the bytes were handed on, too late to act on.
            response_checksum_validation="when_required",
            request_checksum_calculation="when_required",
            max_pool_connections=max_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._listing_denied = False
        self._probe_denied = False  # a probe got 403: the warning when nothing is found

    # -- listing ---------------------------------------------------------------------------

    async def revisions(self) -> list[Revision]:
        """Every ``revisions/<N>.json`` under the prefix, sorted by N; probed if not listable."""
        if not self._listing_denied:
            try:
                return await self._list()
            except _ListingDenied:
                log.info(
                    "listing %s is denied; probing revision names from %d instead",
                    self._url(REVISIONS_DIR),
                    self._min_revision,
                )
                self._listing_denied = True
        return await self._probe()

    async def _list(self) -> list[Revision]:
        directory = self.prefix + REVISIONS_DIR
        params = {"Bucket": self.bucket, "Prefix": directory, "Delimiter": "/"}
        found: list[Revision] = []
        # Pages are fetched one by one (not with the paginator) so each page retries alone.
        while True:
            page = await self._call(
                f"listing {self._url(REVISIONS_DIR)}", partial(self._list_objects, params)
            )
            for item in page.get("Contents", ()):
                number = revision_number(item["Key"][len(directory) :])
                if number is not None:
                    found.append(Revision(number, int(item["Size"])))
            if not page.get("IsTruncated"):
                break
            params = {**params, "ContinuationToken": page["NextContinuationToken"]}
        found.sort(key=lambda revision: revision.number)
        return found

    async def _list_objects(self, params: dict[str, str]) -> dict[str, Any]:
        """One ListObjectsV2 page; raises _ListingDenied when listing is not allowed."""
        client = await self._s3()
        try:
            page: dict[str, Any] = await client.list_objects_v2(**params)
        except ClientError as exc:
            if _code(exc) == "AccessDenied":
                raise _ListingDenied("listing denied") from None
            raise
        return page

    async def _probe(self) -> list[Revision]:
        """Revisions found by HeadObject on N = min_revision, min_revision + 1, ...

        Stops after ``lookahead`` consecutive misses. Numbers are probed concurrently in
        windows; results past the stopping point are dropped, so the outcome is the same as
        probing one number at a time.
        """
        found: list[Revision] = []
        misses = 0
        number = self._min_revision
        self._probe_denied = False
        while misses < self._lookahead:
            window = range(number, number + max(self._lookahead - misses, self._probe_concurrency))
            for probed, size in zip(window, await self._head_many(window), strict=True):
                if size is not None:
                    found.append(Revision(probed, size))
                    misses = 0
                    continue
                misses += 1
                if misses == self._lookahead:
                    break
            number = window.stop
        if not found and self._probe_denied:
            # Without s3:ListBucket S3 answers 403 for a missing key, so this may be fine.
            log.warning(
                "no revision found in %s from revision %d, and some probes were denied: "
                "check that the access key may read (s3:GetObject) the revisions",
                self._url(REVISIONS_DIR),
                self._min_revision,
            )
        return found

    async def _head_many(self, numbers: range) -> list[int | None]:
        """Per number, in order: its object's size (bytes), or None if there is no object."""
        sizes: list[int | None] = [None] * len(numbers)
        limit = asyncio.Semaphore(self._probe_concurrency)

        async def probe(index: int, number: int) -> None:
            async with limit:
                sizes[index] = await self._call(
                    f"probing {self._url(revision_key(number))}", partial(self._head, number)
                )

        try:
            async with asyncio.TaskGroup() as group:
                for index, number in enumerate(numbers):
                    group.create_task(probe(index, number))
        except ExceptionGroup as failures:
            # Callers expect one of our errors, not a group of them.
            first = failures.exceptions[0]
            raise first if isinstance(first, KmdbError) else failures from None
        return sizes

    async def _head(self, number: int) -> int | None:
        """Size (bytes) of revision ``number``, or None if it does not exist."""
        client = await self._s3()
        try:
            head = await client.head_object(Bucket=self.bucket, Key=self._key(number))
        except ClientError as exc:
            status = _status(exc)
            if status not in (403, 404):
                raise
            # Without s3:ListBucket (the reason we probe), S3 answers 403 for a missing key.
            self._probe_denied = self._probe_denied or status == 403
            return None
        return int(head["ContentLength"])

    # -- streaming -------------------------------------------------------------------------

    async def stream(self, revision: Revision, start: int) -> AsyncIterator[bytes]:
        """The object's bytes from offset ``start`` (bytes) to its end, in chunks.

        A body cut off mid-object is resumed with a Range request from the first byte not
        yet received; no byte is handed out twice or skipped.
        """
        check_start(revision, start)
        if start == revision.size:
            return
        reader = _ObjectReader(self._key(revision.number), start)
        read = partial(self._read_chunk, reader)
        try:
            while chunk := await self._call(f"reading {self._url_of(reader.key)}", read):
                yield chunk
        finally:
            await reader.close_body()

    async def _read_chunk(self, reader: _ObjectReader) -> bytes:
        """Up to ``chunk_size`` bytes at ``reader.pos``, opening a body there if none is open;
        b"" at the end. Bytes received before a failure are returned, not lost."""
        if reader.end is not None and reader.pos >= reader.end:
            return b""
        if reader.body is None:
            await self._open_body(reader)
        assert reader.end is not None
        chunk = bytearray()
        try:
            while len(chunk) < self._chunk_size:
                # Bounded by read_timeout (aiohttp's sock_read): a body that stops sending fails.
                part: bytes = await reader.body.read(self._chunk_size - len(chunk))
                if not part:
                    if reader.pos + len(chunk) < reader.end:
                        raise TransientError(
                            f"{self._url_of(reader.key)}: connection closed after "
                            f"{reader.pos + len(chunk)} of {reader.end} bytes"
                        )
                    break
                chunk += part
        except _READ_ERRORS:
            # The next call opens a new body at the first byte not received.
            await reader.close_body()
            if not chunk:
                raise
            log.debug("%s cut at byte %d; resuming", reader.key, reader.pos + len(chunk))
        reader.pos += len(chunk)
        return bytes(chunk)

    async def _open_body(self, reader: _ObjectReader) -> None:
        """GetObject from ``reader.pos``; on a resume, up to the end fixed by the first request.

        Revisions only grow, so bytes before the first request's end are the same in every
        version of the object; a resume never reads past that end.
        """
        client = await self._s3()
        params = {"Bucket": self.bucket, "Key": reader.key}
        ranged = reader.pos > 0 or reader.end is not None
        if ranged:
            last = "" if reader.end is None else str(reader.end - 1)
            params["Range"] = f"bytes={reader.pos}-{last}"
        response = await client.get_object(**params)
        reader.body = response["Body"]
        if not ranged:
            reader.end = int(response["ContentLength"])
            return
        match = _CONTENT_RANGE.fullmatch(response.get("ContentRange") or "")
        if match is None or int(match.group(1)) != reader.pos:
            await reader.close_body()
            raise TerminalError(
                f"{self._url_of(reader.key)}: the store ignored a byte range request "
                f"(bytes {reader.pos}-), so the object cannot be read from an offset"
            )
        if reader.end is None:
            reader.end = int(match.group(3))

    # -- retries, errors, client -----------------------------------------------------------

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation()``, retried on TransientError; other S3 failures are translated.

        ``what`` says what was being done, for messages ("reading s3://b/revisions/3.json").
        """
        async for attempt in retrying(self._attempts, self._max_wait).copy(
            before_sleep=_log_retry
        ):
            with attempt:
                try:
                    return await operation()
                except KmdbError:
                    raise
                except WIRE_ERRORS as exc:
                    # Chaining is dropped: botocore's own text may carry the access key ID.
                    raise self._translate(exc, what) from None
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def _translate(self, exc: BaseException, what: str) -> KmdbError:
        """Our error for an S3 failure; its message names no access key or secret key."""
        if isinstance(exc, ClientError):
            code, status = _code(exc), _status(exc)
            transient = code in _TRANSIENT_CODES or status >= 500 or status in (408, 429)
            reason = _TERMINAL_REASONS.get(code) or {
                403: _TERMINAL_REASONS["AccessDenied"],
                404: "not found",
            }.get(status)
            if reason is None:
                message = exc.response.get("Error", {}).get("Message", "")
                reason = f"{code or 'error'} (HTTP {status}){': ' + message if message else ''}"
            error: KmdbError = (TransientError if transient else TerminalError)(
                f"{what}: {reason}"
            )
        elif isinstance(exc, _TIMEOUTS):
            limit = self._connect_timeout if isinstance(exc, ConnectTimeoutError) else self._read_timeout
            error = TransientError(f"{what}: timed out (no answer in {limit:g} s)")
        elif isinstance(
            exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError
        ):
            error = TerminalError(f"{what}: no usable AWS credentials ({type(exc).__name__})")
        elif isinstance(exc, ProfileNotFound):
            error = TerminalError(f"{what}: {exc}")
        elif isinstance(
            exc,
            HTTPClientError
            | BotoConnectionError
            | IncompleteReadError
            | aiohttp.ClientError
            | TimeoutError
            | OSError,
        ):
            error = TransientError(f"{what}: {type(exc).__name__}: {exc}")
        else:  # another BotoCoreError: a request that can never be valid
            error = TerminalError(f"{what}: {type(exc).__name__}: {exc}")
        return type(error)(self._scrub(str(error)))

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    async def _s3(self) -> Any:
        """The S3 client, created on first use and closed by aclose()."""
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await self._create_client()
        return self._client

    async def _create_client(self) -> Any:
        try:
            return await self._stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    region_name=self._region,
                    endpoint_url=self._endpoint_url,
                    aws_access_key_id=self._access_key,
                    aws_secret_access_key=self._secret_key,
                    config=self._config,
                )
            )
        except (BotoCoreError, ValueError) as exc:
            raise TerminalError(
                self._scrub(f"cannot create an S3 client for {self._url('')}: {exc}")
            ) from None

    def _key(self, number: int) -> str:
        return self.prefix + revision_key(number)

    def _url(self, path: str) -> str:
        """``s3://bucket/prefix/path``, for messages."""
        return self._url_of(self.prefix + path)

    def _url_of(self, key: str) -> str:
        where = f" at {redact(self._endpoint_url)}" if self._endpoint_url else ""
        return f"s3://{self.bucket}/{key}{where}"

    async def aclose(self) -> None:
        """Close the client and its connection pool."""
        await self._stack.aclose()
        self._client = None

    async def __aenter__(self) -> S3Source:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s; retry %d in %.1f s", error, state.attempt_number, delay)
