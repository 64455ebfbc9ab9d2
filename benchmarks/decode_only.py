"""(e) of run.py: read and decode every revision (and batch it), no database.

    python benchmarks/decode_only.py EXPORT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from kmdb_async.batching import Batcher
from kmdb_async.records import LineDecoder
from kmdb_async.sources import revision_number

CHUNK = 1 << 20  # bytes per read, as the sources stream


def main() -> None:
    lines = 0
    for path in sorted((Path(sys.argv[1]) / "revisions").iterdir()):
        number = revision_number(path.name)
        if number is None:
            continue
        decoder, batcher = LineDecoder(), Batcher(number, 0, 1000)
        with path.open("rb") as file:
            while chunk := file.read(CHUNK):
                for batch in batcher.feed(decoder.feed(chunk)):
                    lines += len(batch.records) + len(batch.rejects)
        for batch in batcher.feed(decoder.flush()):
            lines += len(batch.records) + len(batch.rejects)
        last = batcher.flush(decoder.offset)
        lines += len(last.records) + len(last.rejects)
    print(lines)


if __name__ == "__main__":
    main()
