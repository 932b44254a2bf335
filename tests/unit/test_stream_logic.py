"""Window / watermark / dedup / fraud logic of the stream, as plain functions and classes.

The end-to-end property: seeded traffic split over partitions, run through stage 1 and stage 2
with checkpoints, crashes (restore from deltas, replay) and zombie deltas, must give per
(minute, campaign, ad) exactly the independently computed billable counts.
"""

from __future__ import annotations

import random

import pytest

from clickagg_platform.loadgen import is_bot_user_agent
from streaming.logic.counter import ClickCounter, Outcome
from streaming.logic.dedup import DedupSet
from streaming.logic.iprate import IpRateFlagger, decode_batch
from streaming.logic.routing import route_forwards
from streaming.logic.windows import MINUTE_MS, NO_WATERMARK, LatenessPolicy, window_start
from tests.unit.stream_sim import expected_billable, latest_totals, make_events, split

POLICY = LatenessPolicy(out_of_orderness_ms=5_000, allowed_lateness_ms=600_000)
DAY = 24 * 3600 * 1000


def counter(p: int = 0, horizon: int = DAY, targets: int = 3) -> ClickCounter:
    return ClickCounter(p, POLICY, horizon, is_bot_user_agent, targets)


def test_window_start_and_lateness_policy():
    t = 1_700_000_123_456
    assert window_start(t) % MINUTE_MS == 0 and 0 <= t - window_start(t) < MINUTE_MS
    assert window_start(120_000) == 120_000 and window_start(179_999) == 120_000
    start = 600_000
    end = start + MINUTE_MS
    assert POLICY.watermark(NO_WATERMARK) == NO_WATERMARK
    assert POLICY.watermark(700_000) == 695_000
    assert not POLICY.is_too_late(start, end + 600_000)  # exactly at the limit: still taken
    assert POLICY.is_too_late(start, end + 600_001)
    assert not POLICY.is_correction(start, end - 1) and POLICY.is_correction(start, end)


def test_dedup_horizon_is_by_watermark_not_by_expiry_schedule():
    d = DedupSet(horizon_ms=10 * MINUTE_MS)
    assert d.add("a", 0, NO_WATERMARK)
    assert not d.add("a", 0, 5 * MINUTE_MS)
    # past the horizon the same id is new again, whether or not expire() already ran
    late_wm = 11 * MINUTE_MS + 1
    assert d.add("a", 0, late_wm)
    d2 = DedupSet(horizon_ms=10 * MINUTE_MS)
    d2.add("a", 0, NO_WATERMARK)
    assert d2.expire(late_wm) == 1 and "a" not in d2
    assert d2.add("a", 0, late_wm)


def test_counter_outcomes_in_order():
    c = counter()
    evs = make_events(
        seed=1, n=50, dup_fraction=0, late_fraction=0, too_late_fraction=0, bot_fraction=0, bursts=0
    )
    base = evs[0]
    assert c.process(base, 10) is Outcome.COUNTED
    assert c.process(base, 11) is Outcome.DUPLICATE
    assert c.process(base, 5) is Outcome.ALREADY_APPLIED
    bot = evs[1].__class__(**{**_d(evs[1]), "user_agent": "curl/8.5.0"})
    assert c.process(bot, 12) is Outcome.BOT
    ahead = evs[2].__class__(**{**_d(evs[2]), "event_time": base.event_time + 20 * MINUTE_MS})
    assert c.process(ahead, 13) is Outcome.COUNTED
    old = evs[3].__class__(**{**_d(evs[3]), "event_time": base.event_time})
    assert c.process(old, 14) is Outcome.TOO_LATE
    rows = {(m, ca, a): (n, v) for m, ca, a, n, v in c.rows()}
    assert rows[(window_start(base.event_time), base.campaign_id, base.ad_id)] == (1, 10)


def _d(ev):
    return {f: getattr(ev, f) for f in ev.__struct_fields__}


def test_ip_rate_flags_all_clicks_of_the_minute_once_crossed():
    f = IpRateFlagger(0, POLICY, threshold=3, n_sources=1)
    from streaming.logic.counter import Forward
    from streaming.logic.iprate import ForwardBatch

    recs = [Forward(i, "ip1", 0, "c1", f"a{i % 2}", True) for i in range(3)]
    assert f.process(ForwardBatch(0, 0, recs), 0) == 0
    assert f.rows() == []  # at the threshold: not fraud yet
    assert f.process(ForwardBatch(0, 0, [Forward(3, "ip1", 0, "c1", "a1", True)]), 1) == 4
    assert sorted(f.rows()) == [(0, "c1", "a0", -2, 1), (0, "c1", "a1", -2, 1)]
    # a replayed record is ignored; a later one of the flagged minute is subtracted directly
    more = [
        Forward(3, "ip1", 0, "c1", "a1", True),
        Forward(4, "ip1", 0, "c1", "a0", True),
    ]
    assert f.process(ForwardBatch(0, 0, more), 2) == 1
    assert (0, "c1", "a0", -3, 2) in f.rows()


class Pipeline:
    """Both stages with checkpoints; `crash` rebuilds a partition from its deltas only."""

    def __init__(self, partitions: int, rng: random.Random, threshold: int = 20):
        self.p, self.rng, self.threshold = partitions, rng, threshold
        self.counters = {p: counter(p, targets=partitions) for p in range(partitions)}
        self.flaggers = {q: self._flagger(q) for q in range(partitions)}
        self.c_log: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        self.f_log: dict[int, list[bytes]] = {q: [] for q in range(partitions)}
        self.topic: dict[int, list[bytes]] = {q: [] for q in range(partitions)}  # forward topic
        self.f_read = dict.fromkeys(range(partitions), 0)
        self.published: list = []

    def _flagger(self, q):
        return IpRateFlagger(q, POLICY, self.threshold, n_sources=self.p)

    def checkpoint(self, p: int, die_before_delta: bool = False) -> None:
        for q, batch in route_forwards(self.counters[p]).items():
            self.topic[q].append(batch)  # forwards acked first
        if die_before_delta:
            return self.crash(p)  # the forwards stay in the topic: a replay re-sends them
        delta = self.counters[p].delta()
        if delta:
            self.c_log[p].append(delta)
            self.counters[p].confirm(len(self.c_log[p]) - 1)  # acked: flushed to its store

    def crash(self, p: int) -> None:
        """Half the time on a new disk (every delta applied to an empty store), else on the
        same disk (the store's flushed state, then the deltas after it)."""
        old = self.counters[p]
        if self.rng.random() < 0.5:
            fresh = counter(p, targets=self.p)
        else:
            old.ids.drop_unflushed()
            fresh = ClickCounter(p, POLICY, DAY, is_bot_user_agent, self.p, store=old.ids)
        for offset in range(fresh.ids.meta.changelog_offset + 1, len(self.c_log[p])):
            fresh.apply(self.c_log[p][offset], offset)
        self.counters[p] = fresh
        fresh_f = self._flagger(p)
        for d in self.f_log[p]:
            fresh_f.apply(d)
        self.flaggers[p] = fresh_f
        self.f_read[p] = fresh_f.next_offset or 0

    def run_stage2(self, q: int) -> None:
        f = self.flaggers[q]
        while self.f_read[q] < len(self.topic[q]):
            off = self.f_read[q]
            f.process(decode_batch(self.topic[q][off]), off)
            self.f_read[q] += 1
        d = f.delta()
        if d:
            self.f_log[q].append(d)

    def publish(self) -> None:
        for p, c in self.counters.items():
            rows = c.rows()
            self.published += [(r, 0, p) for r in rows]
            c.mark_published(rows)
        for q, f in self.flaggers.items():
            rows = f.rows()
            self.published += [(r, 1, q) for r in rows]
            f.mark_published(rows)


@pytest.mark.parametrize("seed", [3, 17, 2024])
def test_pipeline_with_crashes_equals_reference(seed):
    rng = random.Random(seed)
    parts = split(make_events(seed, 4000), 3)
    want = expected_billable(parts)
    pipe = Pipeline(3, rng)
    cursor = dict.fromkeys(parts, 0)
    while any(cursor[p] < len(parts[p]) for p in parts):
        p = rng.choice(list(parts))
        step = rng.randrange(1, 200)
        c = pipe.counters[p]
        start = c.next_offset or 0
        for off in range(start, min(start + step, len(parts[p]))):
            c.process(parts[p][off], off)
        cursor[p] = c.next_offset or 0
        r = rng.random()
        if r < 0.5:
            pipe.checkpoint(p, die_before_delta=r < 0.05)
        if r < 0.1:
            pipe.crash(p)  # loses everything since the last checkpoint, incl. unsent forwards
            cursor[p] = pipe.counters[p].next_offset or 0
        pipe.run_stage2(rng.randrange(3))
        if rng.random() < 0.3:
            pipe.publish()
    for p in parts:
        pipe.checkpoint(p)
    for q in range(3):
        pipe.run_stage2(q)
    pipe.publish()
    got = latest_totals(pipe.published)
    assert got == want
    assert sum(want.values()) > 2000  # the scenario is not trivial
    no_fraud = expected_billable(parts, threshold=10**9)
    assert sum(no_fraud.values()) - sum(want.values()) >= 60  # bursts were really un-billed
    # same (key, source, partition, version) always carries the same count
    seen = {}
    for (m, ca, a, n, v), s, part in pipe.published:
        assert seen.setdefault((m, ca, a, s, part, v), n) == n


def test_zombie_delta_is_skipped_and_chain_resumes():
    parts = split(make_events(5, 600), 1)[0]
    live, zombie = counter(), counter()
    log = []

    def checkpoint(c):
        log.append(c.delta())
        c.confirm(len(log) - 1)

    for off, ev in enumerate(parts[:200]):
        live.process(ev, off)
        zombie.process(ev, off)
    checkpoint(live)
    for off in range(200, 300):
        zombie.process(parts[off], off)
    for off in range(200, 400):
        live.process(parts[off], off)
    checkpoint(live)  # [200, 400)
    checkpoint(zombie)  # [0, 300): does not continue the chain, skipped
    for off in range(400, 600):
        live.process(parts[off], off)
    checkpoint(live)
    rebuilt = counter()
    applied = [rebuilt.apply(d) for d in log]
    assert applied == [True, True, False, True]
    assert rebuilt.next_offset == 600
    assert rebuilt.windows.counts == live.windows.counts


def test_state_is_bounded_by_keys_under_a_long_sink_outage():
    c = counter()
    evs = make_events(9, 3000, dup_fraction=0, bursts=0)
    for off, ev in enumerate(evs):
        c.process(ev, off)
    keys = {(window_start(e.event_time), e.campaign_id, e.ad_id) for e in evs}
    assert len(c.rows()) <= len(keys)
