"""Hand-built SQL of MariaDB/MySQL row writes, and its size (bytes, names per statement).

Rows go in as multi-row INSERT text written here (three times faster than the driver's
generic parameter escaping). A statement must be smaller than the server's max_allowed_packet
(16 MiB by default, often 1 MiB), which counts bytes: a value of 65,535 emoji is 256 KiB of
UTF-8, so statements are cut by their bytes, and sizes of names are bounded in bytes too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pymysql.converters import escape_string

from ..errors import TerminalError
from ..records import MAX_NAME, Record
from ..resolver import EventRow, PropertyRow
from .schema import EVENTS, PROPERTIES

LOOKUP_CHUNK = 1000  # names per IN (...) lookup, and alias pairs per upsert
STATEMENT_BYTES = 4 << 20  # bytes of a bulk insert at most (max_allowed_packet is 16 MiB by default)
UPSERT_NOTHING = " ON DUPLICATE KEY UPDATE `id` = `id`"
EVENTS_HEAD = f"INSERT INTO `{EVENTS}` (`id`, `t`, `n`, `user_id`, `origin_user_id`) VALUES "
PROPERTIES_HEAD = (f"INSERT INTO `{PROPERTIES}` (`id`, `t`, `user_id`, `origin_user_id`, `event_id`, "
                   "`key`, `value`) VALUES ")
# Bytes of SQL at most: a name quoted in a list (4 bytes a character, escaped or not: escaping
# doubles only one-byte characters), an alias pair in links.upsert_aliases' WHERE, and a property
# row without its value (five ids of at most 20 digits, t, NULL, punctuation).
NAME_SQL = 4 * MAX_NAME + 8
PAIR_SQL = 2 * NAME_SQL + 40
ROW_SQL = 160


def too_wide(room: int, packet: int, record: Record) -> str | None:
    """Why ``record`` cannot be stored (a property value larger than ``room`` bytes of SQL,
    quoted and escaped), or None."""
    for key, value in record.props:
        if value is not None and 4 * len(value) + 2 > room:  # 4 bytes a character at most
            size = len(escape_string(value).encode()) + 2
            if size > room:
                row = size + ROW_SQL + len(PROPERTIES_HEAD) + len(UPSERT_NOTHING) + 2
                return (f"row of {row:,} bytes in its INSERT (property {key!r}) exceeds the "
                        f"server's max_allowed_packet of {packet:,} bytes")
    return None


def event_values(row: EventRow) -> str:
    """One events row as SQL: ids are ints and t a DATETIME literal, so nothing needs escaping."""
    eid, t, n, user, origin = row
    return f"({eid:d},'{t}',{n:d},{user:d},{origin:d})"


def property_values(row: PropertyRow) -> str:
    """One properties row as SQL; the value escaped for the (utf8mb4) connection."""
    pid, t, user, origin, event, key, value = row
    text = "NULL" if value is None else "'" + escape_string(value) + "'"
    return f"({pid},'{t}',{user},{origin},{'NULL' if event is None else event},{key},{text})"


def bulk_insert(head: str, values: Iterable[str], limit: int) -> Iterator[str]:
    """Multi-row INSERT statements (idempotent upserts) of at most ``limit`` bytes of UTF-8
    each; ``head`` is ASCII. A row that cannot fit alone is a TerminalError (the readers
    reject such lines: see ``too_wide``).

    Built by hand: three times faster than the driver's generic parameter escaping.
    """
    room = limit - len(head) - len(UPSERT_NOTHING)
    chunk: list[str] = []
    size = 0  # bytes of the rows in chunk and a comma after each
    for value in values:
        n = len(value) if value.isascii() else len(value.encode())  # isascii: O(1) in CPython
        if size + n > room:
            if n > room:
                raise TerminalError(f"a row of {n:,} bytes does not fit a statement of {limit:,}")
            yield head + ",".join(chunk) + UPSERT_NOTHING
            chunk, size = [], 0
        chunk.append(value)
        size += n + 1
    if chunk:
        yield head + ",".join(chunk) + UPSERT_NOTHING
