"""Stage 2's compact per-IP state (`streaming.logic.iprate`): an IP-minute with one click is a
small int, a second click turns it into the list form. Both forms must answer like the plain
rule (more than `threshold` distinct clicks of an IP in a minute un-bills all of them), through
checkpoints: a flagger rebuilt from its deltas alone continues exactly like the one that wrote
them, whichever form each IP-minute was in."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from streaming.logic.counter import Forward
from streaming.logic.iprate import ForwardBatch, IpRateFlagger, _Minute
from streaming.logic.windows import MINUTE_MS, LatenessPolicy

POLICY = LatenessPolicy(out_of_orderness_ms=5_000, allowed_lateness_ms=120_000)


def reference(records: list[Forward], threshold: int) -> Counter:
    """Un-billed clicks per (minute, campaign, ad), by the rule itself."""
    by_ip = defaultdict(list)
    for r in records:
        by_ip[(r.ip_hash, r.minute)].append(r)
    out = Counter()
    for rs in by_ip.values():
        if len(rs) > threshold:
            for r in rs:
                if r.counted:
                    out[(r.minute, r.campaign_id, r.ad_id)] += 1
    return out


def traffic(rng: random.Random, n: int) -> list[Forward]:
    """IPs that click once (most), a few that repeat, some clicks stage 1 did not count."""
    out = []
    for i in range(n):
        ip = f"ip{rng.randrange(n)}" if rng.random() < 0.7 else f"hot{rng.randrange(6)}"
        minute = rng.randrange(3) * MINUTE_MS
        c = rng.randrange(3)
        out.append(Forward(i, ip, minute, f"c{c}", f"a{c}{rng.randrange(2)}", rng.random() < 0.9))
    return out


def un_billed(f: IpRateFlagger) -> Counter:
    return Counter({(m, c, a): -n for m, c, a, n, _v in f.rows()})


@pytest.mark.parametrize("threshold", [0, 1, 2, 5])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_state_forms_and_restarts_answer_like_the_rule(threshold, seed):
    rng = random.Random(seed)
    records = traffic(rng, 3000)
    f, deltas, offset, i = IpRateFlagger(0, POLICY, threshold, n_sources=1), [], 0, 0
    while i < len(records):
        step = rng.randrange(1, 150)
        f.process(ForwardBatch(0, 0, records[i : i + step]), offset)
        i, offset = i + step, offset + 1
        if rng.random() < 0.5:
            deltas.append(f.delta())
        if rng.random() < 0.1:  # a restart, rebuilt from its deltas
            deltas.append(f.delta())
            deltas = [d for d in deltas if d is not None]
            rebuilt = IpRateFlagger(0, POLICY, threshold, n_sources=1)
            for d in deltas:
                assert rebuilt.apply(d)
            assert {m: r.state(ip) for m, r in rebuilt.minutes.items() for ip in r.ips} == {
                m: r.state(ip) for m, r in f.minutes.items() for ip in r.ips
            }
            f = rebuilt
    assert un_billed(f) == reference(records, threshold)
    held = {(r.ip_hash, r.minute) for r in records}
    assert f.held == len(held)
    for ip, minute in held:
        n = sum(1 for r in records if (r.ip_hash, r.minute) == (ip, minute))
        assert f.flagged(ip, minute) is (n > threshold)
    ints = sum(type(s) is int for m in f.minutes.values() for s in m.ips.values())
    if threshold >= 1:
        assert ints > 0.5 * f.held  # most IP-minutes really are in the small form
    else:
        assert ints == 0  # with threshold 0 the first click flags: no small form


def test_a_minute_is_dropped_whole_once_closed():
    f = IpRateFlagger(0, POLICY, threshold=1, n_sources=1)
    recs = [Forward(0, "a", 0, "c", "x", True), Forward(1, "b", MINUTE_MS, "c", "x", True)]
    f.process(ForwardBatch(0, 0, recs), 0)
    assert f.held == 2 and set(f.minutes) == {0, MINUTE_MS}
    closes_0 = MINUTE_MS + POLICY.allowed_lateness_ms + POLICY.out_of_orderness_ms
    f.process(ForwardBatch(0, closes_0, []), 1)
    assert set(f.minutes) == {MINUTE_MS} and f.held == 1


def test_the_small_form_shares_its_campaign_ad_pairs():
    m = _Minute()
    m.load("ip", 1, False, [("c", "a")])
    m.load("ip2", 1, False, [("c", "a")])
    m.load("ip3", 1, False, [])
    assert m.ips == {"ip": 1, "ip2": 1, "ip3": 0} and m.pairs == [("c", "a")]
    assert m.state("ip") == (1, False, [("c", "a")]) and m.state("ip3") == (1, False, [])
    m.load("ip4", 4, True, [])
    assert m.state("ip4") == (4, True, [])
