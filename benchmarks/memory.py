"""Peak RSS of `kmdb-async import DIR` as the export grows: it must not grow with it.

    python benchmarks/memory.py 1000000 5000000 [--json memory.json]

For each size: a fresh export (tests/exportgen.py, seed 42, 8 revisions per million lines), a
fresh MariaDB database, one import in a subprocess with default settings; prints lines/s and
the subprocess's peak RSS, and the ratio of the largest to the smallest peak.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from run import fresh_db, kmdb_import, row_count, server_settings

from tests.exportgen import write_export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("sizes", type=int, nargs="+", help="lines per export")
    parser.add_argument("--json", type=Path, default=Path("memory.json"))
    args = parser.parse_args()
    results = []
    for lines in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="kmdb-memory-"))
        try:
            write_export(work / "export", lines, revisions=max(8, 8 * lines // 1_000_000), seed=42)
            wall, rss, _ = kmdb_import(str(work / "export"), fresh_db("kmdb_bench_memory"), {})
            rows = sum(row_count("kmdb_bench_memory").values())
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results.append({"lines": lines, "rows": rows, "wall_s": wall, "lines_per_s": lines / wall,
                        "peak_rss_mb": rss})
        print(f"{lines:>10,} lines {rows:>11,} rows {wall:8.1f} s {lines / wall:9,.0f} lines/s "
              f"{rss:6.0f} MB peak RSS", flush=True)
    peaks = [r["peak_rss_mb"] for r in results]
    print(f"largest / smallest peak RSS: {max(peaks) / min(peaks):.2f}; server: {server_settings()}")
    args.json.write_text(json.dumps({"server": server_settings(), "results": results}, indent=2,
                                    default=str))


if __name__ == "__main__":
    main()
