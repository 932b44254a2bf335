"""The schedule: which unique clicks exist, their kind, campaign, lateness and send times.

Decided up front as compact numpy arrays (a million clicks stay small) from the plan's own
random stream, so the same plan always yields the same traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from clickagg_platform.loadgen.catalog import Catalog
from clickagg_platform.loadgen.plan import LoadPlan
from clickagg_platform.loadgen.rules import (
    BURST_MAX_CLICKS,
    BURST_MIN_CLICKS,
    BURST_SPAN_MS,
    CLOCK_MARGIN_MS,
)

KIND_NORMAL, KIND_BOT_UA, KIND_BURST = 0, 1, 2
KIND_NAMES = ("normal", "bot_ua", "burst")
DUP_NAMES = (None, "double_click", "retry")
DOUBLE_CLICK_DELAY_MS = (50, 400)
RETRY_DELAY_MS = (1_000, 20_000)
IMPRESSION_TO_CLICK_S = (1, 300)  # token issued this long before the click
USERS_PER_RPS = 90  # ordinary-user pool size per req/s: keeps every IP far below the threshold
MAX_USERS = 16_000_000


@dataclass(frozen=True)
class Schedule:
    """The traffic as compact arrays (a million clicks stay small); requests in send order.

    Unique clicks are indexed by `u` (also their impression number); `req_*` arrays hold one row
    per request, already sorted by send time, pointing to a unique click.
    """

    kind: np.ndarray  # per unique: KIND_*
    campaign: np.ndarray  # per unique: index into catalog.campaigns
    ad: np.ndarray
    publisher: np.ndarray
    user: np.ndarray  # ordinary/bot-UA user index, or burst number for bursts
    lateness_ms: np.ndarray
    band: np.ndarray  # index into plan.lateness_mix, -1 = not late
    issue_delay_s: np.ndarray
    primary_offset_ms: np.ndarray
    req_unique: np.ndarray  # per request, in send order
    req_offset_ms: np.ndarray
    req_dup: np.ndarray  # 0 original, 1 double click, 2 retry


def _split_counts(plan: LoadPlan) -> tuple[int, int, list[int], int]:
    """(duplicates, normal, burst sizes, bot-UA) so that everything adds up to total_requests.

    Burst clicks that cannot fill a whole burst (>= BURST_MIN_CLICKS) become bot-UA clicks,
    so the fraud share is kept and no burst is ever too small to trip the IP-rate rule.
    """
    total = plan.total_requests
    n_dup = min(round(total * plan.duplicate_fraction), total - 1)
    n_unique = total - n_dup
    n_fraud = round(n_unique * plan.bot_fraction)
    burst_target = round(n_fraud * plan.burst_share)
    sizes: list[int] = []
    if burst_target >= BURST_MIN_CLICKS:
        mean = (BURST_MIN_CLICKS + BURST_MAX_CLICKS) / 2
        n_bursts = max(1, min(round(burst_target / mean), burst_target // BURST_MIN_CLICKS))
        base, extra = divmod(burst_target, n_bursts)
        sizes = [base + (1 if b < extra else 0) for b in range(n_bursts)]
    n_bot_ua = n_fraud - sum(sizes)
    return n_dup, n_unique - n_fraud, sizes, n_bot_ua


def _burst_offsets(
    rng: np.random.Generator, plan: LoadPlan, sizes: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Send offsets and burst number of every burst click; each burst within one UTC minute.

    A burst that would straddle a minute boundary is moved just past it: split in two it might
    fall under the threshold in both minutes, and the ground truth says every click of a burst
    IP is fraud-like.
    """
    start_ms = plan.require_start_ms()
    offsets, owners = [], []
    for b, size in enumerate(sizes):
        span = min(int(rng.integers(BURST_SPAN_MS[0], BURST_SPAN_MS[1] + 1)), plan.span_ms)
        o = int(rng.integers(0, max(plan.span_ms - span, 0) + 1))
        within = (start_ms + o - CLOCK_MARGIN_MS) % 60_000
        if within + span + 500 > 60_000:
            o += 60_000 - within + 500
        offsets.append(o + (np.arange(size) * span) // max(size - 1, 1))
        owners.append(np.full(size, b))
    if not sizes:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(offsets).astype(np.int64), np.concatenate(owners).astype(np.int64)


def _assign_lateness(
    rng: np.random.Generator, plan: LoadPlan, organic: np.ndarray, n_unique: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pick late clicks among the organic (non-burst) ones and draw how late each is."""
    lateness = np.zeros(n_unique, np.int64)
    band = np.full(n_unique, -1, np.int64)
    n_late = round(len(organic) * plan.late_fraction)
    if n_late == 0:
        return lateness, band
    late = rng.choice(organic, size=n_late, replace=False)
    weights = np.array([b.weight for b in plan.lateness_mix], dtype=float)
    chosen = rng.choice(len(plan.lateness_mix), size=n_late, p=weights / weights.sum())
    lo = np.array([b.min_s for b in plan.lateness_mix])[chosen] * 1000
    hi = np.array([b.max_s for b in plan.lateness_mix])[chosen] * 1000
    lateness[late] = np.floor(lo + rng.random(n_late) * (hi - lo)).astype(np.int64)
    band[late] = chosen
    return lateness, band


def _duplicates(
    rng: np.random.Generator, plan: LoadPlan, candidates: np.ndarray, primary: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which clicks get re-fetched, when, and how (double click vs client retry).

    A retry never moves past the end of the schedule (short runs stay short) but always comes
    strictly after its original, so send order keeps original-before-copy.
    """
    orig = rng.choice(candidates, size=n, replace=True)
    is_double = rng.random(n) < plan.double_click_share
    delay = np.where(
        is_double,
        rng.integers(DOUBLE_CLICK_DELAY_MS[0], DOUBLE_CLICK_DELAY_MS[1] + 1, size=n),
        rng.integers(RETRY_DELAY_MS[0], RETRY_DELAY_MS[1] + 1, size=n),
    )
    base = primary[orig]
    latest = np.maximum(plan.span_ms, base + DOUBLE_CLICK_DELAY_MS[1])
    offsets = np.minimum(base + delay, latest)
    return orig, offsets.astype(np.int64), np.where(is_double, 1, 2).astype(np.int8)


def plan_schedule(plan: LoadPlan, catalog: Catalog) -> Schedule:
    """Decide every click and its send time (deterministic in the plan)."""
    plan.require_start_ms()
    rng = np.random.default_rng([plan.seed, 2])
    n_dup, n_normal, burst_sizes, n_bot_ua = _split_counts(plan)
    n_organic = n_normal + n_bot_ua
    n_burst = sum(burst_sizes)
    n_unique = n_organic + n_burst

    kind = np.empty(n_unique, np.int8)
    kind[:n_organic] = KIND_NORMAL
    kind[n_normal:n_organic] = KIND_BOT_UA
    kind[:n_organic] = rng.permutation(kind[:n_organic])
    kind[n_organic:] = KIND_BURST

    n_camp = len(catalog.campaigns)
    weights = np.array([c.weight for c in catalog.campaigns])
    campaign = np.empty(n_unique, np.int64)
    campaign[:n_organic] = rng.choice(n_camp, size=n_organic, p=weights)
    ad = rng.integers(0, plan.ads_per_campaign, size=n_unique)
    publisher = rng.integers(0, plan.publishers, size=n_unique)
    pool = min(MAX_USERS, max(1000, math.ceil(plan.rate * USERS_PER_RPS)))
    user = rng.integers(0, pool, size=n_unique)
    issue_delay = rng.integers(IMPRESSION_TO_CLICK_S[0], IMPRESSION_TO_CLICK_S[1] + 1, n_unique)

    primary = np.empty(n_unique, np.int64)
    primary[:n_organic] = (np.arange(n_organic, dtype=np.int64) * plan.span_ms) // max(n_organic, 1)
    burst_off, burst_owner = _burst_offsets(rng, plan, burst_sizes)
    primary[n_organic:] = burst_off
    user[n_organic:] = burst_owner
    burst_campaigns = rng.integers(0, n_camp, size=len(burst_sizes))
    campaign[n_organic:] = burst_campaigns[burst_owner]  # a bot hammers one campaign

    organic = np.arange(n_organic)
    lateness, band = _assign_lateness(rng, plan, organic, n_unique)
    candidates = organic if n_organic else np.arange(n_unique)
    dup_of, dup_off, dup_kind = _duplicates(rng, plan, candidates, primary, n_dup)

    req_unique = np.concatenate([np.arange(n_unique, dtype=np.int64), dup_of])
    req_offset = np.concatenate([primary, dup_off])
    req_dup = np.concatenate([np.zeros(n_unique, np.int8), dup_kind])
    order = np.lexsort((np.arange(len(req_offset)), req_offset))
    return Schedule(
        kind=kind,
        campaign=campaign,
        ad=ad,
        publisher=publisher,
        user=user,
        lateness_ms=lateness,
        band=band,
        issue_delay_s=issue_delay,
        primary_offset_ms=primary,
        req_unique=req_unique[order],
        req_offset_ms=req_offset[order],
        req_dup=req_dup[order],
    )
