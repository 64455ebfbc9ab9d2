"""Exports shaped like real KissMetrics traffic, for the scale benchmark (streamed, seeded).

    python benchmarks/traffic.py DIR --lines 1000000 [--seed 42]   # writes DIR/<key>/, prints it

Unlike the tests' uniform generator (``tests/exportgen.py``), lines come from visitors:
- visits are **sessions** (about 5 lines, a few to tens of seconds apart), 32 open at once,
  interleaved in the order KissMetrics received them;
- most new visitors are anonymous and come **once** (a long tail of one-visit identities); a
  quarter become regulars who come back, the recent ones more often (new identities arrive
  all along, old ones drift away);
- regulars **sign up**: an alias links their anonymous identity to a new numeric one (ids
  counted up over time), used from then on; signed-up users log in from new devices (a new
  anonymous identity aliased to their numeric one);
- a few **very active** identities (2% of lines: staff accounts, a monitoring bot);
- one **giant alias group**: tens of thousands of anonymous identities aliased to the one
  name ``undefined`` (a site calling identify with an unset variable): 20,000 at 1M lines,
  40,000 from 2M lines on;
- a revision is ordered by receipt time, so ``_t`` is out of order: sessions delivered late
  (5%) carry times hours, days or (0.3%) months old;
- exact duplicate lines (0.2%), property sets (16% of session lines), events with 0-10
  properties, session openings with a referrer URL (a third longer than 255 characters),
  a little dirt (octal escapes, non-ASCII, 1 broken line in 20,000).

Output: ``history/revisions/N.json`` (the first ``lines`` lines) and ``full/revisions/N.json``
(the history plus ``cron_share`` more lines: its last revision grown, then new revisions);
revisions that did not change are hard links. ``meta.json``, written last, marks a complete
export and counts what it holds. An export is cached under a key of its parameters.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

VERSION = 1  # bump when the lines generated for the same parameters change
GIANT_HUB = b"undefined"
HOT = (b"1", b"42", b"monitoring-bot", b"qa-team")  # the very active identities
CHUNK = 8192  # lines written per write() call


@dataclass(frozen=True)
class Traffic:
    """What to generate; every field is part of the cache key."""

    lines: int  # lines of the history
    seed: int = 42
    cron_share: float = 0.10  # the cron run's new lines, as a share of the history's
    lines_per_revision: int = 0  # 0: min(125,000, lines // 8), so a history has >= 8 revisions
    lines_per_day: int = 250_000  # receipt rate: 20M lines span 80 days
    start: int = 1_388_534_400  # 2014-01-01 UTC, Unix seconds
    giant_group: int | None = None  # members of the giant alias group (None: min(40,000, lines // 50))

    @property
    def revision_lines(self) -> int:
        return self.lines_per_revision or max(1_000, min(125_000, self.lines // 8))

    @property
    def giant_members(self) -> int:
        return min(40_000, self.lines // 50) if self.giant_group is None else self.giant_group

    @property
    def total(self) -> int:
        return self.lines + int(self.lines * self.cron_share)

    def key(self) -> str:
        digest = hashlib.sha256(json.dumps([VERSION, asdict(self)], sort_keys=True).encode())
        return f"traffic-v{VERSION}-{self.lines}-s{self.seed}-{digest.hexdigest()[:10]}"


def _zipf_table(count: int, size: int, rnd: random.Random, skew: float = 1.1) -> list[int]:
    """``size`` indexes in [0, count) in Zipf proportions, shuffled: one draw is one lookup."""
    weights = [1 / (rank + 1) ** skew for rank in range(count)]
    return rnd.choices(range(count), weights, k=size)


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class Vocabulary:
    """Precomputed JSON fragments: event names, property blocks, referrers (built once)."""

    WORDS = ["home", "pricing", "blog", "signup", "checkout", "fr", "en-US", "free", "pro", "Paris",
             "café", "naïve", "日本語", "🚀 launch", 'say "hi"', "back\\slash", "Straße", "ok"]

    def __init__(self, rnd: random.Random) -> None:
        names = ["Visited Site", "Viewed Page", "Clicked Button", "Searched", "Added to Cart",
                 "Signed Up", "Logged In", "Purchased", "Viewed Product", "Shared", "Billed",
                 "Opened Email", "Clicked Email", "Started Trial", "Cancelled", "Upgraded"]
        names += [f"Event {i}" for i in range(len(names), 200)]
        self.events = [_json(n) for n in names]
        self.event_table = _zipf_table(len(names), 1 << 16, rnd)
        keys = ["Landing Page", "URL", "Campaign Name", "Campaign Source", "Plan", "Amount", "Browser",
                "Country", "Language", "Product", "Quantity", "Search Terms", "Button", "Page"]
        keys += [f"prop_{i}" for i in range(len(keys), 300)]
        key_table = _zipf_table(len(keys), 1 << 14, rnd)
        self.referrers = [self._referrer(rnd) for _ in range(1024)]

        def value() -> bytes:
            roll = rnd.random()
            if roll < 0.45:
                return _json(rnd.choice(self.WORDS))
            if roll < 0.65:
                return b"%d" % rnd.randrange(100_000)
            if roll < 0.75:
                return b"%.2f" % (rnd.random() * 500)
            if roll < 0.80:
                return rnd.choice((b"true", b"false"))
            if roll < 0.83:
                return b"null"
            if roll < 0.997:
                return _json(f"https://shop.example.com/p/{rnd.randrange(50_000)}?ref={rnd.randrange(99)}")
            return b'"caf\\303\\251 cr\\303\\250me"'  # octal escapes, as old exports have them

        def block(count: int) -> bytes:
            chosen = {keys[key_table[rnd.randrange(len(key_table))]] for _ in range(count)}
            return b"".join(b",%s:%s" % (_json(k), value()) for k in sorted(chosen))

        sizes = rnd.choices(range(11), [15, 20, 18, 14, 10, 8, 5, 4, 3, 2, 1], k=1 << 13)
        self.event_props = [block(n) for n in sizes]  # 0-10 properties per event
        self.set_props = [block(rnd.randint(1, 4)) for _ in range(1 << 12)]  # property sets

    @staticmethod
    def _referrer(rnd: random.Random) -> bytes:
        if rnd.random() < 0.35:  # a search or ad click: query and tracking parameters, long
            query = "+".join(rnd.choice(Vocabulary.WORDS[:10]) for _ in range(rnd.randint(8, 20)))
            tail = "".join(f"&utm_{k}={rnd.getrandbits(64):x}" for k in range(rnd.randint(6, 12)))
            url = f"https://www.google.com/search?q={query}&ie=UTF-8&oe=UTF-8{tail}"
        else:
            url = f"https://news.example.org/{rnd.choice(Vocabulary.WORDS[:10])}/{rnd.randrange(10**6)}"
        return b',"Referrer":%s' % _json(url)


class _Session:
    """One open visit: who, how many lines are left, how late it is delivered (s)."""

    __slots__ = ("ident", "left", "delay", "alias_at", "alias_to", "switch", "opening")

    def __init__(self, ident: bytes, left: int, delay: int) -> None:
        self.ident, self.left, self.delay = ident, left, delay
        self.alias_at = -1  # the line (counted down in ``left``) that is an alias record
        self.alias_to = b""
        self.switch = False  # the session goes on as ``alias_to`` after its alias
        self.opening = True


class TrafficModel:
    """The visitors behind the lines; ``lines()`` yields them (bytes ending in a newline)."""

    OPEN = 32  # sessions open at once (a power of two: one getrandbits picks one)
    REGULARS = 100_000  # recent returning visitors remembered (older ones stop coming)
    P_HOT, P_RETURN, P_REGULAR = 0.02, 0.45, 0.25
    P_SIGNUP, P_NEW_DEVICE, P_SET = 0.12, 0.15, 0.16
    P_DUPLICATE, P_BROKEN = 0.002, 0.00005

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.rnd = random.Random(traffic.seed)
        self.words = Vocabulary(self.rnd)
        self.regulars: list[list[bytes]] = []  # [identity, numeric or b""]
        self.next_regular = 0  # ring position once full
        self.next_numeric = 10_000
        self.counts = dict.fromkeys(("events", "property_sets", "aliases", "duplicates", "broken",
                                     "new_anonymous", "signups", "new_devices", "giant_members",
                                     "late_sessions"), 0)
        new_visitor_sessions = traffic.total * (1 - self.P_HOT) / 5.5 * (1 - self.P_RETURN)
        self.p_giant = min(1.0, traffic.giant_members / max(1.0, new_visitor_sessions))

    def _anonymous(self) -> bytes:
        self.counts["new_anonymous"] += 1
        return base64.b64encode(self.rnd.randbytes(20))

    def _numeric(self) -> bytes:
        self.next_numeric += self.rnd.randint(1, 3)
        return b"%d" % self.next_numeric

    def _remember(self, visitor: list[bytes]) -> None:
        if len(self.regulars) < self.REGULARS:
            self.regulars.append(visitor)
        else:
            self.regulars[self.next_regular] = visitor
            self.next_regular = (self.next_regular + 1) % self.REGULARS

    def _session(self) -> _Session:
        r = self.rnd.random
        left = 1 + int(-math.log(1.0 - r()) * 4.5)
        roll = r()
        delay = (0 if roll < 0.95 else r() * 6 * 3600 if roll < 0.99 else r() * 3 * 86400
                 if roll < 0.997 else r() * 120 * 86400)
        self.counts["late_sessions"] += delay > 0
        n = len(self.regulars)
        if n and r() < self.P_RETURN:
            pos = n - 1 - int(n * r() * r())  # the recent ones come back more often
            visitor = self.regulars[(pos + self.next_regular) % n]
            if visitor[1] and r() < self.P_NEW_DEVICE:  # logs in from a new device
                session = _Session(self._anonymous(), left + 1, int(delay))
                session.alias_at, session.alias_to, session.switch = left // 2, visitor[1], True
                self.counts["new_devices"] += 1
                return session
            session = _Session(visitor[1] or visitor[0], left, int(delay))
            if not visitor[1] and r() < self.P_SIGNUP:
                visitor[1] = self._numeric()
                session.left += 1
                session.alias_at, session.alias_to, session.switch = left // 2, visitor[1], True
                self.counts["signups"] += 1
            return session
        session = _Session(self._anonymous(), left, int(delay))
        if r() < self.P_REGULAR:
            self._remember([session.ident, b""])
        if r() < self.p_giant:
            session.left += 1
            session.alias_at, session.alias_to = session.left - 2, GIANT_HUB
        return session

    def lines(self) -> Iterator[bytes]:
        """Every line, endlessly, in receipt order."""
        rnd, w, counts = self.rnd, self.words, self.counts
        r, bits = rnd.random, rnd.getrandbits
        events, event_table, event_props = w.events, w.event_table, w.event_props
        set_props, referrers = w.set_props, w.referrers
        sessions = [self._session() for _ in range(self.OPEN)]
        t = float(self.traffic.start)
        step = 2 * 86400 / self.traffic.lines_per_day  # twice the mean gap between lines, s
        while True:
            t += step * r()
            if r() < self.P_HOT:
                who = HOT[(0, 0, 0, 1, 1, 2, 2, 3)[bits(3)]]
                line = b'{"_n":%s,"_p":"%s","_t":%d%s}\n' % (
                    events[event_table[bits(16)]], who, t, event_props[bits(13)])
                counts["events"] += 1
            else:
                slot = bits(5)
                s = sessions[slot]
                when = int(t) - s.delay
                s.left -= 1
                if s.left == s.alias_at:
                    pair = (s.ident, s.alias_to) if bits(3) else (s.alias_to, s.ident)
                    line = b'{"_p":"%s","_p2":"%s","_t":%d}\n' % (*pair, when)
                    counts["aliases"] += 1
                    counts["giant_members"] += s.alias_to is GIANT_HUB
                    if s.switch:
                        s.ident = s.alias_to
                elif s.opening:
                    line = b'{"_n":"Visited Site","_p":"%s","_t":%d%s%s}\n' % (
                        s.ident, when, referrers[bits(10)], event_props[bits(13)])
                    counts["events"] += 1
                elif r() < self.P_SET:
                    line = b'{"_p":"%s","_t":%d%s}\n' % (s.ident, when, set_props[bits(12)])
                    counts["property_sets"] += 1
                else:
                    line = b'{"_n":%s,"_p":"%s","_t":%d%s}\n' % (
                        events[event_table[bits(16)]], s.ident, when, event_props[bits(13)])
                    counts["events"] += 1
                s.opening = False
                if s.left <= 0:
                    sessions[slot] = self._session()
            if r() < self.P_DUPLICATE:
                counts["duplicates"] += 1
                yield line
            elif r() < self.P_BROKEN:
                counts["broken"] += 1
                line = line[: len(line) // 2] + b"\n"  # cut off in transfer: a reject
            yield line


def layout(traffic: Traffic) -> tuple[list[int], int]:
    """Revision sizes in lines over the whole export, and the revision the history ends in.

    The first revision holds half as many lines as the others, so a round history size ends in
    the middle of one: the cron run finds it grown.
    """
    per, total = traffic.revision_lines, traffic.total
    sizes = [min(per // 2, total)]
    while sum(sizes) < total:
        sizes.append(min(per, total - sum(sizes)))
    done, last = 0, 1
    for number, size in enumerate(sizes, 1):
        if done < traffic.lines:
            last = number
        done += size
    return sizes, last


def write(traffic: Traffic, root: Path) -> Path:
    """Generate the export under ``root/<key>`` unless it is there already; returns that path."""
    out = root / traffic.key()
    if (out / "meta.json").exists():
        return out
    partial = root / f"{traffic.key()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    full, history = partial / "full" / "revisions", partial / "history" / "revisions"
    full.mkdir(parents=True)
    history.mkdir(parents=True)
    model = TrafficModel(traffic)
    lines = model.lines()
    sizes, last = layout(traffic)
    started, written = time.perf_counter(), 0
    for number, size in enumerate(sizes, 1):
        name = f"{number}.json"
        with (full / name).open("wb") as out_file:
            for start in range(0, size, CHUNK):
                piece = b"".join(islice(lines, min(CHUNK, size - start)))
                out_file.write(piece)
                if number == last and written + start < traffic.lines:
                    keep = min(CHUNK, size - start, traffic.lines - written - start)
                    with (history / name).open("ab") as cut:
                        cut.write(b"".join(piece.splitlines(keepends=True)[:keep]))
        written += size
        if number < last:
            os.link(full / name, history / name)
    seconds = time.perf_counter() - started
    meta = {"traffic": asdict(traffic), "version": VERSION, "seconds": seconds,
            "lines_per_s": traffic.total / seconds, "revisions": len(sizes), "history_revisions": last,
            "grown_revision": last if (history / f"{last}.json").stat().st_size
            < (full / f"{last}.json").stat().st_size else None,
            "history_bytes": sum(p.stat().st_size for p in history.iterdir()),
            "full_bytes": sum(p.stat().st_size for p in full.iterdir()), "counts": model.counts}
    (partial / "meta.json").write_text(json.dumps(meta, indent=2))
    partial.rename(out)
    return out


def meta(export: Path) -> dict[str, Any]:
    return json.loads((export / "meta.json").read_text())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cron-share", type=float, default=0.10)
    parser.add_argument("--giant-group", type=int, default=None, help="its members (0: none)")
    args = parser.parse_args()
    out = write(Traffic(args.lines, seed=args.seed, cron_share=args.cron_share,
                        giant_group=args.giant_group), args.root)
    print(out)
    print(json.dumps(meta(out), indent=2))


if __name__ == "__main__":
    main()
