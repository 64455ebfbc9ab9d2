"""Realistic KissMetrics exports for tests and benchmarks (deterministic for a seed).

Shape: ~70% events with 0-6 properties, ~25% property sets, ~5% aliases; anonymous and
numeric identities (about ``users_per_line`` distinct users per line), a few hundred event names
and property keys, bursts of many lines in one second, some out-of-order times, and a little
dirt (octal escapes, invalid UTF-8, CRLF, blank lines, broken lines) when ``dirty`` is set.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

T0 = 1_325_376_000  # 2012-01-01 UTC


def lines(count: int, seed: int = 1, users_per_line: float = 0.2, dirty: bool = True,
          t0: int = T0) -> Iterator[bytes]:
    """``count`` export lines (bytes, each ending in a newline)."""
    rnd = random.Random(seed)
    n_users = max(10, int(count * users_per_line))
    events = [f"Event {i}" for i in range(300)]
    keys = [f"prop_{i}" for i in range(300)]
    t = t0

    def identity() -> str:
        u = rnd.randrange(n_users)
        return str(u) if u % 4 == 0 else f"anon-{u:x}"

    i = 0
    while i < count:
        burst = rnd.random() < 0.01
        for _ in range(rnd.randint(20, 60) if burst else 1):
            if i >= count:
                break
            i += 1
            when = t - rnd.randrange(86400 * 30) if rnd.random() < 0.03 else t
            roll = rnd.random()
            if dirty and roll < 0.004:
                octal = b'{"_p":"caf\\303\\251","_t":%d,"k":"\\351t\\303\\251"}\r\n' % when
                yield rnd.choice([b"not json at all\n", b'{"_p": "x"}\n', b"[1,2]\n", octal, b"\n"])
                continue
            if roll < 0.05:
                a = identity()
                record: dict[str, object] = {"_p": a, "_p2": f"user{rnd.randrange(n_users)}@example.com"
                                             if rnd.random() < 0.7 else identity(), "_t": when}
            elif roll < 0.30:
                record = {"_p": identity(), "_t": when}
                for _ in range(rnd.randint(1, 4)):
                    record[rnd.choice(keys)] = rnd.choice(["a", "b", 3, 2.5, True, None, "x" * 300])
            else:
                record = {"_n": rnd.choice(events), "_p": identity(), "_t": when}
                for _ in range(rnd.randint(0, 6)):
                    record[rnd.choice(keys)] = rnd.choice(
                        ["https://example.com/" + "p" * rnd.randrange(300), "fr", 7, 0.5, False])
            yield json.dumps(record, separators=(",", ":")).encode() + b"\n"
        t += rnd.randint(0, 3)


def write_export(root: Path, count: int, revisions: int = 4, seed: int = 1, **kw: object) -> list[Path]:
    """Write ``count`` lines split over ``revisions`` files ``root/revisions/N.json``."""
    folder = root / "revisions"
    folder.mkdir(parents=True, exist_ok=True)
    all_lines = list(lines(count, seed=seed, **kw))  # type: ignore[arg-type]
    per = max(1, -(-len(all_lines) // revisions))
    paths = []
    for n in range(revisions):
        path = folder / f"{n + 1}.json"
        path.write_bytes(b"".join(all_lines[n * per:(n + 1) * per]))
        paths.append(path)
    return paths


def main() -> None:
    """``python -m tests.exportgen DIR [--lines N] [--revisions R] [--seed S]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a realistic KissMetrics export.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--lines", type=int, default=3000)
    parser.add_argument("--revisions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    write_export(args.root, args.lines, revisions=args.revisions, seed=args.seed)


if __name__ == "__main__":
    main()
