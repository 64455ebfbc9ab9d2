"""Faults on loopback, for the fault tests and benchmarks/kill_points.py.

- `TcpProxy`: forwards a port to MariaDB (or anything); `pause()` cuts every connection and
  refuses new ones until `resume()`, on the same port: the server "unreachable for a while";
  `freeze()` keeps every connection open but moves no byte more: a hung server or a network
  that drops everything.
- `S3FaultProxy`: an HTTP proxy in front of moto that answers 500 / 503 / SlowDown, delays
  the first byte, or cuts a response in the middle of an object, on a per-object plan.
- `BlackHole`: accepts connections and never answers (reads and drops what it is sent),
  the server that hangs a client without a bound on its waits.
- `RedisServer`: a private `redis-server` on a free port (FLUSHALL and restarts hit nobody
  else), stopped and started again on the same port.

Each proxy runs its own asyncio loop in a daemon thread, so it serves a subprocess import as
well as an in-process one; every wait is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

TIMEOUT = 10.0  # seconds: bound of every start, stop and single I/O wait here


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LoopbackServer:
    """A TCP server on 127.0.0.1 in a thread of its own; subclasses define `handle`."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(TIMEOUT)

    def start(self) -> LoopbackServer:
        self._thread.start()
        self.resume()
        return self

    def resume(self) -> None:
        """Listen (again) on the same port."""

        async def listen() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                      reuse_address=True)

        self._call(listen())

    def pause(self) -> None:
        """Stop listening and cut every open connection."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()

        self._call(close())

    def stop(self) -> None:
        if self._thread.is_alive():
            self.pause()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(TIMEOUT)
            self._loop.close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self.handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _upstream(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        self._writers.add(up_writer)
        return up_reader, up_writer


class BlackHole(LoopbackServer):
    """Accepts every connection, keeps it open and never sends a byte; `connections` counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while await reader.read(1 << 16):  # until the client closes (or `stop` cuts it)
            pass


class TcpProxy(LoopbackServer):
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port`, byte for byte."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.connections = 0  # connections accepted since start
        self.frozen = False  # new connections are accepted and left silent
        self.sent_up = 0  # bytes forwarded to the upstream server since start

    def freeze(self, new_connections: bool = True) -> None:
        """Stop reading on every open connection (both ways: the client's writes back up, no
        answer reaches it), keeping them open; with ``new_connections`` later ones are left
        silent too, else they are forwarded as usual."""

        async def freeze() -> None:
            self.frozen = new_connections
            for writer in self._writers:
                writer.transport.pause_reading()

        self._call(freeze())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.frozen:
            writer.transport.pause_reading()
            await reader.read()  # nothing comes: until `stop` cuts the connection
            return
        up_reader, up_writer = await self._upstream(self.upstream_port)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(reader, up_writer, upstream=True))
                tg.create_task(self._pipe(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()


    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    upstream: bool = False) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(1 << 16):
                writer.write(data)
                self.sent_up += len(data) if upstream else 0
                await writer.drain()
        writer.transport.abort()


def _s3_error(status: int, reason: str, code: str) -> bytes:
    body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
            f"<Message>injected by the test proxy</Message></Error>").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


#: What the S3 proxy can do to one request.
ANSWERS = {
    "500": _s3_error(500, "Internal Server Error", "InternalError"),
    "503": _s3_error(503, "Service Unavailable", "ServiceUnavailable"),
    "slowdown": _s3_error(503, "Slow Down", "SlowDown"),
}
FAULTS = (*ANSWERS, "slow", "cut", "slow+cut", "stall")
_OBJECT_GET = re.compile(r"GET /[^/?\s]+/(\S*revisions/\d+\.json) ")
_RANGE = re.compile(r"^range: bytes=(\d+)-", re.I | re.M)
_CONNECTION = re.compile(r"^connection:[^\r\n]*\r\n", re.I | re.M)


class S3FaultProxy(LoopbackServer):
    """HTTP proxy to moto; the `plan` says what happens to the n-th GET of each object.

    ``plan(key, n)`` returns None (forward untouched) or one of `FAULTS`: an error answer
    (500, 503, slowdown) that never reaches moto, a first byte delayed by ``slow_seconds``
    ("slow"), the response cut off half-way through its body ("cut"; "slow+cut": both), or
    its first half sent and then nothing, the connection kept open ("stall").
    Listing requests get the plan's answer for key "" too. One request per connection.
    """

    def __init__(self, upstream: str, plan: Callable[[str, int], str | None],
                 slow_seconds: float = 1.0) -> None:
        super().__init__()
        self.upstream_port = int(upstream.rsplit(":", 1)[1])
        self.plan, self.slow_seconds = plan, slow_seconds
        self.injected: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()  # requests seen per object key ("" = listing)
        self.resumes: list[tuple[int, int]] = []  # (byte where a cut left off, next range start)
        self._cut_at: dict[str, int] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)).decode("latin-1")
        match = _OBJECT_GET.match(head)
        key = match.group(1) if match else ("" if head.startswith("GET ") else None)
        fault = None
        if key is not None:
            fault = self.plan(key, self.gets[key])
            self.gets[key] += 1
        start = int(r.group(1)) if (r := _RANGE.search(head)) else 0
        if key and key in self._cut_at:
            self.resumes.append((self._cut_at.pop(key), start))
        if fault in ANSWERS:
            self.injected[fault] += 1
            writer.write(ANSWERS[fault])
            await writer.drain()
            return
        # One request per upstream connection: the response ends where moto closes it.
        request = _CONNECTION.sub("", head)[:-2] + "Connection: close\r\n\r\n"
        up_reader, up_writer = await self._upstream(self.upstream_port)
        up_writer.write(request.encode("latin-1"))
        await up_writer.drain()
        response = await asyncio.wait_for(up_reader.read(), TIMEOUT)
        self._writers.discard(up_writer)
        up_writer.transport.abort()
        headers, _, body = response.partition(b"\r\n\r\n")
        # The client must not reuse this connection: we close it after one response.
        headers = _CONNECTION.sub("", headers.decode("latin-1") + "\r\n").encode("latin-1")
        headers += b"Connection: close"
        if fault is not None and "slow" in fault:
            self.injected["slow"] += 1
            await asyncio.sleep(self.slow_seconds)
        if fault is not None and "cut" in fault and match:
            kept = len(body) // 2
            self.injected["cut"] += 1
            self._cut_at[key] = start + kept  # type: ignore[index]
            body = body[:kept]
        if fault == "stall" and match:
            self.injected["stall"] += 1
            writer.write(headers + b"\r\n\r\n" + body[:len(body) // 2])
            await writer.drain()
            while await reader.read(1 << 16):  # silent until the client gives up
                pass
            return
        writer.write(headers + b"\r\n\r\n" + body)
        await writer.drain()


class RedisServer:
    """A private redis-server on a free loopback port (no persistence)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, new_port_if_taken: bool = True) -> RedisServer:
        """Start the server; if another process took its port meanwhile (a test run in
        parallel), on another free port, unless ``new_port_if_taken`` is false (a restart)."""
        for _ in range(5):
            if self._start():
                return self
            if not new_port_if_taken:
                break
            self.port = free_port()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def _start(self) -> bool:
        binary = shutil.which("redis-server") or "redis-server"
        self.process = process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        # Ours answers PING and serves our folder; one that exits could not bind the port.
        while process.poll() is None:
            if self.cli("CONFIG", "GET", "dir").split()[-1:] == [str(self.folder.resolve())]:
                return True
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)
        self.process = None
        return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(TIMEOUT)
            self.process = None

    def restart(self, down_for: float) -> None:
        self.stop()
        time.sleep(down_for)
        self.start(new_port_if_taken=False)

    def cli(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                              text=True, timeout=TIMEOUT)
        return done.stdout.strip()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
