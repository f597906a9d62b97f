"""The global poll: one page merged from the partitions' feeds, and the cursor that resumes it.

Pure (no I/O): Store sends what `PageBuilder.requests()` asks for and hands back the replies.

A page holds the oldest messages after each partition's position, across partitions, oldest
first. It never splits a run of equal timestamps, and holds nothing newer than `bound` (the
Redis time of the read minus 1 ms): a message committed after the read is stamped at least that
time, so a follower that resumes at the page's end misses nothing.

Each round reads at most `want` rows per partition; a partition with more rows is complete only
up to just before its last row's timestamp, and the page may only hold rows up to the lowest such
limit. The first round asks each partition for its even share of the page plus 20 %, or for
more where recent pages came mostly from it (Store keeps each partition's share). Most pages need
one round; when a partition far busier than that leaves the page under half full (in rows and in
bytes), it gets a second, larger read.

What a page reads is bounded by its byte budget too, using message sizes seen: the first round
asks each partition for no more rows than the budget holds at the sizes of recent pages
(`row_bytes`, which Store keeps), and a second read grows only as far as the budget holds at the
sizes that partition just returned (never below the first read, so a long run of one timestamp
still gets past).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from .keys import FEED_MARK

MARK = FEED_MARK.encode()
MAX_ROUNDS = 4
# A page's bytes are bounded as well as its count: 200 God Mode syntheses of 8 KB fit; 1,000
# messages of 100 KB (an old cursor over big answers) would have been a 100 MB answer.
MAX_PAGE_BYTES = 2 * 1024 * 1024
# Each partition's first read asks for its even share of the page plus a margin. Payloads are
# most of a poll's Redis cost (~0.4 us per row), so the margin is small; a page cut short by an
# uneven spread is still correct (hasMore), and only a page under half full reads again.
WANT_SHARE = 1.2
MIN_WANT = 4  # rows (+1) every partition gets in the first round at least
_TS = itemgetter(0)  # of a (timestamp, member) row
_MEMBER = itemgetter(0)  # of a (member, score) reply pair
_ROW_MEMBER = itemgetter(1)  # of a (timestamp, member) row
CURSOR_VERSION = "c1"
_BASE_RE = re.compile(r"-?[0-9a-z]{1,11}")
_OFFSET_RE = re.compile(r"[0-9a-z]{1,11}")
MAX_POSITION = 2**53  # timestamps are JSON numbers
CURSOR_PATTERN = r"^(c1\.-?[0-9a-z]{1,11}(\.[0-9a-z]{1,11}){1,1024})?$"  # OpenAPI; "" = absent


@dataclass(slots=True)
class _Lane:
    """One partition's part of a page being built."""

    position: int
    start: str  # ZRANGE BYSCORE lower bound of the next read
    want: int
    rows: list[tuple[int, bytes]] = field(default_factory=list)
    safe: float = -math.inf  # every row of this lane with ts <= safe is in `rows`
    mark: int = -1  # the feed no longer holds this lane's messages up to this timestamp (-1: all held)


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[bytes]
    next_after: int
    has_more: bool
    reset: bool
    positions: tuple[int, ...]


class PageBuilder:
    def __init__(self, positions: tuple[int, ...], limit: int, max_bytes: int = MAX_PAGE_BYTES,
                 row_bytes: float | None = None, shares: Sequence[float] | None = None) -> None:
        """`shares`: each partition's part of recent pages (summing to about 1; Store keeps them):
        a few busy partitions get more of the first round's reads, so the page rarely needs a second."""
        self.limit = limit
        self.max_bytes = max_bytes
        rows: float = limit
        if row_bytes:  # big messages: the budget fills with fewer rows than `limit`
            rows = min(rows, max_bytes / row_bytes)
        # Never below the even split: shares only add reads where recent pages were busy. A page
        # cut short costs the real frontend messages (it polls `after` = its clock - 6 s whatever
        # the page says), and traffic moves between partitions.
        even = max(MIN_WANT, math.ceil(WANT_SHARE * rows / len(positions)))
        wants = [max(even, math.ceil(WANT_SHARE * rows * share)) for share in shares or ()] or [even] * len(positions)
        self.first_want = min(wants)
        self.read_rows = 0
        self.read_bytes = 0
        self.delivered: tuple[int, ...] = ()  # rows the page holds from each partition (set by page())
        # Scores are timestamp + seq/1024 (lua/_lib.lua): "timestamp > p" is the inclusive min p + 1.
        self.lanes = [_Lane(p, str(p + 1), want) for p, want in zip(positions, wants, strict=True)]
        self.bound = math.inf
        self.rounds = 0

    def requests(self) -> list[tuple[int, str, int]]:
        """(partition, ZRANGE BYSCORE min, LIMIT count) for each read the next round needs."""
        if self.rounds == 0:
            return [(i, lane.start, lane.want + 1) for i, lane in enumerate(self.lanes)]
        limit_at = self._complete_to()
        return [(i, lane.start, lane.want + 1) for i, lane in enumerate(self.lanes) if lane.safe == limit_at]

    def set_bound(self, redis_now_ms: int) -> None:
        self.bound = redis_now_ms - 1

    def take(self, index: int, scored: list[tuple[bytes, float]]) -> None:
        """A ZRANGE ... WITHSCORES reply as (member, score) pairs, ascending, for one lane."""
        lane = self.lanes[index]
        cap = self.bound
        size = sum(map(len, map(_MEMBER, scored)))
        self.read_rows += len(scored)
        self.read_bytes += size
        if len(scored) > lane.want:
            edge = int(scored[-1][1])
            lane.safe = edge - 1
            lane.start = str(edge)  # inclusive: the run at the edge is read again whole
            grow = lane.want * 4
            if int(scored[0][1]) < edge:  # rows were taken: read on only as far as the budget holds
                grow = min(grow, max(self.first_want, math.ceil(self.max_bytes * len(scored) / max(size, 1))))
            lane.want = grow
            cap = min(cap, edge - 1)
        else:
            lane.safe = math.inf
        rows = lane.rows
        for member, score in scored:
            ts = int(score)  # scores are positive: int() is floor
            if ts > cap:
                break
            if member == MARK:
                lane.mark = ts  # messages after this lane's position are gone from the feed
            else:
                rows.append((ts, member))

    def finish_round(self) -> bool:
        """True when the page can be cut; False when another round of reads would fill it more."""
        self.rounds += 1
        limit_at = self._complete_to()
        if limit_at >= self.bound or self.rounds >= MAX_ROUNDS:
            return True
        complete = [lane.rows[: bisect_right(lane.rows, limit_at, key=_TS)] for lane in self.lanes]
        if sum(map(len, complete)) * 2 >= self.limit:
            return True
        return sum(map(_bytes_of, complete)) * 2 >= self.max_bytes

    def _complete_to(self) -> float:
        return min(self.bound, *(lane.safe for lane in self.lanes))

    def page(self, type_mark: bytes | None = None) -> Page:
        limit_at = self._complete_to()
        rows = []
        for lane in self.lanes:
            rows += lane.rows[: bisect_right(lane.rows, limit_at, key=_TS)]
        rows.sort(key=_TS)  # stable: equal timestamps keep partition, then commit, order
        start = min(lane.position for lane in self.lanes)
        if len(rows) > self.limit:
            cut = rows[self.limit - 1][0]
            if rows[self.limit][0] == cut:  # never split a run of equal timestamps
                shorter = [row for row in rows if row[0] < cut]
                rows = shorter or [row for row in rows if row[0] <= cut]  # a run longer than a page
            else:
                rows = rows[: self.limit]
            end, has_more = rows[-1][0], True
        elif limit_at < self.bound:  # a busy partition was not read to the end
            end, has_more = int(limit_at), True
        else:
            end, has_more = (rows[-1][0] if rows else start), False
        over = _over_budget(rows, self.max_bytes)
        if over is not None:  # the page's bytes are bounded too, cut between runs like the count
            rows, end, has_more = rows[:over], rows[over - 1][0], True
        end = max(end, start)
        messages = list(map(_ROW_MEMBER, rows))
        if type_mark is not None:  # quotes inside JSON strings are escaped: the mark only matches the field
            messages = [m for m in messages if type_mark in m]
        return Page(messages, end, has_more, any(lane.mark >= 0 for lane in self.lanes), self._positions(end))

    def _positions(self, end: int) -> tuple[int, ...]:
        """Each lane's position after the page: its newest message delivered (or the mark it was
        reset to), not the page's end. A partition whose feed is deleted while it is quiet then
        comes back with a mark above the position, and its follower learns of the gap."""
        out, counts = [], []
        for lane in self.lanes:
            delivered = bisect_right(lane.rows, end, key=_TS)
            newest = lane.rows[delivered - 1][0] if delivered else -1
            out.append(max(lane.position, newest, lane.mark))  # nothing at or below the mark is held
            counts.append(delivered)
        self.delivered = tuple(counts)
        return tuple(out)


def _bytes_of(rows: list[tuple[int, bytes]]) -> int:
    """The messages' bytes, summed in C."""
    return sum(map(len, map(_ROW_MEMBER, rows)))


def _over_budget(rows: list[tuple[int, bytes]], max_bytes: int) -> int | None:
    """How many rows fit in max_bytes without splitting a run of equal timestamps (at least the
    first run, whatever its size), or None when all of them fit."""
    if _bytes_of(rows) <= max_bytes:  # the usual page
        return None
    total = 0
    for i, (ts, member) in enumerate(rows):
        total += len(member)
        if total > max_bytes:
            keep = i
            while keep > 0 and rows[keep - 1][0] == ts:  # back to the start of this run
                keep -= 1
            if keep == 0:  # the first run alone is over budget: it comes whole
                keep = i + 1
                while keep < len(rows) and rows[keep][0] == ts:
                    keep += 1
            return keep if keep < len(rows) else None
    return None


def encode_cursor(positions: tuple[int, ...]) -> str:
    """Opaque to clients: version, then the lowest position and each partition's offset, base 36."""
    base = min(positions)
    return ".".join([CURSOR_VERSION, _b36(base), *(_b36(p - base) for p in positions)])


def decode_cursor(cursor: str, partitions: int) -> tuple[tuple[int, ...], bool]:
    """(positions, reset). A cursor of another partition count resumes from its lowest position
    with reset (it may repeat, never miss). Raises ValueError when it is not a cursor of ours."""
    parts = cursor.split(".")
    if (len(parts) < 3 or len(parts) > 2 + 1024 or parts[0] != CURSOR_VERSION or not _BASE_RE.fullmatch(parts[1])
            or not all(_OFFSET_RE.fullmatch(p) for p in parts[2:])):
        raise ValueError("not a cursor")
    base = int(parts[1], 36)
    positions = tuple(max(-1, min(base + int(p, 36), MAX_POSITION)) for p in parts[2:])  # clamped, as `after` is
    if len(positions) != partitions:
        return (min(positions),) * partitions, True
    return positions, False


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_DIGIT_PAIRS = [a + b for a in _DIGITS for b in _DIGITS]  # two digits per step: a cursor has 13 numbers


def _b36(value: int) -> str:
    if value < 0:
        return "-" + _b36(-value)
    if value < 36:
        return _DIGITS[value]
    out = []
    while value:
        value, rem = divmod(value, 36 * 36)
        out.append(_DIGIT_PAIRS[rem])
    return "".join(reversed(out)).lstrip("0")
