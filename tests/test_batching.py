"""SPEC section 5: batches hold whole seconds and cover contiguous byte ranges."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kmdb_async.batching import Batch, Batcher
from kmdb_async.records import Item, Record, Reject


def items(ts: list[int | None], width: int = 10) -> list[Item]:
    """One item per entry: a record at that second, or a reject for None; lines of ``width`` bytes."""
    out: list[Item] = []
    for i, t in enumerate(ts):
        offset = i * width
        if t is None:
            out.append(Reject(offset=offset, end=offset + width, reason="not JSON", raw="x"))
        else:
            out.append(Record(offset=offset, end=offset + width, t=t, p="u", p2=None, n="e",
                              props=[], truncated=0))
    return out


def run(ts: list[int | None], size: int, chunks: int = 1) -> list[Batch]:
    batcher = Batcher(revision=3, start=0, size=size)
    data = items(ts)
    step = max(1, len(data) // chunks)
    batches = []
    for i in range(0, len(data), step):
        batches += batcher.feed(data[i:i + step])
    return [*batches, batcher.flush(len(ts) * 10)]


def test_batch_closes_at_size_on_a_second_boundary() -> None:
    batches = run([1, 1, 2, 2, 3, 3], size=2)
    assert [[r.t for r in b.records] for b in batches] == [[1, 1], [2, 2], [3, 3]]


def test_same_second_burst_larger_than_size_stays_in_one_batch() -> None:
    batches = run([1] * 5 + [2] * 50 + [3], size=5)
    assert [len(b.records) for b in batches] == [5, 50, 1]
    assert {r.t for r in batches[1].records} == {2}


def test_rejects_travel_with_their_batch_and_do_not_split_a_second() -> None:
    batches = run([1, None, 1, 2], size=1)
    assert [[r.t for r in b.records] for b in batches] == [[1, 1], [2]]
    assert len(batches[0].rejects) == 1 and batches[0].rejects[0].offset == 10


def test_last_batch_is_marked_and_stretched_to_the_bytes_read() -> None:
    batcher = Batcher(revision=1, start=100, size=10)
    assert batcher.feed([]) == []
    last = batcher.flush(160)  # e.g. blank lines at the end of the object
    assert (last.start, last.end, last.last, last.records) == (100, 160, True, [])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 5)), max_size=60),
       st.integers(1, 8), st.integers(1, 6))
def test_batches_are_contiguous_and_never_split_a_run_of_one_second(
        ts: list[int | None], size: int, chunks: int) -> None:
    batches = run(ts, size, chunks)
    assert batches[0].start == 0 and batches[-1].end == len(ts) * 10
    for a, b in zip(batches, batches[1:], strict=False):
        assert a.end == b.start
        if a.records and b.records:
            assert a.records[-1].t != b.records[0].t
    flat = [r for b in batches for r in [*b.records]]
    assert [r.t for r in flat] == [t for t in ts if t is not None]
    assert sum(len(b.rejects) for b in batches) == ts.count(None)
    assert [b.last for b in batches] == [False] * (len(batches) - 1) + [True]
