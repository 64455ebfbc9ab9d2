"""(d) of run.py: the importer a user writes in an afternoon, as a baseline.

json.loads per line, one connection, executemany in batches of 1000, dict caches for users and
keys, no dealiasing, into the same schema as kmdb-async (created by ``kmdb-async flush``).

    python benchmarks/naive.py EXPORT_DIR DATABASE
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pymysql

BATCH = 1000


def main() -> None:
    root, database = Path(sys.argv[1]), sys.argv[2]
    subprocess.run([sys.executable, "-m", "kmdb_async", "flush", "--yes", "--database-url",
                    f"mysql://root@127.0.0.1:3306/{database}"], check=True, capture_output=True)
    conn = pymysql.connect(host="127.0.0.1", user="root", database=database, charset="utf8mb4")
    cur = conn.cursor()
    users: dict[str, int] = {}
    keys: dict[str, int] = {}

    def intern(cache: dict[str, int], table: str, column: str, name: str) -> int:
        if name not in cache:
            cur.execute(f"INSERT IGNORE INTO `{table}` (`{column}`) VALUES (%s)", (name,))
            cur.execute(f"SELECT id FROM `{table}` WHERE `{column}` = %s", (name,))
            cache[name] = cur.fetchone()[0]
        return cache[name]

    events: list[tuple[object, ...]] = []
    props: list[tuple[object, ...]] = []
    next_id = 1
    for path in sorted((root / "revisions").iterdir(), key=lambda p: int(p.stem)):
        for raw in path.open("rb"):
            try:
                record = json.loads(raw)
                p, t = str(record.pop("_p")), int(float(record.pop("_t")))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
            uid = intern(users, "users", "name", p)
            if "_p2" in record:
                intern(users, "users", "name", str(record["_p2"]))
                continue
            event_id = None
            if "_n" in record:
                event_id = next_id
                next_id += 1
                name = intern(keys, "keys", "string", str(record.pop("_n")))
                events.append((event_id, stamp, name, uid, uid))
            for key, value in record.items():
                text = value if isinstance(value, str) or value is None else json.dumps(value)
                props.append((next_id, stamp, uid, uid, event_id, intern(keys, "keys", "string", key), text))
                next_id += 1
            if len(events) + len(props) >= BATCH:
                flush(cur, events, props)
                conn.commit()
    flush(cur, events, props)
    conn.commit()


Rows = list[tuple[object, ...]]


def flush(cur: pymysql.cursors.Cursor, events: Rows, props: Rows) -> None:
    if events:
        cur.executemany("INSERT INTO events (id, t, n, user_id, origin_user_id) "
                        "VALUES (%s,%s,%s,%s,%s)", events)
    if props:
        cur.executemany("INSERT INTO properties (id, t, user_id, origin_user_id, event_id, `key`, value) "
                        "VALUES (%s,%s,%s,%s,%s,%s,%s)", props)
    events.clear()
    props.clear()


if __name__ == "__main__":
    main()
