"""Seeded click traffic for the stream tests and an independent reference of the billing rule.

The reference is written plainly from the rule in docs/streaming.md (first occurrence per
event_id in partition order, bot UA, lateness against the running max event time of the
partition, distinct event_ids per (ip, minute) over all partitions), not from streaming code.
"""

from __future__ import annotations

import random
import zlib
from collections import Counter, defaultdict

from clickagg_platform.loadgen import BOT_USER_AGENTS, NORMAL_USER_AGENTS, is_bot_user_agent
from clickagg_platform.model import ClickEvent
from clickagg_platform.partitioner import murmur2_partition

MIN = 60_000


def make_events(
    seed: int,
    n: int,
    start_ms: int = 1_700_000_000_000,
    rate_per_s: float = 200.0,
    dup_fraction: float = 0.08,
    late_fraction: float = 0.06,
    too_late_fraction: float = 0.02,
    bot_fraction: float = 0.03,
    bursts: int = 3,
    burst_size: int = 30,
) -> list[ClickEvent]:
    """Clicks in send order: duplicates, out-of-order, late (within lateness), too-late
    (beyond 10 min), bot UAs and IP bursts (> 20 clicks of one IP in one minute)."""
    rng = random.Random(seed)
    out: list[ClickEvent] = []
    burst_at = {rng.randrange(n // 4, n): b for b in range(bursts)}
    t = start_ms
    for i in range(n):
        t += int(rng.expovariate(rate_per_s / 1000.0)) + 1
        if out and rng.random() < dup_fraction:
            out.append(rng.choice(out[-500:]))  # identical copy (retry / double-click)
            continue
        et = t
        r = rng.random()
        if r < late_fraction:
            et = t - rng.randrange(10_000, 400_000)
        elif r < late_fraction + too_late_fraction:
            et = t - rng.randrange(800_000, 3_000_000)
        ua = rng.choice(BOT_USER_AGENTS if rng.random() < bot_fraction else NORMAL_USER_AGENTS)
        out.append(_click(rng, f"{seed}-{i}", et, t, f"10.0.{rng.randrange(250)}.{i % 250}", ua))
        if i in burst_at:
            ip = f"198.18.0.{burst_at[i]}"
            for j in range(burst_size + rng.randrange(10)):
                ua = rng.choice(NORMAL_USER_AGENTS)
                out.append(_click(rng, f"{seed}-{i}-b{j}", t + j, t + j, ip, ua))
    return out


def _click(rng: random.Random, key: str, et: int, recv: int, ip: str, ua: str) -> ClickEvent:
    eid = f"{zlib.crc32(key.encode()):08x}" + f"{rng.getrandbits(96):024x}"
    camp = f"c{min(int(rng.paretovariate(1.2)), 8)}"
    return ClickEvent(
        event_id=eid,
        impression_id=f"imp-{key}",
        advertiser_id="adv1",
        campaign_id=camp,
        ad_id=f"{camp}-a{rng.randrange(3)}",
        publisher_id="pub1",
        event_time=et,
        received_at=max(recv, et),
        ip_hash=ip,
        user_agent=ua,
        user_key=f"u{key}",
        token_key_id="k1",
    )


def partition_of(event_id: str, partitions: int) -> int:
    return murmur2_partition(event_id.encode(), partitions)  # the reference, not the fast path


def expected_billable(
    by_partition: dict[int, list[ClickEvent]],
    threshold: int = 20,
    oo_ms: int = 5_000,
    lateness_ms: int = 600_000,
) -> Counter:
    """Billable clicks per (minute, campaign, ad) that the stream must count (within lateness)."""
    firsts = []
    for events in by_partition.values():
        seen, max_t = set(), None
        for ev in events:
            wm = None if max_t is None else max_t - oo_ms
            max_t = ev.event_time if max_t is None else max(max_t, ev.event_time)
            if ev.event_id in seen:
                continue
            seen.add(ev.event_id)
            minute = ev.event_time // MIN * MIN
            too_late = wm is not None and wm > minute + MIN + lateness_ms
            firsts.append((ev, minute, too_late))
    per_ip = Counter((ev.ip_hash, m) for ev, m, _ in firsts)
    out: Counter = Counter()
    for ev, m, too_late in firsts:
        if is_bot_user_agent(ev.user_agent) or per_ip[(ev.ip_hash, m)] > threshold:
            continue
        if not too_late:
            out[(m, ev.campaign_id, ev.ad_id)] += 1
    return out


def split(events: list[ClickEvent], partitions: int) -> dict[int, list[ClickEvent]]:
    parts: dict[int, list[ClickEvent]] = defaultdict(list)
    for ev in events:
        parts[partition_of(ev.event_id, partitions)].append(ev)
    return parts


def latest_totals(rows) -> Counter:
    """What the hot query computes: per (key, source, partition) the max-version row, summed."""
    best: dict = {}
    for (m, c, a, cnt, ver), source, part in rows:
        k = (m, c, a, source, part)
        if k not in best or ver >= best[k][1]:
            best[k] = (cnt, ver)
    out: Counter = Counter()
    for (m, c, a, _s, _p), (cnt, _v) in best.items():
        out[(m, c, a)] += cnt
    return Counter({k: v for k, v in out.items() if v != 0})
