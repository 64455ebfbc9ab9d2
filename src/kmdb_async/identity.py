"""Alias groups and canonical identities (SPEC section 3). Pure: no I/O.

An identity is *numeric* when it is all ASCII digits. Alias links between non-numeric
identities form groups (union-find); a numeric identity linked to a member is *attached* to
that group, but numeric identities never join each other and never merge two groups. The
canonical identity of a group is its smallest attached numeric (as an integer; the shorter text
between equal integers), else its smallest member name by code point. The result depends only
on the set of links, never on their order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

_DIGITS = frozenset("0123456789")


def is_numeric(name: str) -> bool:
    """True for identities matching ``^[0-9]+$`` (ASCII digits only)."""
    return bool(name) and _DIGITS.issuperset(name)


def preference(name: str) -> tuple[int, int, int, str]:
    """Sort key: the smallest key is the preferred (canonical) identity."""
    if is_numeric(name):
        return (0, int(name), len(name), "")
    return (1, 0, 0, name)


def alias_pair(a: str, b: str) -> tuple[str, str]:
    """The two names of an alias record in preferred order (name1, name2) of the aliases table."""
    return (a, b) if preference(a) <= preference(b) else (b, a)


class AliasGroup:
    """Non-numeric members joined by aliases, the numerics attached to them, and the canonical."""

    __slots__ = ("canonical", "members", "numerics")

    def __init__(self, member: str) -> None:
        self.members: list[str] = [member]
        # A list while short (most groups hold one or two numerics; an empty set costs four
        # times an empty list), a set once long (one identity can be linked to thousands).
        self.numerics: list[str] | set[str] = []
        self.canonical = member

    def attach(self, numeric: str) -> None:
        """Attach a numeric identity (once)."""
        numerics = self.numerics
        if numeric in numerics:
            return
        if isinstance(numerics, list):
            if len(numerics) < 16:
                numerics.append(numeric)
                return
            self.numerics = numerics = set(numerics)
        numerics.add(numeric)

    def names(self) -> list[str]:
        """Every identity whose rows may point at this group: members and attached numerics."""
        return [*self.members, *self.numerics]


class AliasGraph:
    """Every alias link seen so far, answering canonical identities in O(α) per name."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._groups: dict[str, AliasGroup] = {}  # root member -> its group

    def __len__(self) -> int:
        """Number of non-numeric identities held in groups."""
        return len(self._parent)

    def _root(self, name: str) -> str:
        parent = self._parent
        root = name
        while parent[root] != root:
            root = parent[root]
        while parent[name] != root:  # path compression keeps lookups flat
            parent[name], name = root, parent[name]
        return root

    def _group_of(self, name: str) -> AliasGroup:
        if name not in self._parent:
            self._parent[name] = name
            self._groups[name] = AliasGroup(name)
        return self._groups[self._root(name)]

    def group(self, name: str) -> AliasGroup | None:
        """The group of a non-numeric identity, or None when it was never linked."""
        if name in self._parent:
            return self._groups[self._root(name)]
        return None

    def link(self, a: str, b: str) -> AliasGroup | None:
        """Record the alias ``a ~ b``; returns the group it touched (None for numeric~numeric)."""
        a_num, b_num = is_numeric(a), is_numeric(b)
        if a_num and b_num:
            return None
        if a_num or b_num:
            numeric, other = (a, b) if a_num else (b, a)
            group = self._group_of(other)
            group.attach(numeric)
            if preference(numeric) < preference(group.canonical):
                group.canonical = numeric
            return group
        ga, gb = self._group_of(a), self._group_of(b)
        if ga is gb:
            return ga
        if len(ga.members) < len(gb.members):  # union by size keeps trees shallow
            ga, gb = gb, ga
        root_b = self._root(gb.members[0])
        self._parent[root_b] = self._root(ga.members[0])
        del self._groups[root_b]
        ga.members.extend(gb.members)
        for numeric in gb.numerics:
            ga.attach(numeric)
        if preference(gb.canonical) < preference(ga.canonical):
            ga.canonical = gb.canonical
        return ga

    def linked(self, a: str, b: str) -> bool:
        """True when the alias ``a ~ b`` would change nothing: the graph already implies it
        (or both are numeric, which never links)."""
        a_num, b_num = is_numeric(a), is_numeric(b)
        if a_num and b_num:
            return True
        if a_num or b_num:
            numeric, other = (a, b) if a_num else (b, a)
            group = self.group(other)
            return group is not None and numeric in group.numerics
        group = self.group(a)
        return group is not None and group is self.group(b)

    def link_all(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Record many aliases (e.g. the ``aliases`` table at the start of a run)."""
        for a, b in pairs:
            self.link(a, b)

    def drop(self, group: AliasGroup) -> None:
        """Forget a group: its members are then unlinked as far as this graph knows (the
        alias cache reloads them from the ``aliases`` table when they come up again)."""
        parent = self._parent
        root = self._root(group.members[0])
        for member in group.members:
            del parent[member]
        del self._groups[root]

    def members(self) -> Iterator[str]:
        """Every non-numeric identity held in a group."""
        return iter(self._parent)

    def groups(self) -> Iterator[AliasGroup]:
        """Every group (each has at least two names)."""
        return iter(self._groups.values())

    def canonicals(self, names: Iterable[str]) -> dict[str, str]:
        """The canonical identity of each of ``names`` that was ever linked (the others are
        their own): one set intersection instead of a call per name."""
        groups, root = self._groups, self._root
        return {name: groups[root(name)].canonical for name in self._parent.keys() & names}

    def canonical(self, name: str) -> str:
        """The canonical identity of ``name`` (itself when numeric or never linked)."""
        if name in self._parent:
            return self._groups[self._root(name)].canonical
        return name
