"""The poll's page merge and cursor (app/feed.py): pure, no Redis.

`read` plays Store.read_feed against in-memory feeds: each feed is a list of (score, member)
like a partition's feed zset (score = timestamp + seq/1024, the mark "~" at the newest timestamp
the feed no longer holds).
"""

from __future__ import annotations

import bisect

import pytest

from app.feed import MAX_ROUNDS, Page, PageBuilder, decode_cursor, encode_cursor

Feed = list[tuple[float, bytes]]


def msg(ts: int, n: int = 0, kind: str = "human", tag: str = "") -> bytes:
    return b'{"id":"m%s%d-%d","timestamp":%d,"message-type":"%s"}' % (tag.encode(), ts, n, ts, kind.encode())


def feed_of(*stamps: int, tag: str = "") -> Feed:
    """Messages at these timestamps; equal timestamps get rising seq (commit order). `tag` keeps
    the members of different feeds apart."""
    out: Feed = []
    seq: dict[int, int] = {}
    for ts in stamps:
        s = seq.get(ts, 0)
        seq[ts] = s + 1
        out.append((ts + s / 1024, msg(ts, s, tag=tag)))
    return sorted(out)


def zrange(feed: Feed, start: str, count: int) -> list[tuple[bytes, float]]:
    """ZRANGE feed <start> +inf BYSCORE LIMIT 0 <count> WITHSCORES (start is an inclusive number)."""
    scores = [score for score, _ in feed]
    i = bisect.bisect_left(scores, float(start))
    return [(member, score) for score, member in feed[i : i + count]]


def read(feeds: list[Feed], positions: tuple[int, ...], limit: int, now_ms: int,
         type_mark: bytes | None = None) -> tuple[Page, PageBuilder, list[list[tuple[int, str, int]]]]:
    builder = PageBuilder(positions, limit)
    builder.set_bound(now_ms)
    rounds = []
    while True:
        requests = builder.requests()
        rounds.append(requests)
        for i, start, count in requests:
            builder.take(i, zrange(feeds[i], start, count))
        if builder.finish_round():
            break
    return builder.page(type_mark), builder, rounds


def stamps(page: Page) -> list[int]:
    return [int(m.split(b'"timestamp":')[1].split(b",")[0]) for m in page.messages]


def follow(feeds: list[Feed], limit: int, now_ms: int, by_cursor: bool = False) -> tuple[list[bytes], int]:
    """Read every page as a nextAfter (or cursor) follower does; (messages, pages)."""
    positions = (0,) * len(feeds)
    seen: list[bytes] = []
    for pages in range(1, 1000):
        page, _, _ = read(feeds, positions, limit, now_ms)
        seen += page.messages
        positions = page.positions if by_cursor else (page.next_after,) * len(feeds)
        if not page.has_more:
            return seen, pages
    raise AssertionError("the follower never finished")


def test_page_builder_merges_partitions_oldest_first() -> None:
    feeds = [feed_of(10, 30, 50, tag="a"), feed_of(20, 40, tag="b")]
    page, _, rounds = read(feeds, (0, 0), 10, now_ms=1000)
    assert stamps(page) == [10, 20, 30, 40, 50]
    # A cursor keeps each partition's newest delivered timestamp; nextAfter is the page's end.
    assert (page.next_after, page.has_more, page.reset, page.positions) == (50, False, False, (50, 40))
    assert len(rounds) == 1  # one round trip when no partition is busy


def test_page_builder_equal_timestamps_keep_commit_order_in_a_partition() -> None:
    page, _, _ = read([feed_of(7, 7, 7)], (0,), 10, now_ms=1000)
    assert page.messages == [msg(7, 0), msg(7, 1), msg(7, 2)]


def test_page_builder_never_splits_a_run_of_equal_timestamps() -> None:
    feeds = [feed_of(1, 2, 2, 3, tag="a"), feed_of(2, 4, tag="b")]
    page, _, _ = read(feeds, (0, 0), 3, now_ms=1000)
    assert stamps(page) == [1] and page.has_more and page.next_after == 1  # the run at 2 is 3 rows: next page
    page, _, _ = read(feeds, (1, 1), 3, now_ms=1000)
    assert stamps(page) == [2, 2, 2] and page.has_more and page.next_after == 2
    page, _, _ = read(feeds, (2, 2), 3, now_ms=1000)
    assert stamps(page) == [3, 4] and not page.has_more


def test_page_builder_returns_a_run_longer_than_a_page_whole() -> None:
    feeds = [feed_of(*[5] * 50, 6)]
    page, _, rounds = read(feeds, (0,), 1, now_ms=1000)
    assert stamps(page) == [5] * 50 and page.has_more and page.next_after == 5
    assert len(rounds) > 1  # the run needed larger reads
    page, _, _ = read(feeds, (5,), 1, now_ms=1000)
    assert stamps(page) == [6] and not page.has_more


def test_page_builder_reads_a_busy_partition_again_in_a_second_round() -> None:
    # Each lane's first read is its share of the page (+ a margin); the busy lane's share left the
    # page under half full, so the busy lane (only it) is read again, larger.
    busy, quiet = feed_of(*range(1, 61)), feed_of(100)
    page, builder, rounds = read([busy, quiet, feed_of(), feed_of()], (0, 0, 0, 0), 20, now_ms=1000)
    want = builder.lanes[1].want
    assert rounds[0] == [(i, "1", want + 1) for i in range(4)]
    assert [i for i, _, _ in rounds[1]] == [0] and rounds[1][0][2] == 4 * want + 1
    assert stamps(page) == list(range(1, 21)) and page.has_more and page.next_after == 20


def test_page_builder_returns_a_short_page_rather_than_read_again_when_half_full() -> None:
    busy, quiet = feed_of(*range(1, 31)), feed_of(100)
    page, builder, rounds = read([busy, quiet], (0, 0), 10, now_ms=1000)
    assert len(rounds) == 1 and page.has_more
    assert stamps(page) == list(range(1, builder.lanes[1].want + 1)) and page.next_after == builder.lanes[1].want


def test_page_builder_busy_partition_limits_what_other_partitions_give() -> None:
    # The quiet partition's 9 is newer than what the busy one was read to: it waits for a later page.
    busy, quiet = feed_of(*range(1, 31), tag="a"), feed_of(9, tag="b")
    seen, _ = follow([busy, quiet], limit=4, now_ms=1000)
    assert stamps(Page(seen, 0, False, False, ())) == sorted([*range(1, 31), 9]) and len(set(seen)) == 31


@pytest.mark.parametrize("by_cursor", [False, True])
@pytest.mark.parametrize("limit", [1, 2, 3, 7, 50])
def test_page_builder_follower_never_misses_or_repeats(limit: int, by_cursor: bool) -> None:
    feeds = [feed_of(1, 1, 2, 5, 5, 5, 9, 12, tag="a"), feed_of(2, 3, 3, 9, 9, 10, tag="b"), feed_of(),
             feed_of(*range(4, 40, 3), tag="d")]
    seen, _ = follow(feeds, limit, now_ms=1000, by_cursor=by_cursor)
    assert sorted(seen) == sorted(m for f in feeds for _, m in f) and len(seen) == len(set(seen))
    assert stamps(Page(seen, 0, False, False, ())) == sorted(stamps(Page(seen, 0, False, False, ())))


def test_page_builder_holds_back_the_current_millisecond() -> None:
    feeds = [feed_of(100, 101, 102)]
    page, _, _ = read(feeds, (0,), 10, now_ms=101)  # bound = 100: a commit in ms 101 may still follow
    assert stamps(page) == [100] and page.next_after == 100 and not page.has_more
    page, _, _ = read(feeds, (100,), 10, now_ms=103)
    assert stamps(page) == [101, 102]


def test_page_builder_nothing_new_keeps_the_position() -> None:
    page, _, _ = read([feed_of(3), feed_of()], (7, 5), 10, now_ms=1000)
    assert page.messages == [] and page.next_after == 5 and not page.has_more
    assert page.positions == (7, 5) and not page.reset


def test_page_builder_positions_are_per_partition() -> None:
    feeds = [feed_of(5, 20, tag="a"), feed_of(5, 20, tag="b")]
    page, _, rounds = read(feeds, (10, 0), 10, now_ms=1000)
    assert rounds[0][0][1] == "11" and rounds[0][1][1] == "1"  # "timestamp > position" = min position + 1
    assert stamps(page) == [5, 20, 20] and page.positions == (20, 20)


def test_page_builder_reset_when_the_position_is_below_the_mark() -> None:
    feed = sorted([*feed_of(50, 51, 52), (49.5, b"~")])  # everything up to 49 (seq 512) was dropped
    page, _, _ = read([feed, feed_of(10)], (40, 40), 10, now_ms=1000)
    assert page.reset and stamps(page) == [50, 51, 52]  # starts at the oldest message still held
    page, _, _ = read([feed, feed_of(10)], (49, 49), 10, now_ms=1000)
    assert not page.reset and stamps(page) == [50, 51, 52]
    page, _, _ = read([feed, feed_of()], (52, 0), 10, now_ms=1000)
    assert not page.reset


def test_page_builder_reset_is_said_once_even_when_the_lane_delivers_nothing_yet() -> None:
    # The busy lane fills the page; the reset lane's held messages (after its mark at 49) come later.
    reset_lane = sorted([*feed_of(50, 51), (49.0, b"~")])
    busy = feed_of(*range(1, 40), tag="b")
    page, _, _ = read([reset_lane, busy], (10, 0), 5, now_ms=1000)
    assert page.reset and stamps(page) == [1, 2, 3, 4]  # the busy lane was read to 4
    assert page.positions[0] == 49  # nothing at or below the mark is held: the lane moves up to it
    seen = list(page.messages)
    positions = page.positions
    for _ in range(20):
        page, _, _ = read([reset_lane, busy], positions, 5, now_ms=1000)
        assert not page.reset
        seen += page.messages
        positions = page.positions
        if not page.has_more:
            break
    assert stamps(Page(seen, 0, False, False, ())) == [*range(1, 40), 50, 51]


def test_page_builder_type_mark_filters_after_the_cut() -> None:
    feed = sorted([(1.0, msg(1, 0, "human")), (2.0, msg(2, 0, "AI")), (3.0, msg(3, 0, "human"))])
    page, _, _ = read([feed], (0,), 2, now_ms=1000, type_mark=b'"message-type":"AI"')
    assert page.messages == [msg(2, 0, "AI")] and page.next_after == 2 and page.has_more


def test_page_builder_gives_up_after_max_rounds_without_going_back() -> None:
    feeds = [feed_of(*[5] * (8 * 4 ** MAX_ROUNDS))]  # a run no round reads whole
    page, _, rounds = read(feeds, (0,), 1, now_ms=1000)
    assert len(rounds) == MAX_ROUNDS
    assert page.messages == [] and page.has_more and page.next_after == 4  # moved up to the run, not past it


@pytest.mark.parametrize("positions", [(0,), (5, 5, 5), (-1, 0, 1766300000123), (2**53, 3), (1766300000123,) * 12])
def test_cursor_round_trip(positions: tuple[int, ...]) -> None:
    cursor = encode_cursor(positions)
    assert cursor.startswith("c1.") and all(c.isalnum() or c in ".-" for c in cursor)
    assert decode_cursor(cursor, len(positions)) == (positions, False)


def test_cursor_of_another_partition_count_resumes_from_its_lowest_position_with_reset() -> None:
    cursor = encode_cursor((30, 10, 20))
    assert decode_cursor(cursor, 5) == ((10,) * 5, True)
    assert decode_cursor(cursor, 1) == ((10,), True)


@pytest.mark.parametrize("cursor", [
    "", "c1", "c1.0", "c2.0.0", "C1.0.0", "c1..0", "c1.0.", "c1.0.-1", "c1.0.A", "c1.0.0 ", "c1. 0.0",
    "c1.0.1.2.x!", "c1.0.000000000000", "c1.٣.0", "c1.0.٣",
    "c1.0." + ".".join(["0"] * 1025), "after=5",
])
def test_cursor_rejects_what_it_did_not_issue(cursor: str) -> None:
    with pytest.raises(ValueError):
        decode_cursor(cursor, 12)


def test_cursor_positions_are_clamped_like_after() -> None:
    assert decode_cursor("c1.zzzzzzzzzzz.0.0", 2) == ((2**53, 2**53), False)
    assert decode_cursor("c1.-2.0.1", 2) == ((-1, -1), False)


def test_page_builder_bounds_a_page_by_bytes_between_runs() -> None:
    big = [(float(ts), b'{"id":"b%d","timestamp":%d,"x":"%s"}' % (ts, ts, b"x" * 1000)) for ts in (1, 2, 2, 3, 4)]
    builder = PageBuilder((0,), 10, max_bytes=2500)
    builder.set_bound(1000)
    builder.take(0, [(m, s) for s, m in big])
    page = builder.page()
    # 1, then the run at 2 would pass 2,500 bytes: the page ends before it, with more to come.
    assert stamps(page) == [1] and page.has_more and page.next_after == 1 and page.positions == (1,)
    builder = PageBuilder((1,), 10, max_bytes=500)
    builder.set_bound(1000)
    builder.take(0, [(m, s) for s, m in big[1:]])
    page = builder.page()
    assert stamps(page) == [2, 2] and page.has_more and page.next_after == 2  # a first run comes whole


def big_feed(count: int, size: int) -> Feed:
    return [(float(ts), b'{"id":"b%d","timestamp":%d,"x":"%s"}' % (ts, ts, b"x" * size)) for ts in range(1, count + 1)]


def test_page_builder_reads_of_big_messages_follow_the_byte_budget() -> None:
    # 1,000 messages of 100 KB in each of 4 partitions; a page of at most 1 MB. Asking each
    # partition for 1.2 x limit / P rows read 300 x 100 KB per partition per round.
    feeds = [big_feed(1000, 100_000) for _ in range(4)]

    def run(row_bytes: float | None) -> tuple[Page, PageBuilder]:
        builder = PageBuilder((0, 0, 0, 0), 1000, max_bytes=1_000_000, row_bytes=row_bytes)
        builder.set_bound(10_000)
        while True:
            for i, start, count in builder.requests():
                builder.take(i, zrange(feeds[i], start, count))
            if builder.finish_round():
                return builder.page(), builder

    cold, builder = run(None)  # no sizes seen yet: the first round is by count
    assert cold.has_more and sum(map(len, cold.messages)) <= 1_000_000 + 100_100
    assert builder.read_bytes <= 4 * 301 * 100_100
    warm, builder = run(builder.read_bytes / builder.read_rows)  # sizes seen: the reads follow the budget
    assert warm.messages and warm.has_more and stamps(warm) == stamps(cold)[: len(warm.messages)]
    assert builder.read_bytes <= 4 * 5 * 100_100  # at least 4 rows (+1) per partition, not 300


def test_recent_shares_give_busy_partitions_the_first_round() -> None:
    # Two of twelve partitions hold all the traffic (few humans active): an even first read leaves
    # the page short and a second round trip reads on; with the spread of the previous page, one.
    feeds = [feed_of(*range(1, 200, 2), tag="a"), feed_of(*range(2, 200, 2), tag="b")] + [[] for _ in range(10)]
    positions = (0,) * 12

    def run(shares: tuple[float, ...] | None) -> tuple[Page, PageBuilder, int]:
        builder = PageBuilder(positions, 50, shares=shares)
        builder.set_bound(1000)
        for rounds in range(1, MAX_ROUNDS + 1):
            for i, start, count in builder.requests():
                builder.take(i, zrange(feeds[i], start, count))
            if builder.finish_round():
                return builder.page(), builder, rounds
        raise AssertionError("unreachable")

    even, builder, even_rounds = run(None)
    assert builder.delivered[:2] == (25, 25) and sum(builder.delivered) == 50
    shares = tuple(count / 50 for count in builder.delivered)
    learned, _, learned_rounds = run(shares)
    assert even_rounds > 1 and learned_rounds == 1
    assert learned.messages == even.messages and learned.positions == even.positions


def test_shares_of_past_pages_never_shrink_a_page_when_traffic_moves() -> None:
    # Recent pages came all from partition 0; now six others hold the messages. The real frontend
    # takes one page per poll whatever hasMore says: a page cut short would lose it messages.
    feeds: list[Feed] = [[] for _ in range(12)]
    for p in range(1, 7):
        feeds[p] = feed_of(*range(p, 721, 6), tag=str(p))  # 120 messages each, interleaved
    builder = PageBuilder((0,) * 12, 1000, shares=(1.0,) + (0.0,) * 11)
    builder.set_bound(10_000)
    while True:
        for i, start, count in builder.requests():
            builder.take(i, zrange(feeds[i], start, count))
        if builder.finish_round():
            break
    page = builder.page()
    even, _, _ = read(feeds, (0,) * 12, 1000, now_ms=10_000)
    assert len(page.messages) == len(even.messages) and page.has_more == even.has_more
