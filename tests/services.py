"""Throwaway MariaDB and Redis servers for a test session, when none answers.

On a fresh machine with the ``mariadb-server`` and ``redis-server`` packages installed but not
running, the tests start private instances: a temporary data directory, a free loopback port,
shut down and removed at the end of the session.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit


def answers(url: str) -> bool:
    """True when something accepts TCP connections at the URL's host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _program(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or next(
            (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None)
        if found:
            return found
    raise RuntimeError(f"none of {names} is installed: install mariadb-server and redis-server")


def _wait(url: str, process: subprocess.Popen[bytes], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the private {what} did not start")
        time.sleep(0.2)


def _stop_at_exit(process: subprocess.Popen[bytes], folder: Path) -> None:
    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(stop)


class PrivateMariaDB:
    """A throwaway ``mariadbd`` of a test's (or the session's) own, with server options of its
    choosing (``--max-allowed-packet=1M``, ``--init-connect=...``): a test that must change a
    server's global settings changes this one, never the user's. Root has no password."""

    def __init__(self, *options: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="kmdb-mariadb-"))
        self.port = 0  # chosen by start()
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL as root (append ``/database``)."""
        return f"mysql://root@127.0.0.1:{self.port}"

    def start(self) -> PrivateMariaDB:
        data = self.folder / "data"
        subprocess.run([_program("mariadb-install-db", "mysql_install_db"), "--no-defaults",
                        f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True)
        # The port is picked just before the server binds it. Another process (a test run in
        # parallel: pytest-xdist workers, another checkout's suite) may still take it first:
        # then this server exits, or the one answering is not ours; pick another port.
        for _ in range(5):
            self.port = free_port()
            self.process = subprocess.Popen(
                [_program("mariadbd", "mysqld"), "--no-defaults", f"--datadir={data}",
                 "--user=root", f"--socket={self.folder / 'mariadb.sock'}", f"--port={self.port}",
                 "--bind-address=127.0.0.1", f"--pid-file={self.folder / 'mariadb.pid'}",
                 "--skip-log-bin", "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=48M",
                 *self.options],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait(self.url, self.process, "MariaDB")
                if self._answering_is_ours(data):
                    return self
            except RuntimeError:
                if self.process.poll() is None:  # not an exit: it did not start in time
                    raise
            self._end_process()
        raise RuntimeError(f"the private MariaDB in {self.folder} found no free port")

    def _answering_is_ours(self, data: Path) -> bool:
        """Whether the server on our port serves our data directory (and is still running)."""
        import pymysql

        try:
            conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=10)
        except pymysql.Error:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@datadir")
                row = cur.fetchone()
        finally:
            conn.close()
        running = self.process is not None and self.process.poll() is None
        return running and row is not None and Path(row[0]).resolve() == data.resolve()

    def _end_process(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def stop(self) -> None:
        self._end_process()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PrivateMariaDB:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_mariadb(*options: str) -> str:
    """A private MariaDB on a free port for the whole session; returns its base URL."""
    server = PrivateMariaDB(*options).start()
    atexit.register(server.stop)
    return server.url


def start_redis() -> str:
    """A private Redis on a free port that keeps nothing on disk; returns its URL."""
    folder = Path(tempfile.mkdtemp(prefix="kmdb-redis-"))
    port = free_port()
    process = subprocess.Popen(
        [_program("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _stop_at_exit(process, folder)
    url = f"redis://127.0.0.1:{port}/0"
    _wait(url, process, "Redis")
    return url


class RedisProbe:
    """A minimal synchronous Redis client (RESP over a socket) for the suite's own checks:
    what keys a database holds and their serialized values, without a client library."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379),
                                              timeout=30)
        self._reader = self._sock.makefile("rb")
        if parts.password:
            self.call("AUTH", parts.password)
        self.call("SELECT", (parts.path.lstrip("/") or "0"))

    def call(self, *args: str | bytes) -> object:
        """One command; its reply (bytes, int, list or None); an error reply raises."""
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self) -> object:
        line = self._reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode(errors="replace"))
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._reader.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._reply() for _ in range(size)]
        raise RuntimeError(f"unexpected Redis reply {line!r}")

    def keys(self) -> list[bytes]:
        """Every key of the selected database (SCAN: never blocks the server)."""
        found: list[bytes] = []
        cursor = b"0"
        while True:
            reply = self.call("SCAN", cursor, "COUNT", "1000")
            assert isinstance(reply, list)
            cursor, batch = reply
            found += batch
            if cursor == b"0":
                return found

    def close(self) -> None:
        self._reader.close()
        self._sock.close()
