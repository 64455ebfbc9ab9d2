"""SPEC section 3: alias groups and canonical identities, independent of order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kmdb_async.identity import AliasGraph, alias_pair, is_numeric


def canon(pairs: list[tuple[str, str]], names: list[str]) -> dict[str, str]:
    graph = AliasGraph()
    graph.link_all(pairs)
    return {n: graph.canonical(n) for n in names}


def test_numeric_means_ascii_digits_only() -> None:
    assert is_numeric("007") and is_numeric("5")
    assert not is_numeric("") and not is_numeric("5a") and not is_numeric("-5")
    assert not is_numeric("٣")  # Arabic-Indic digit: not ^[0-9]+$


def test_numeric_pair_links_nothing() -> None:
    assert canon([("5", "7")], ["5", "7"]) == {"5": "5", "7": "7"}


def test_group_without_numeric_takes_smallest_name_by_code_point() -> None:
    assert canon([("b", "c"), ("c", "B")], ["b", "c", "B"]) == {"b": "B", "c": "B", "B": "B"}


def test_chain_of_non_numerics_is_one_group_with_numeric_canonical() -> None:
    got = canon([("x", "y"), ("y", "z"), ("z", "42")], ["x", "y", "z", "42"])
    assert got == {"x": "42", "y": "42", "z": "42", "42": "42"}


def test_smallest_numeric_as_integer_wins() -> None:
    assert canon([("x", "10"), ("x", "9")], ["x"]) == {"x": "9"}


def test_equal_integers_prefer_the_shorter_text() -> None:
    assert canon([("x", "007"), ("x", "7")], ["x"]) == {"x": "7"}


def test_numeric_attached_to_two_groups_does_not_merge_them() -> None:
    got = canon([("x", "5"), ("5", "y")], ["x", "y", "5"])
    assert got == {"x": "5", "y": "5", "5": "5"}
    graph = AliasGraph()
    graph.link_all([("x", "5"), ("5", "y"), ("x", "3")])
    assert graph.canonical("x") == "3" and graph.canonical("y") == "5"  # still two groups


def test_numerics_never_join_through_a_group() -> None:
    graph = AliasGraph()
    graph.link_all([("x", "5"), ("x", "6")])
    assert graph.canonical("6") == "6" and graph.canonical("5") == "5"
    assert graph.canonical("x") == "5"


def test_unlinked_identity_is_its_own_canonical() -> None:
    assert AliasGraph().canonical("nobody") == "nobody"


def test_exact_strings_are_distinct_identities() -> None:
    assert canon([("Anon-X", "b")], ["anon-x"]) == {"anon-x": "anon-x"}


def test_alias_pair_prefers_numeric_then_smaller_name() -> None:
    assert alias_pair("abc", "12") == ("12", "abc")
    assert alias_pair("b", "a") == ("a", "b")
    assert alias_pair("10", "9") == ("9", "10")
    assert alias_pair("7", "007") == ("7", "007")


def test_link_returns_the_touched_group_with_all_names() -> None:
    graph = AliasGraph()
    assert graph.link("1", "2") is None
    graph.link("a", "1")
    group = graph.link("b", "a")
    assert group is not None
    assert sorted(group.names()) == ["1", "a", "b"] and group.canonical == "1"


names = st.sampled_from(["a", "b", "c", "d", "e", "1", "2", "01", "10", "x y", "é"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(names, names), max_size=25), st.randoms())
def test_canonical_map_does_not_depend_on_order(pairs: list[tuple[str, str]], rnd: random.Random) -> None:
    everyone = sorted({n for p in pairs for n in p})
    expected = canon(pairs, everyone)
    shuffled = [(b, a) if rnd.random() < 0.5 else (a, b) for a, b in pairs]
    rnd.shuffle(shuffled)
    assert canon(shuffled, everyone) == expected


def brute_force(pairs: list[tuple[str, str]], name: str) -> str:
    """SPEC section 3 read literally, by search over the links."""
    if is_numeric(name):
        return name
    group, frontier = {name}, [name]
    while frontier:
        n = frontier.pop()
        for a, b in pairs:
            for u, v in ((a, b), (b, a)):
                if u == n and not is_numeric(v) and v not in group:
                    group.add(v)
                    frontier.append(v)
    numerics = {v for a, b in pairs for u, v in ((a, b), (b, a)) if u in group and is_numeric(v)}
    if numerics:
        return min(numerics, key=lambda s: (int(s), len(s)))
    return min(group)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(names, names), max_size=25))
def test_union_find_agrees_with_the_literal_rule(pairs: list[tuple[str, str]]) -> None:
    everyone = sorted({n for p in pairs for n in p})
    assert canon(pairs, everyone) == {n: brute_force(pairs, n) for n in everyone}


def test_linked_says_whether_a_link_would_change_anything() -> None:
    graph = AliasGraph()
    assert graph.linked("1", "2")  # numeric~numeric never links
    assert not graph.linked("a", "b") and not graph.linked("a", "5")
    graph.link("a", "b")
    graph.link("b", "5")
    assert graph.linked("a", "b") and graph.linked("b", "a") and graph.linked("a", "5")
    assert not graph.linked("a", "6") and not graph.linked("a", "c")
    graph.link("c", "6")
    assert not graph.linked("a", "c")  # two groups: linking them changes the canonicals


def test_one_identity_linked_to_thousands_of_numerics_stays_fast_and_exact() -> None:
    graph = AliasGraph()
    for i in range(1, 20001):  # quadratic attach would take minutes here
        graph.link("undefined", str(i))
        graph.link("undefined", str(i))  # repeated aliases attach once
    group = graph.group("undefined")
    assert group is not None and len(group.numerics) == 20000
    assert graph.canonical("undefined") == "1" and graph.linked("undefined", "19999")


@given(st.lists(st.tuples(names, names), max_size=25), st.lists(names, max_size=10))
def test_canonicals_of_many_names_agree_with_canonical_of_each(
        pairs: list[tuple[str, str]], others: list[str]) -> None:
    """The batch form answers the names ever linked; every other name is its own canonical."""
    graph = AliasGraph()
    graph.link_all(pairs)
    asked = {n for p in pairs for n in p} | set(others)
    linked = graph.canonicals(asked)
    assert {n: linked.get(n, n) for n in asked} == {n: graph.canonical(n) for n in asked}
    assert all(graph.group(n) is not None for n in linked)
