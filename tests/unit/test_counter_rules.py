"""Stage 1's per-click loop against the rules written plainly, one click at a time.

The loop inlines the dedup rule (`DedupSet.add`), tallies a batch's windows before adding them,
encodes forwards as it goes and expires state only at a batch's end; its ids live in a RocksDB
store (`IdStore`) that checkpoints flush to and expire. Whatever the batch sizes, checkpoints,
crashes and restarts on the store's disk, its outcomes, window counts and forwards must be those
of the plain rules: ids that repeat, event times that jump past a short dedup horizon and past
the allowed lateness, bots, hex and non-hex ids, and records that do not decode or were applied
already. And the store must hold exactly the ids the plain set holds after the same expiry.
"""

from __future__ import annotations

import random
from collections import Counter

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from clickagg_platform.model import ClickEvent, decode_click, encode_click
from streaming.logic.counter import ClickCounter, Forward, Outcome, _Record
from streaming.logic.dedup import DedupSet
from streaming.logic.idstore import IdStore, StoreTuning, id_key
from streaming.logic.iprate import ForwardBatch, decode_batch, encode_batch, encode_forwards
from streaming.logic.routing import ip_partition, route_forwards
from streaming.logic.windows import MINUTE_MS, NO_WATERMARK, LatenessPolicy, window_start

POLICY = LatenessPolicy(out_of_orderness_ms=5_000, allowed_lateness_ms=2 * MINUTE_MS)
HORIZON = 3 * MINUTE_MS
TARGETS = 3


def is_bot(ua: str) -> bool:
    return ua.startswith("bot")


def click(i: int, event_id: str, t: int, ua: str) -> ClickEvent:
    return ClickEvent(
        event_id=event_id,
        impression_id=f"imp{i}",
        advertiser_id="adv1",
        campaign_id=f"c{i % 2}",
        ad_id=f"a{i % 3}",
        publisher_id="p1",
        event_time=t,
        received_at=t,
        ip_hash=f"{i * 7919 % 10_007:016x}",
        user_agent=ua,
        user_key="u",
        token_key_id="k1",
    )


def plain_rules(events: list[ClickEvent]):
    """Outcome per click, billable clicks per window, forwards per target: one at a time."""
    dedup, max_t = DedupSet(HORIZON), NO_WATERMARK
    outcomes, windows, forwards = [], Counter(), {q: [] for q in range(TARGETS)}
    for offset, ev in enumerate(events):
        minute, wm = window_start(ev.event_time), POLICY.watermark(max_t)
        max_t = max(max_t, ev.event_time)
        if not dedup.add(ev.event_id, minute, wm):
            outcomes.append(Outcome.DUPLICATE)
            continue
        if is_bot(ev.user_agent):
            outcome = Outcome.BOT
        elif POLICY.is_too_late(minute, wm):
            outcome = Outcome.TOO_LATE
        else:
            outcome = Outcome.COUNTED
            windows[(minute, ev.campaign_id, ev.ad_id)] += 1
        outcomes.append(outcome)
        fwd = (offset, ev.ip_hash, minute, ev.campaign_id, ev.ad_id, outcome is Outcome.COUNTED)
        forwards[ip_partition(ev.ip_hash, TARGETS)].append(fwd)
    return outcomes, windows, forwards


steps = st.lists(
    st.tuples(
        st.integers(0, 12),  # event id, from a small pool: repeats are frequent
        st.sampled_from([0, 0, 0, 1_000, 20_000, -8_000, -70_000, 4 * MINUTE_MS, 9 * MINUTE_MS]),
        st.booleans(),  # bot user agent
    ),
    min_size=1,
    max_size=120,
)


def event_id(n: int, hex_only: bool = False) -> str:
    """Most ids as the capture makes them (32 lowercase hex digits), some not (a chunk of
    hex ids only is answered through the store's in-memory filter, others are not)."""
    if n % 4 == 3 and not hex_only:
        return f"e{n}"
    return f"{n * 2654435761 % 2**128:032x}"


@settings(max_examples=300, deadline=None)
@given(steps=steps, seed=st.integers(0, 2**32 - 1))
def test_batches_follow_the_plain_rules(steps, seed):
    t, events = 1_700_000_000_000, []
    for i, (eid, dt, bot) in enumerate(steps):
        t = max(t + dt, 0)
        events.append(click(i, event_id(eid), t, "bot/1" if bot else "Mozilla/5.0"))
    want_outcomes, want_windows, want_forwards = plain_rules(events)

    rng = random.Random(seed)
    records = [_Record(off, encode_click(ev)) for off, ev in enumerate(events)]
    counter = ClickCounter(0, POLICY, HORIZON, is_bot, targets=TARGETS)
    got = Counter()
    pos = 0
    while pos < len(records):
        size = rng.randrange(1, 40)
        replay = rng.randrange(0, min(pos, 2) + 1)  # a fetch may start below next_offset
        batch = records[pos - replay : pos + size]
        counts = counter.process_records(batch, decode_click)
        assert counts[Outcome.ALREADY_APPLIED] == replay
        got.update({Outcome(o): n for o, n in enumerate(counts[: Outcome.ALREADY_APPLIED]) if n})
        pos += size

    assert got == Counter(want_outcomes)
    assert {(m, c, a): n for m, c, a, n, _v in counter.rows()} == dict(want_windows)
    assert counter.next_offset == len(events)
    batches = {q: decode_batch(b) for q, b in route_forwards(counter).items()}
    assert {q: [_fields(f) for f in b.records] for q, b in batches.items()} == want_forwards
    assert all(b.src_watermark == counter.watermark for b in batches.values())


def _fields(fwd) -> tuple:
    return tuple(getattr(fwd, f) for f in fwd.__struct_fields__)


def test_an_undecodable_record_is_stepped_over():
    good = encode_click(click(0, "e0", 1_700_000_000_000, "Mozilla/5.0"))
    counter = ClickCounter(0, POLICY, HORIZON, is_bot, targets=TARGETS)
    counts = counter.process_records([_Record(0, b"{not json"), _Record(1, good)], decode_click)
    assert counts[-1] == 1 and counts[Outcome.COUNTED] == 1 and counter.next_offset == 2


def test_a_window_closed_within_a_batch_keeps_its_whole_count():
    """Expiry waits for the batch's end: a window that gets clicks and then closes within one
    batch is published with its count over all batches, not this batch's share."""
    t0 = 1_700_000_000_000
    first = [click(0, "e0", t0, "Mozilla/5.0")]
    second = [click(i, f"e{i}", t0, "Mozilla/5.0") for i in (6, 12)]  # same window as e0
    second.append(click(18, "e18", t0 + 10 * MINUTE_MS, "Mozilla/5.0"))  # closes it
    counter = ClickCounter(0, POLICY, HORIZON, is_bot, targets=TARGETS)
    counter.process_records([_Record(0, encode_click(first[0]))], decode_click)
    batch = [_Record(off, encode_click(ev)) for off, ev in enumerate(second, start=1)]
    counter.process_records(batch, decode_click)
    rows = {(m, c, a): n for m, c, a, n, _v in counter.rows()}
    assert rows[(window_start(t0), "c0", "a0")] == 3


def test_forwards_encoded_as_they_go_read_as_a_forward_batch():
    rows = [Forward(7, "ip", 60_000, "c1", "a1", True), Forward(9, "ip2", 0, "c2", "a2", False)]
    enc = msgspec.msgpack.Encoder()
    buf = bytearray()
    for r in rows:
        enc.encode_into(_fields(r), buf, -1)
    assert decode_batch(encode_forwards(2, 5, len(rows), bytes(buf))) == ForwardBatch(2, 5, rows)
    assert decode_batch(encode_batch(ForwardBatch(2, 5, rows))) == ForwardBatch(2, 5, rows)
    assert decode_batch(encode_forwards(2, 5, 0, b"")) == ForwardBatch(2, 5, [])


@settings(max_examples=200, deadline=None)
@given(
    steps=steps,
    seed=st.integers(0, 2**32 - 1),
    hex_only=st.booleans(),
    bucket_ids=st.sampled_from([1, 3, 20, 1_000_000]),
)
def test_checkpoints_crashes_and_restarts_on_the_store_follow_the_plain_rules(
    steps, seed, hex_only, bucket_ids, tmp_path_factory
):
    """Checkpoints confirmed at random; crashes that lose the unconfirmed part (the records
    after the store's offset are processed again, by a counter reopened on the same disk);
    the final store holds exactly the ids of the plain set after the same expiry. Buckets of
    a few ids and a filter of two arrays: ids remembered anew across buckets, buckets dropped
    whole, filter generations merged."""
    t, events = 1_700_000_000_000, []
    for i, (eid, dt, bot) in enumerate(steps):
        t = max(t + dt, 0)
        events.append(click(i, event_id(eid, hex_only), t, "bot/1" if bot else "Mozilla/5.0"))
    want_outcomes, want_windows, _ = plain_rules(events)
    path = tmp_path_factory.mktemp("ids") / "p0"

    def reopen() -> ClickCounter:
        tuning = StoreTuning(
            block_cache_bytes=1 << 20,
            write_buffer_bytes=1 << 20,
            bucket_ids=bucket_ids,
            filter_bytes_per_generation=1 << 13,
            max_filter_generations=2,
        )
        return ClickCounter(0, POLICY, HORIZON, is_bot, TARGETS, IdStore(path, HORIZON, tuning))

    rng = random.Random(seed)
    records = [_Record(off, encode_click(ev)) for off, ev in enumerate(events)]
    counter, got, changelog = reopen(), {}, 0
    while (pos := counter.next_offset or 0) < len(records):
        batch = records[pos : pos + rng.randrange(1, 40)]
        counts = counter.process_records(batch, decode_click)
        outcomes = [o for o, n in enumerate(counts[:-1]) for _ in range(n)]
        assert sum(counts) == len(batch)
        if len(set(outcomes)) == 1:  # one outcome for the whole batch: know each record's
            got.update({r.offset: Outcome(outcomes[0]) for r in batch})
        roll = rng.random()
        if roll < 0.4 and counter.delta() is not None:
            counter.confirm(changelog)
            changelog += 1
        elif roll < 0.5:  # a crash: what was not confirmed is lost
            counter.ids.close()
            counter = reopen()
    if counter.delta() is not None:
        counter.confirm(changelog)
    assert {o: want_outcomes[o] for o in got} == got
    assert {(m, c, a): n for m, c, a, n, _v in counter.rows()} == dict(want_windows)

    plain, max_t = DedupSet(HORIZON), NO_WATERMARK
    for ev in events:
        plain.add(ev.event_id, window_start(ev.event_time), POLICY.watermark(max_t))
        max_t = max(max_t, ev.event_time)
    plain.expire(POLICY.watermark(max_t))
    stored = counter.ids.stored()
    assert stored == {id_key(e): m for e, m in plain.items()}
    assert counter.ids.meta.live_ids == len(stored)
    keys, buckets = counter.ids.count_keys(), counter.ids.meta.buckets
    assert sum(b.ids for b in buckets) >= keys >= len(stored)  # expired ids go with buckets
    assert all(b.last_minute >= counter.ids.meta.expired_upto for b in buckets)
    counter.ids.close()
