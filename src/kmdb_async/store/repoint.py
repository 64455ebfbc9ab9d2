"""Re-pointing: the UPDATEs that move a group's rows onto its canonical user (both stores).

A Repoint (resolver.py) names the users that were canonical before a batch linked the group,
and the new canonical. The statements find the rows to move through the ``user_id`` index
(``events`` and ``properties`` both have one), so they read only the rows that move plus one
index probe per former canonical: time and memory are linear in what moves, whatever the size
of the group. Many groups share one statement (a CASE on ``user_id`` picks each row's new
user), and statements are cut at ``limit`` bytes, so a group of any size is many bounded
statements, built one at a time. Ids are ints: nothing needs escaping, and the same SQL text
runs on MariaDB/MySQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..resolver import Repoint

ID_SQL = 22  # bytes of one id in a list at most: 20 digits, a comma, a space
WHEN_SQL = 2 * ID_SQL + 12  # "WHEN <id> THEN <id> "


def repoint_statements(table: str, repoints: Iterable[Repoint], limit: int) -> Iterator[str]:
    """UPDATEs of ``table`` applying ``repoints``, each at most ``limit`` bytes (limit >= 4 KiB).

    Rows pointing at a non-numeric former canonical all belong to its one group: they move on
    ``user_id`` alone. Rows pointing at a numeric one move only when their origin is a member
    of the group (the numeric's own rows, and those of other groups it is attached to, stay).
    """
    head = f"UPDATE `{table}` SET `user_id` = CASE `user_id` "
    room = limit - len(head) - 64
    case: list[str] = []
    where: list[str] = []
    size = 0
    numeric: list[Repoint] = []
    for rp in repoints:
        if rp.numerics:
            numeric.append(rp)
        for old in rp.names:
            if size + WHEN_SQL + ID_SQL > room:
                yield f"{head}{' '.join(case)} END WHERE `user_id` IN ({','.join(where)})"
                case, where, size = [], [], 0
            case.append(f"WHEN {old:d} THEN {rp.canonical_id:d}")
            where.append(f"{old:d}")
            size += WHEN_SQL + ID_SQL
    if case:
        yield f"{head}{' '.join(case)} END WHERE `user_id` IN ({','.join(where)})"
    for rp in numeric:
        yield from _numeric_statements(table, rp, limit)


def _numeric_statements(table: str, rp: Repoint, limit: int) -> Iterator[str]:
    """The rows of ``rp.members`` pointing at one of ``rp.numerics``: half a statement of
    each list at most (a group whose lists are longer takes several statements)."""
    per = max(1, (limit - 200) // 2 // ID_SQL)
    head = f"UPDATE `{table}` SET `user_id` = {rp.canonical_id:d} WHERE `user_id` IN "
    for i in range(0, len(rp.numerics), per):
        olds = ",".join(f"{n:d}" for n in rp.numerics[i : i + per])
        for j in range(0, len(rp.members), per):
            members = ",".join(f"{m:d}" for m in rp.members[j : j + per])
            yield f"{head}({olds}) AND `origin_user_id` IN ({members})"
