"""Sources: listing and streaming revisions from a directory and from S3 (moto over HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

from kmdb_async.errors import KmdbError, TerminalError, TransientError
from kmdb_async.sources import Revision, open_source
from kmdb_async.sources.local import LocalSource
from kmdb_async.sources.s3 import S3Source
from tests.s3_server import ACCESS_KEY, SECRET_KEY, S3Bucket

MIB = 1 << 20
IGNORED = ["index.csv", "status.csv", "hello.txt", "revisions/abc.json", "revisions/0.json",
           "revisions/1.json.bak", "revisions/01.json", "revisions/sub/4.json", "revisions/5.jsonx"]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def collect(source: Any, revision: Revision, start: int = 0) -> list[bytes]:
    return [chunk async for chunk in source.stream(revision, start)]


def s3_source(bucket: S3Bucket, prefix: str = "", *, cls: type[S3Source] = S3Source,
              endpoint_url: str | None = None, **options: Any) -> S3Source:
    """A ``cls`` on the test bucket with quick retries (override with ``options``)."""
    options = {"attempts": 3, "max_wait": 0.0, **options}
    return cls(bucket.bucket, prefix, endpoint_url=endpoint_url or bucket.endpoint_url,
               access_key=ACCESS_KEY, secret_key=SECRET_KEY, **options)


def denied(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                        "ResponseMetadata": {"HTTPStatusCode": 403}}, operation)


class ClientWrapper:
    """The real aiobotocore client, with ListObjectsV2 replaced by a subclass (and counted)."""

    def __init__(self, client: Any) -> None:
        self.client, self.list_calls = client, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class RefusesListing(ClientWrapper):
    """ListObjectsV2 is refused, as for an access key without s3:ListBucket."""

    async def list_objects_v2(self, **params: Any) -> dict[str, Any]:
        self.list_calls += 1
        raise denied("ListObjectsV2")


class SmallPages(ClientWrapper):
    """ListObjectsV2 returns two keys per page, so that continuation tokens are used."""

    async def list_objects_v2(self, **params: Any) -> dict[str, Any]:
        self.list_calls += 1
        return await self.client.list_objects_v2(MaxKeys=2, **params)  # type: ignore[no-any-return]


class WrappedS3Source(S3Source):
    """An S3Source whose client is wrapped by ``wrap`` (e.g. RefusesListing)."""

    def __init__(self, *args: Any, wrap: type[ClientWrapper], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wrap = wrap
        self.wrapped: ClientWrapper | None = None

    async def _s3(self) -> Any:
        if self.wrapped is None:
            self.wrapped = self.wrap(await super()._s3())
        return self.wrapped


class FlakyProxy:
    """A loopback HTTP proxy to moto that misbehaves on purpose.

    The first ``fail_first`` requests are answered 503 SlowDown without reaching moto; the
    first forwarded response is cut (connection closed) after ``cut_after`` bytes.
    """

    ERROR = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
    SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(ERROR), ERROR))

    def __init__(self, upstream: str, *, fail_first: int = 0, cut_after: int | None = None):
        self.upstream_port = int(upstream.rsplit(":", 1)[1])
        self.fail_first, self.cut_after = fail_first, cut_after
        self.heads: list[str] = []  # every request head received, in order

    async def __aenter__(self) -> FlakyProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    def gets(self, key: str) -> list[str]:
        return [head for head in self.heads if head.startswith(f"GET /{key}")]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._responses(up_reader, writer))
                await self._requests(reader, writer, up_writer)
        finally:
            writer.close()
            up_writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        up_writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")  # our requests carry no body
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            self.heads.append(head.decode("latin-1"))
            if self.fail_first > 0:
                self.fail_first -= 1
                writer.write(self.SLOW_DOWN)
            else:
                up_writer.write(head)
        up_writer.close()

    async def _responses(self, up_reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        budget, self.cut_after = self.cut_after, None
        with contextlib.suppress(ConnectionError):
            while data := await up_reader.read(1 << 16):
                if budget is not None and len(data) >= budget:
                    writer.write(data[:budget])
                    await writer.drain()
                    break
                budget = None if budget is None else budget - len(data)
                writer.write(data)
                await writer.drain()
        writer.close()


# -- a local directory -----------------------------------------------------------------------


def write_export(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


async def test_local_lists_revisions_by_number_and_ignores_other_files(tmp_path: Path) -> None:
    write_export(tmp_path, {name: b"x" for name in IGNORED})
    write_export(tmp_path, {"revisions/10.json": b"ten\n", "revisions/2.json": b"2\n",
                            "revisions/1.json": b""})
    source = open_source(str(tmp_path), endpoint_url=None, access_key=None, secret_key=None,
                         min_revision=1, lookahead=5)
    assert isinstance(source, LocalSource)
    assert await source.revisions() == [Revision(1, 0), Revision(2, 2), Revision(10, 4)]


async def test_local_without_revisions_directory_is_empty(tmp_path: Path) -> None:
    assert await LocalSource(str(tmp_path)).revisions() == []


async def test_local_streams_from_an_offset_in_chunks(tmp_path: Path) -> None:
    data = payload(10_000)
    write_export(tmp_path, {"revisions/3.json": data, "revisions/4.json": b""})
    source = LocalSource(str(tmp_path), chunk_size=1024)
    whole = await collect(source, Revision(3, len(data)))
    assert b"".join(whole) == data and {len(chunk) for chunk in whole[:-1]} == {1024}
    assert b"".join(await collect(source, Revision(3, len(data)), 4321)) == data[4321:]
    assert await collect(source, Revision(3, len(data)), len(data)) == []
    assert await collect(source, Revision(4, 0)) == []
    with pytest.raises(TerminalError, match="shrank"):
        await collect(source, Revision(3, len(data)), len(data) + 1)


@pytest.mark.parametrize("where", ["missing", "file"])
async def test_local_root_that_is_not_a_directory_is_terminal(tmp_path: Path, where: str) -> None:
    location = tmp_path / where
    if where == "file":
        location.write_text("not a directory")
    with pytest.raises(TerminalError, match="source directory .* (does not exist|is not a dir)"):
        open_source(str(location), endpoint_url=None, access_key=None, secret_key=None,
                    min_revision=1, lookahead=5)


@pytest.mark.parametrize("location", ["gs://bucket", "s3://", "s3:///prefix", "s3://b?x"])
def test_unusable_locations_are_terminal(location: str) -> None:
    with pytest.raises(TerminalError, match="s3://bucket"):
        open_source(location, endpoint_url=None, access_key=None, secret_key=None,
                    min_revision=1, lookahead=5)


@pytest.mark.parametrize(("location", "prefix"), [
    ("s3://exports", ""), ("s3://exports/", ""), ("s3://exports/km/2024", "km/2024/"),
    ("s3://exports/km/", "km/")])
def test_s3_locations(location: str, prefix: str) -> None:
    source = open_source(location, endpoint_url=None, access_key=None, secret_key=None,
                         min_revision=1, lookahead=5)
    assert isinstance(source, S3Source)
    assert (source.bucket, source.prefix) == ("exports", prefix)


# -- S3, through moto's server ---------------------------------------------------------------


async def test_s3_lists_revisions_under_prefix_sorted_by_number(s3_bucket: S3Bucket) -> None:
    for name in IGNORED + ["revisions/99.json"]:  # 99 lies outside the prefix
        s3_bucket.put(name, b"x")
    for name in IGNORED:
        s3_bucket.put(f"km/{name}", b"x")
    for number in (10, 2, 1, 33):
        s3_bucket.put(f"km/revisions/{number}.json", b"y" * number)
    async with s3_source(s3_bucket, "km/") as source:
        assert await source.revisions() == [Revision(n, n) for n in (1, 2, 10, 33)]
    async with s3_source(s3_bucket, "km/", cls=WrappedS3Source, wrap=SmallPages) as paged:
        assert await paged.revisions() == [Revision(n, n) for n in (1, 2, 10, 33)]
        assert paged.wrapped is not None and paged.wrapped.list_calls >= 3


async def test_s3_streams_whole_objects_and_from_an_offset(s3_bucket: S3Bucket) -> None:
    data = b"".join(b'{"_p":"%d","_t":1}\n' % i for i in range(1000))
    s3_bucket.put("revisions/1.json", data)
    async with s3_source(s3_bucket) as source:
        [revision] = await source.revisions()
        assert b"".join(await collect(source, revision)) == data
        assert b"".join(await collect(source, revision, 12_345)) == data[12_345:]
        assert b"".join(await collect(source, revision, len(data) - 1)) == data[-1:]
        assert await collect(source, revision, len(data)) == []


async def test_s3_streams_a_large_object_in_bounded_chunks(s3_bucket: S3Bucket) -> None:
    data = payload(5 * MIB + 12_345)
    s3_bucket.put("revisions/7.json", data)
    async with s3_source(s3_bucket) as source:
        chunks = await collect(source, Revision(7, len(data)))
        assert b"".join(chunks) == data
        assert [len(chunk) for chunk in chunks] == [MIB] * 5 + [12_345]


async def test_s3_empty_object_yields_nothing_without_a_request(s3_bucket: S3Bucket) -> None:
    s3_bucket.put("revisions/1.json", b"")
    async with s3_source(s3_bucket) as source:
        assert await source.revisions() == [Revision(1, 0)]
        assert await collect(source, Revision(1, 0)) == []
    # A bucket that does not exist proves that no request is made.
    async with S3Source("no-such-bucket-anywhere", endpoint_url=s3_bucket.endpoint_url,
                        access_key=ACCESS_KEY, secret_key=SECRET_KEY) as nowhere:
        assert await collect(nowhere, Revision(1, 0)) == []


async def test_s3_missing_bucket_is_terminal_and_names_no_secret(s3_bucket: S3Bucket) -> None:
    missing = s3_bucket.bucket + "-missing"
    source = open_source(f"s3://{missing}/km", endpoint_url=s3_bucket.endpoint_url,
                         access_key=ACCESS_KEY, secret_key=SECRET_KEY, min_revision=1,
                         lookahead=3)
    try:
        with pytest.raises(TerminalError) as listing:
            await source.revisions()
        with pytest.raises(TerminalError) as reading:
            await collect(source, Revision(1, 10))
    finally:
        await source.aclose()
    for error in (listing.value, reading.value):
        message = str(error)
        assert missing in message and "bucket does not exist" in message, message
        assert SECRET_KEY not in message and ACCESS_KEY not in message
        assert error.__cause__ is None and error.__suppress_context__


async def test_s3_missing_object_is_terminal(s3_bucket: S3Bucket) -> None:
    async with s3_source(s3_bucket) as source:
        with pytest.raises(TerminalError, match=r"revisions/4\.json.*object does not exist"):
            await collect(source, Revision(4, 10))


async def test_s3_probes_when_listing_is_denied(s3_bucket: S3Bucket) -> None:
    for number in (1, 2, 3, 5, 9, 14):
        s3_bucket.put(f"km/revisions/{number}.json", b"z" * number)
    s3_bucket.put("km/revisions/0.json", b"no")

    async def probed(min_revision: int, lookahead: int, **options: Any) -> list[int]:
        async with s3_source(s3_bucket, "km/", cls=WrappedS3Source, wrap=RefusesListing,
                             min_revision=min_revision, lookahead=lookahead,
                             **options) as source:
            found = await source.revisions()
            assert found == await source.revisions()  # denial is remembered
            assert source.wrapped is not None and source.wrapped.list_calls == 1
            assert all(revision.size == revision.number for revision in found)
            return [revision.number for revision in found]

    assert await probed(1, 3) == [1, 2, 3, 5]  # 6, 7, 8 missing: stop before 9
    assert await probed(1, 4) == [1, 2, 3, 5, 9]  # 10..13 missing: stop before 14
    assert await probed(1, 5) == [1, 2, 3, 5, 9, 14]
    assert await probed(4, 1) == []  # 4 missing: stop at once
    assert await probed(4, 2) == [5]
    assert await probed(1, 4, probe_concurrency=1) == [1, 2, 3, 5, 9]
    assert await probed(1, 1, probe_concurrency=50) == [1, 2, 3]


async def test_s3_resumes_a_cut_body_with_a_range_request(s3_bucket: S3Bucket) -> None:
    data = payload(3 * MIB + 7)
    s3_bucket.put("revisions/2.json", data)
    key = f"{s3_bucket.bucket}/revisions/2.json"
    for start in (0, 1000):
        async with (FlakyProxy(s3_bucket.endpoint_url, cut_after=MIB + 333) as proxy,
                    s3_source(s3_bucket, endpoint_url=proxy.url) as source):
            chunks = await collect(source, Revision(2, len(data)), start)
        assert b"".join(chunks) == data[start:]
        first, resumed = proxy.gets(key)
        assert ("range: bytes=1000-" in first.lower()) == (start > 0)
        match = re.search(r"range: bytes=(\d+)-(\d+)\r\n", resumed.lower())
        assert match is not None and int(match.group(2)) == len(data) - 1
        assert start < int(match.group(1)) < start + MIB + 333  # from the last byte received


async def test_s3_retries_transient_errors_without_botocore_retrying(s3_bucket: S3Bucket) -> None:
    s3_bucket.put("revisions/1.json", b"hello\n")
    key = f"{s3_bucket.bucket}/revisions/1.json"
    async with (FlakyProxy(s3_bucket.endpoint_url, fail_first=2) as proxy,
                s3_source(s3_bucket, endpoint_url=proxy.url, attempts=3) as source):
        assert await collect(source, Revision(1, 6)) == [b"hello\n"]
    assert len(proxy.gets(key)) == 3
    async with (FlakyProxy(s3_bucket.endpoint_url, fail_first=10) as proxy,
                s3_source(s3_bucket, endpoint_url=proxy.url, attempts=4) as source):
        with pytest.raises(TransientError, match=r"reading s3://.*/revisions/1\.json.*SlowDown"):
            await collect(source, Revision(1, 6))
    assert len(proxy.gets(key)) == 4  # exactly our attempts: botocore did not retry too


def client_error(code: str, status: int, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("error", "kind", "text"), [
    (client_error("SlowDown", 503), TransientError, "SlowDown"),
    (client_error("InternalError", 500), TransientError, "InternalError"),
    (client_error("", 502), TransientError, "HTTP 502"),
    (client_error("ThrottlingException", 400), TransientError, "Throttling"),
    (client_error("NoSuchBucket", 404), TerminalError, "bucket does not exist"),
    (client_error("NoSuchKey", 404), TerminalError, "object does not exist"),
    (client_error("AccessDenied", 403), TerminalError, "access denied"),
    (client_error("403", 403), TerminalError, "access denied"),
    (client_error("InvalidAccessKeyId", 403, f"no such key {ACCESS_KEY}"), TerminalError,
     "AWS_ACCESS_KEY_ID"),
    (client_error("SignatureDoesNotMatch", 403), TerminalError, "AWS_SECRET_ACCESS_KEY"),
    (client_error("Weird", 400, f"secret {SECRET_KEY} key {ACCESS_KEY}"), TerminalError,
     r"Weird \(HTTP 400\): secret \*\*\* key \*\*\*"),
    (TimeoutError(), TransientError, r"timed out \(no answer in 60 s\)"),
    (ReadTimeoutError(endpoint_url="http://h:1/b"), TransientError, r"timed out \(no answer in 60 s\)"),
    (ConnectTimeoutError(endpoint_url="http://h:1/b"), TransientError,
     r"timed out \(no answer in 10 s\)"),
    (ConnectionResetError(f"reset {ACCESS_KEY}"), TransientError, "reset \\*\\*\\*"),
])
def test_s3_errors_are_translated(error: BaseException, kind: type[KmdbError], text: str) -> None:
    source = S3Source("b", access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    translated = source._translate(error, "reading s3://b/revisions/1.json")
    assert type(translated) is kind
    assert translated.args[0].startswith("reading s3://b/revisions/1.json: ")
    assert ACCESS_KEY not in str(translated) and SECRET_KEY not in str(translated)
    assert re.search(text, str(translated)), str(translated)


def test_s3_rejects_nonsense_probing_settings() -> None:
    with pytest.raises(TerminalError, match="lookahead"):
        S3Source("b", lookahead=0)
