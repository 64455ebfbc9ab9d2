"""The bounded users.id cache every store shares."""

from __future__ import annotations

from kmdb_async.store.base import IdCache


def test_the_cache_answers_what_it_holds_and_stays_within_its_bound() -> None:
    cache = IdCache(100)
    cache.add({f"u{i}": i for i in range(30)})
    found, missing = cache.lookup(["u1", "u29", "nobody"])
    assert found == {"u1": 1, "u29": 29} and missing == ["nobody"]
    for start in range(30, 1000, 10):
        cache.add({f"u{i}": i for i in range(start, start + 10)})
        assert len(cache) <= 100
    found, missing = cache.lookup([f"u{i}" for i in range(990, 1000)] + ["u1"])
    assert found == {f"u{i}": i for i in range(990, 1000)} and missing == ["u1"]  # evicted


def test_a_name_in_use_survives_the_older_generation_being_dropped() -> None:
    cache = IdCache(20)
    cache.add({"kept": 1})
    for start in range(0, 200, 5):
        cache.add({f"u{i}": i for i in range(start, start + 5)})
        assert cache.lookup(["kept"]) == ({"kept": 1}, [])  # each lookup renews it


def test_a_complete_cache_keeps_every_name_until_its_bound_is_reached() -> None:
    """While the cache holds a whole table, a hit is not renewed: renewing refilled the newer
    generation, and the cache dropped names (ending a first import's inserts without lookup)
    with far fewer than its bound of names held."""
    cache = IdCache(100)
    cache.complete = True
    for start in range(0, 99, 3):
        cache.add({f"u{i}": i for i in range(start, start + 3)})
        cache.lookup([f"u{i}" for i in range(start + 3)])  # every name seen so far, again
        assert cache.complete
    assert len(cache) == 99
    cache.add({"u99": 99, "u100": 100})  # past the bound: the older half goes
    assert not cache.complete and len(cache) < 100
    assert cache.lookup(["u100"]) == ({"u100": 100}, [])
