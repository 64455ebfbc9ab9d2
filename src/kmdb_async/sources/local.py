"""Revisions in a local directory (the layout of an export after ``aws s3 sync``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from functools import partial
from typing import BinaryIO

from kmdb_async.errors import TerminalError
from kmdb_async.sources import (
    DEFAULT_CHUNK_SIZE,
    REVISIONS_DIR,
    Revision,
    check_start,
    revision_key,
    revision_number,
)
from kmdb_async.tasks import in_thread


class LocalSource:
    """Revisions under ``root/revisions/``; file reads run in worker threads."""

    def __init__(self, root: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        """``root`` is the export directory; ``chunk_size`` is the read size in bytes."""
        self.root = root
        self._chunk_size = chunk_size

    async def revisions(self) -> list[Revision]:
        """Every ``revisions/<N>.json`` file under the root, sorted by N."""
        return await in_thread(self._list)

    def _list(self) -> list[Revision]:
        directory = os.path.join(self.root, REVISIONS_DIR)
        found: list[Revision] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    number = revision_number(entry.name)
                    if number is not None and entry.is_file():
                        found.append(Revision(number, entry.stat().st_size))
        except FileNotFoundError:
            # An export that has no revision yet is empty, not broken.
            return []
        except OSError as exc:
            raise TerminalError(f"cannot list {directory!r}: {exc.strerror}") from exc
        found.sort(key=lambda revision: revision.number)
        return found

    async def stream(self, revision: Revision, start: int) -> AsyncIterator[bytes]:
        """The file's bytes from offset ``start`` (bytes) to its current end, in chunks."""
        check_start(revision, start)
        if start == revision.size:
            return
        path = os.path.join(self.root, revision_key(revision.number))
        # Open and close inline: a cancelled thread hop would leak the file object.
        file = self._open(path, start)
        try:
            while chunk := await in_thread(partial(self._read, file, path)):
                yield chunk
        finally:
            file.close()

    def _open(self, path: str, start: int) -> BinaryIO:
        try:
            file = open(path, "rb")  # closed by the finally of stream()
        except OSError as exc:
            raise TerminalError(f"cannot open {path!r}: {exc.strerror}") from exc
        file.seek(start)
        return file

    def _read(self, file: BinaryIO, path: str) -> bytes:
        try:
            return file.read(self._chunk_size)
        except OSError as exc:
            raise TerminalError(f"cannot read {path!r}: {exc.strerror}") from exc

    async def aclose(self) -> None:
        """Nothing to release: every file is closed by the stream that opened it."""

    async def __aenter__(self) -> LocalSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
