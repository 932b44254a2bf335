"""Seeded ad-click traffic and its ground truth: the pure half of `clickagg load` (no I/O here).

A `LoadPlan` and its seed fully determine a campaign `Catalog` and the sequence of
`PlannedRequest`s (URL path + query, headers, scheduled send offset, the click's event time).
Every request carries the client click time `t` explicitly (non-late clicks: t = scheduled send
time minus `CLOCK_MARGIN_MS`; late clicks: t further in the past), so the event time the capture
service assigns, and with it the minute bucket of every click, is known exactly to the
generator; nothing depends on when a request happens to reach the server. Duplicates
(double-clicks and client retries) re-send the *identical* URL, so every copy of an event_id
carries the same event time whichever copy the pipeline keeps.

Fraud-like traffic is generated so its ground truth is unambiguous:
- bot user agents: a User-Agent containing one of `BOT_UA_MARKERS` (case-insensitive) -> reason
  "bot_ua". Normal browser UAs never contain a marker.
- IP bursts: dedicated burst IPs (198.18.0.0/15) send *only* bursts of at least
  `BURST_MIN_CLICKS` (twice `IP_RATE_THRESHOLD`) clicks, each burst inside a single event-time
  minute -> every click from a burst IP is fraud-like, reason "ip_rate". Ordinary users come
  from a pool large enough that no ordinary IP gets near the threshold in any minute (the ground
  truth reports the observed maximum as a check).
`GroundTruthBuilder` turns what was actually sent (and acknowledged) into the expected billable
counts per (minute, campaign, ad) and per (day, advertiser, campaign).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import numpy as np

from clickagg_platform.model import ClickEvent, event_id_for
from clickagg_platform.tokens import mint_token

MANIFEST_VERSION = 1

# --- fraud rule constants, shared with the stream's fraud rules (also written to the manifest)
BOT_UA_MARKERS: tuple[str, ...] = (
    "bot",
    "spider",
    "crawler",
    "headlesschrome",
    "python-requests",
    "curl",
)
IP_RATE_THRESHOLD = 20  # more than this many clicks from one IP in one window is fraud-like
IP_RATE_WINDOW_S = 60  # the window: one UTC event-time minute
BURST_MIN_CLICKS = 2 * IP_RATE_THRESHOLD
BURST_MAX_CLICKS = 5 * IP_RATE_THRESHOLD
BURST_SPAN_MS = (1_500, 4_000)  # one burst is sent within this many ms (or the whole run)
BURST_IP_NETWORK = "198.18.0.0/15"  # only burst traffic comes from here
NORMAL_IP_NETWORK = "10.0.0.0/8"
BOT_UA_IP_NETWORK = "100.64.0.0/10"

# --- lateness classes of the ground truth (receive time minus event time)
LATE_THRESHOLD_MS = 60_000
VERY_LATE_THRESHOLD_MS = 600_000
CLIENT_TIME_MAX_AHEAD_MS = 5_000  # capture honours t only if t <= receive time + this
# t = scheduled send time minus this margin, and nothing is sent before its scheduled time, so
# t <= the capture's receive time even with a little clock skew between generator and capture
# (the capture records min(t, received_at): a t in its future would not survive verbatim).
CLOCK_MARGIN_MS = 250

REASON_BOT_UA = "bot_ua"
REASON_IP_RATE = "ip_rate"

KIND_NORMAL, KIND_BOT_UA, KIND_BURST = 0, 1, 2
_KIND_NAMES = ("normal", "bot_ua", "burst")
_DUP_NAMES = (None, "double_click", "retry")
DOUBLE_CLICK_DELAY_MS = (50, 400)
RETRY_DELAY_MS = (1_000, 20_000)
IMPRESSION_TO_CLICK_S = (1, 300)  # token issued this long before the click
USERS_PER_RPS = 90  # ordinary-user pool size per req/s: keeps every IP far below the threshold
MAX_USERS = 16_000_000
MAX_REQUESTS = 50_000_000
MAX_LATENESS_S = 24 * 3600
DEFAULT_TOKEN_TTL_S = 7 * 24 * 3600

NORMAL_USER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
    "NewsReaderApp/5.2.1 (iPhone; iOS 17.4; Scale/3.00)",
)
BOT_USER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.0.0 Safari/537.36",
    "python-requests/2.31.0",
    "curl/8.5.0",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "crawler4j (https://github.com/yasserg/crawler4j/)",
)

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9]{1,16}$")


def is_bot_user_agent(user_agent: str) -> bool:
    """The bot-UA rule, shared with the stream: a case-insensitive marker substring."""
    lowered = user_agent.lower()
    return any(marker in lowered for marker in BOT_UA_MARKERS)


def fraud_rules() -> dict:
    """The fraud definition the ground truth uses, written to the manifest for the stream."""
    return {
        "bot_ua_markers": list(BOT_UA_MARKERS),
        "bot_ua_rule": "User-Agent contains any marker, case-insensitive -> reason bot_ua",
        "ip_rate_threshold": IP_RATE_THRESHOLD,
        "ip_rate_window_s": IP_RATE_WINDOW_S,
        "ip_rate_rule": (
            f"more than {IP_RATE_THRESHOLD} clicks from one client IP in one UTC event-time "
            "minute -> reason ip_rate. The generator sends such traffic only from dedicated "
            f"burst IPs ({BURST_IP_NETWORK}) that send nothing but bursts of >= "
            f"{BURST_MIN_CLICKS} clicks, each inside one event-time minute, so the ground truth "
            "marks every click from a burst IP as fraud-like (all of them, not only those past "
            "the threshold); ordinary IPs never exceed the threshold"
        ),
        "precedence": "bot_ua before ip_rate (a click has exactly one reason)",
        "burst_ip_network": BURST_IP_NETWORK,
        "normal_ip_network": NORMAL_IP_NETWORK,
        "bot_ua_ip_network": BOT_UA_IP_NETWORK,
        "burst_min_clicks": BURST_MIN_CLICKS,
        "fraud_is_billable": False,
        "duplicate_of_fraud_is_billable": False,
    }


@dataclass(frozen=True)
class LatenessBand:
    """One component of the lateness mixture: how far in the past a late click's `t` lies."""

    name: str
    weight: float
    min_s: float
    max_s: float


DEFAULT_LATENESS_MIX: tuple[LatenessBand, ...] = (
    LatenessBand("out_of_order", 0.5, 2.0, 45.0),
    LatenessBand("late", 0.35, 120.0, 480.0),
    LatenessBand("very_late", 0.15, 900.0, 7200.0),
)


@dataclass(frozen=True)
class LoadPlan:
    """Everything that determines the traffic; same plan (incl. start_ms) -> same requests.

    `rate` counts every request (originals, duplicates, bursts). `clicks` (total requests), when
    set, overrides `duration_s`. Fractions: `duplicate_fraction` of all requests re-fetch an
    already sent link; `bot_fraction` of the unique clicks are fraud-like, `burst_share` of
    those as IP bursts and the rest with bot UAs; `late_fraction` of the other unique clicks
    carry a client time in the past drawn from `lateness_mix`.
    """

    seed: int = 42
    rate: float = 100.0
    duration_s: float | None = 10.0
    clicks: int | None = None
    advertisers: int = 5
    campaigns_per_advertiser: int = 4
    ads_per_campaign: int = 3
    publishers: int = 20
    zipf_s: float = 1.1
    duplicate_fraction: float = 0.05
    double_click_share: float = 0.5
    late_fraction: float = 0.05
    lateness_mix: tuple[LatenessBand, ...] = DEFAULT_LATENESS_MIX
    bot_fraction: float = 0.03
    burst_share: float = 0.5
    start_ms: int | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        problems = _plan_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def total_requests(self) -> int:
        """Requests to send in all (each duplicate copy counts, transport retries do not)."""
        if self.clicks is not None:
            return self.clicks
        return max(1, round(self.rate * (self.duration_s or 0.0)))

    @property
    def span_ms(self) -> int:
        """Length of the send schedule: total requests at the planned rate."""
        return max(1, math.ceil(self.total_requests * 1000 / self.rate))

    @property
    def effective_run_id(self) -> str:
        """Namespaces impression ids: re-runs with another start get fresh event_ids."""
        if self.run_id is not None:
            return self.run_id
        start = self.require_start_ms()
        return hashlib.sha256(f"{self.seed}:{start}".encode()).hexdigest()[:10]

    def require_start_ms(self) -> int:
        if self.start_ms is None:
            raise ValueError("plan.start_ms is not set: call plan.resolved(now_ms) first")
        return self.start_ms

    def resolved(self, now_ms: int) -> LoadPlan:
        """This plan with its start time pinned (to now_ms unless already set)."""
        return self if self.start_ms is not None else replace(self, start_ms=now_ms)

    def to_json(self) -> dict:
        data = asdict(self)
        data["total_requests"] = self.total_requests
        data["span_ms"] = self.span_ms
        if self.start_ms is not None:
            data["run_id"] = self.effective_run_id
        return data


def _fraction_problem(name: str, value: float, upper: float = 1.0) -> str | None:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return f"{name} must be a number, got {value!r}"
    if not 0.0 <= value <= upper:
        return f"{name} must be between 0 and {upper}, got {value}"
    return None


def _plan_problems(plan: LoadPlan) -> list[str]:
    """All reasons a plan is unusable, so one error message lists every bad option."""
    problems: list[str] = []
    if not isinstance(plan.rate, int | float) or not math.isfinite(plan.rate) or plan.rate <= 0:
        problems.append(f"rate must be a positive number of clicks per second, got {plan.rate}")
    if plan.clicks is not None:
        if plan.clicks < 1 or plan.clicks > MAX_REQUESTS:
            problems.append(f"clicks must be between 1 and {MAX_REQUESTS}, got {plan.clicks}")
    elif plan.duration_s is None or not math.isfinite(plan.duration_s) or plan.duration_s <= 0:
        problems.append(f"duration must be a positive number of seconds, got {plan.duration_s}")
    elif not problems and plan.rate * plan.duration_s > MAX_REQUESTS:
        problems.append(f"rate x duration must be at most {MAX_REQUESTS} clicks")
    for name in ("advertisers", "campaigns_per_advertiser", "ads_per_campaign", "publishers"):
        value = getattr(plan, name)
        if not isinstance(value, int) or not 1 <= value <= 10_000:
            problems.append(f"{name} must be an integer between 1 and 10000, got {value!r}")
    if not math.isfinite(plan.zipf_s) or plan.zipf_s < 0:
        problems.append(f"zipf_s must be >= 0 (0 = uniform), got {plan.zipf_s}")
    for name, upper in (
        ("duplicate_fraction", 0.9),
        ("double_click_share", 1.0),
        ("late_fraction", 1.0),
        ("bot_fraction", 1.0),
        ("burst_share", 1.0),
    ):
        problem = _fraction_problem(name, getattr(plan, name), upper)
        if problem:
            problems.append(problem)
    problems.extend(_lateness_problems(plan.lateness_mix, plan.late_fraction))
    if plan.start_ms is not None and plan.start_ms <= MAX_LATENESS_S * 1000:
        problems.append(f"start_ms must be an epoch time in milliseconds, got {plan.start_ms}")
    if plan.run_id is not None and not _RUN_ID_RE.match(plan.run_id):
        problems.append(f"run_id must be 1-16 letters or digits, got {plan.run_id!r}")
    return problems


def _lateness_problems(mix: tuple[LatenessBand, ...], late_fraction: float) -> list[str]:
    if not mix:
        return ["lateness_mix needs at least one band"] if late_fraction > 0 else []
    problems = []
    for band in mix:
        if not band.weight > 0:
            problems.append(f"lateness band {band.name!r}: weight must be > 0")
        if not 0 < band.min_s <= band.max_s <= MAX_LATENESS_S:
            problems.append(
                f"lateness band {band.name!r}: need 0 < min_s <= max_s <= {MAX_LATENESS_S}"
            )
    return problems


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class Ad:
    ad_id: str
    landing_url: str


@dataclass(frozen=True)
class Campaign:
    advertiser_id: str
    campaign_id: str
    cpc_micros: int  # price of one billable click, in micros of the billing currency
    zipf_rank: int  # 0 = the hot campaign
    weight: float  # share of ordinary traffic
    ads: tuple[Ad, ...]


@dataclass(frozen=True)
class Catalog:
    campaigns: tuple[Campaign, ...]
    publishers: tuple[str, ...]

    def by_id(self) -> dict[str, Campaign]:
        return {c.campaign_id: c for c in self.campaigns}

    def hot_campaign(self) -> Campaign:
        return min(self.campaigns, key=lambda c: c.zipf_rank)

    def to_json(self) -> dict:
        advertisers: dict[str, list[dict]] = defaultdict(list)
        for c in self.campaigns:
            advertisers[c.advertiser_id].append(
                {
                    "campaign_id": c.campaign_id,
                    "cpc_micros": c.cpc_micros,
                    "zipf_rank": c.zipf_rank,
                    "weight": round(c.weight, 9),
                    "ads": [{"ad_id": a.ad_id, "landing_url": a.landing_url} for a in c.ads],
                }
            )
        return {
            "advertisers": [
                {"advertiser_id": adv, "campaigns": camps} for adv, camps in advertisers.items()
            ],
            "publishers": list(self.publishers),
        }


def build_catalog(plan: LoadPlan) -> Catalog:
    """Advertisers, campaigns, ads, CPCs and the Zipf ranking, from the seed alone.

    Uses its own random stream, so the catalog does not change with the traffic size.
    """
    rng = np.random.default_rng([plan.seed, 1])
    n = plan.advertisers * plan.campaigns_per_advertiser
    ranks = rng.permutation(n)
    raw = 1.0 / np.power(np.arange(1, n + 1, dtype=float), plan.zipf_s)
    weights = raw / raw.sum()
    cpcs = rng.integers(5, 301, size=n) * 10_000  # 0.05 .. 3.00 per click
    campaigns = []
    for i in range(n):
        a, c = divmod(i, plan.campaigns_per_advertiser)
        adv, cmp = f"adv-{a + 1:03d}", f"cmp-{a + 1:03d}-{c + 1:02d}"
        ads = tuple(
            Ad(
                ad_id=f"ad-{a + 1:03d}-{c + 1:02d}-{k + 1:02d}",
                landing_url=(
                    f"https://advertiser-{a + 1}.example/landing?c={cmp}"
                    f"&ad=ad-{a + 1:03d}-{c + 1:02d}-{k + 1:02d}"
                ),
            )
            for k in range(plan.ads_per_campaign)
        )
        rank = int(ranks[i])
        campaigns.append(Campaign(adv, cmp, int(cpcs[i]), rank, float(weights[rank]), ads))
    publishers = tuple(f"pub-{p + 1:03d}" for p in range(plan.publishers))
    return Catalog(tuple(campaigns), publishers)


# --------------------------------------------------------------------------- schedule


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


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One GET /c/{token}?t=... exactly as it will be sent, plus what the truth needs of it."""

    seq: int
    offset_ms: int  # scheduled send time relative to plan.start_ms
    scheduled_ms: int  # absolute scheduled send time (epoch ms)
    path: str  # "/c/<token>?t=<event_time_ms>"
    headers: dict[str, str]
    event_id: str
    impression_id: str
    advertiser_id: str
    campaign_id: str
    ad_id: str
    publisher_id: str
    event_time_ms: int  # == t; what the capture service must record as event_time
    issued_at_s: int  # token issued-at (<= event_time_ms / 1000)
    token_key_id: str
    ip: str
    user_agent: str
    user_id: str
    kind: str  # "normal" | "bot_ua" | "burst"
    fraud_reason: str | None  # None | "bot_ua" | "ip_rate"
    duplicate: str | None  # None (original) | "double_click" | "retry"
    lateness_ms: int  # planned: scheduled send time minus event time, beyond CLOCK_MARGIN_MS
    late_band: str | None

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.path


def _ip(first: int, second: int, n: int) -> str:
    """IPv4 address number `n` of the network starting at first.second.0.0."""
    return f"{first}.{second + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def _identity(kind: int, user: int, unique_index: int) -> tuple[str, str, str]:
    """(ip, user agent, user id) of a click; stable per ordinary user, fresh per burst click.

    Keep in sync with `_ip_key`, which counts the same IPs vectorized.
    """
    if kind == KIND_BURST:
        ua = NORMAL_USER_AGENTS[user % len(NORMAL_USER_AGENTS)]
        return _ip(198, 18, user % (1 << 17)), ua, f"x{user:05d}-{unique_index:08d}"
    if kind == KIND_BOT_UA:
        ua = BOT_USER_AGENTS[user % len(BOT_USER_AGENTS)]
        return _ip(100, 64, (user + 1) % (1 << 22)), ua, f"b{user:08d}"
    ua = NORMAL_USER_AGENTS[user % len(NORMAL_USER_AGENTS)]
    return _ip(10, 0, (user + 1) % (1 << 24)), ua, f"u{user:08d}"


def _fraud_reason(kind: int, user_agent: str) -> str | None:
    if is_bot_user_agent(user_agent):
        return REASON_BOT_UA
    if kind == KIND_BURST:
        return REASON_IP_RATE
    return None


def generate_requests(
    plan: LoadPlan,
    catalog: Catalog,
    keyring: dict[str, bytes],
    key_id: str,
    *,
    ttl_s: int = DEFAULT_TOKEN_TTL_S,
    schedule: Schedule | None = None,
) -> Iterator[PlannedRequest]:
    """Yield every request in send order, minting tokens lazily (memory stays flat)."""
    if ttl_s <= MAX_LATENESS_S:
        raise ValueError(f"ttl_s must exceed the largest lateness ({MAX_LATENESS_S} s)")
    sched = schedule if schedule is not None else plan_schedule(plan, catalog)
    start_ms, run_id = plan.require_start_ms(), plan.effective_run_id
    for seq in range(len(sched.req_unique)):
        u = int(sched.req_unique[seq])
        yield _render(plan, catalog, sched, seq, u, start_ms, run_id, keyring, key_id, ttl_s)


def _render(
    plan: LoadPlan,
    catalog: Catalog,
    s: Schedule,
    seq: int,
    u: int,
    start_ms: int,
    run_id: str,
    keyring: dict[str, bytes],
    key_id: str,
    ttl_s: int,
) -> PlannedRequest:
    """Build one request; all copies of a unique click get byte-identical URLs and headers."""
    kind = int(s.kind[u])
    camp = catalog.campaigns[int(s.campaign[u])]
    ad = camp.ads[int(s.ad[u])]
    lateness = int(s.lateness_ms[u])
    event_time = start_ms + int(s.primary_offset_ms[u]) - lateness - CLOCK_MARGIN_MS
    issued_at = event_time // 1000 - int(s.issue_delay_s[u])
    impression_id = f"imp-{run_id}-{u:08d}"
    publisher = catalog.publishers[int(s.publisher[u])]
    token = mint_token(
        keyring,
        key_id,
        impression_id=impression_id,
        advertiser_id=camp.advertiser_id,
        campaign_id=camp.campaign_id,
        ad_id=ad.ad_id,
        landing_url=ad.landing_url,
        publisher_id=publisher,
        ttl_s=ttl_s,
        now=issued_at,
    )
    ip, ua, uid = _identity(kind, int(s.user[u]), u)
    band = int(s.band[u])
    offset = int(s.req_offset_ms[seq])
    return PlannedRequest(
        seq=seq,
        offset_ms=offset,
        scheduled_ms=start_ms + offset,
        path=f"/c/{token}?t={event_time}",
        headers={"User-Agent": ua, "X-Forwarded-For": ip, "Cookie": f"ca_uid={uid}"},
        event_id=event_id_for(impression_id),
        impression_id=impression_id,
        advertiser_id=camp.advertiser_id,
        campaign_id=camp.campaign_id,
        ad_id=ad.ad_id,
        publisher_id=publisher,
        event_time_ms=event_time,
        issued_at_s=issued_at,
        token_key_id=key_id,
        ip=ip,
        user_agent=ua,
        user_id=uid,
        kind=_KIND_NAMES[kind],
        fraud_reason=_fraud_reason(kind, ua),
        duplicate=_DUP_NAMES[int(s.req_dup[seq])],
        lateness_ms=lateness,
        late_band=plan.lateness_mix[band].name if band >= 0 else None,
    )


def _digest(domain: str, value: str) -> str:
    return hashlib.sha256(f"{domain}:{value}".encode()).hexdigest()[:16]


def simulate_capture(req: PlannedRequest, received_at_ms: int) -> ClickEvent:
    """The `ClickEvent` the capture service would produce for `req` (Kafka target).

    Applies the capture's client-time rule (`capture.event_time_for`: t is honoured if
    issued_at*1000 <= t <= received_at + 5 s, capped at received_at). ip_hash/user_key are
    deterministic stand-ins, not the capture's salted hashes.
    """
    t = req.event_time_ms
    honoured = req.issued_at_s * 1000 <= t <= received_at_ms + CLIENT_TIME_MAX_AHEAD_MS
    return ClickEvent(
        event_id=req.event_id,
        impression_id=req.impression_id,
        advertiser_id=req.advertiser_id,
        campaign_id=req.campaign_id,
        ad_id=req.ad_id,
        publisher_id=req.publisher_id,
        event_time=min(t, received_at_ms) if honoured else received_at_ms,
        received_at=received_at_ms,
        ip_hash=_digest("ip", req.ip),
        user_agent=req.user_agent,
        user_key=_digest("user", req.user_id),
        token_key_id=req.token_key_id,
    )


# --------------------------------------------------------------------------- ground truth


@dataclass(frozen=True, slots=True)
class SentClick:
    """What happened to one planned request (after all its transport retries)."""

    request: PlannedRequest
    delivered: bool  # HTTP: answered 302; Kafka: acked
    attempts: int  # 1 + transport retries
    sent_ms: int  # wall clock just before the last attempt (~ the server's received_at)
    status: int | None = None  # final HTTP status, None if never answered / Kafka
    error: str | None = None


class _EventState:
    """Per event_id: the attributes of its first copy (no token, no headers: ~0.5 KB/click)."""

    __slots__ = (
        "seq",
        "impression_id",
        "advertiser_id",
        "campaign_id",
        "ad_id",
        "publisher_id",
        "event_time_ms",
        "kind",
        "fraud_reason",
        "late_band",
        "ip",
        "user_agent",
        "user_id",
        "copies_sent",
        "copies_delivered",
        "attempts",
        "received_ms",
    )

    def __init__(self, req: PlannedRequest) -> None:
        self.copies_sent = self.copies_delivered = self.attempts = 0
        self.received_ms: int | None = None  # earliest delivered copy's send time
        self.take_attributes(req)

    def take_attributes(self, req: PlannedRequest) -> None:
        self.seq = req.seq
        self.impression_id = req.impression_id
        self.advertiser_id = req.advertiser_id
        self.campaign_id = req.campaign_id
        self.ad_id = req.ad_id
        self.publisher_id = req.publisher_id
        self.event_time_ms = req.event_time_ms
        self.kind = req.kind
        self.fraud_reason = req.fraud_reason
        self.late_band = req.late_band
        self.ip = req.ip
        self.user_agent = req.user_agent
        self.user_id = req.user_id


def minute_start(ms: int) -> int:
    return ms - ms % 60_000


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def utc_day(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d")


@dataclass
class GroundTruth:
    """Expected results of a run. `exact` is False if some event_id never got a 302/ack: such
    a click may or may not be in the log, so counts are then only a lower bound."""

    totals: dict
    per_minute: list[dict]
    per_day: list[dict]
    exact: bool


class GroundTruthBuilder:
    """Accumulates `SentClick`s in any order (completion order is not send order).

    Rules: an event_id counts once if at least one copy was delivered; its event time is the
    `t` all its copies carry; fraud-like clicks (and every copy of them) are never billable;
    late / very late compare the first delivered copy's send time with the event time.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._campaigns = catalog.by_id()
        self._events: dict[str, _EventState] = {}
        self._requests = 0
        self._attempts = 0
        self._delivered_requests = 0
        self._dup_sent: Counter[str] = Counter()

    def add(self, sent: SentClick) -> None:
        req = sent.request
        st = self._events.get(req.event_id)
        if st is None:
            st = self._events[req.event_id] = _EventState(req)
        elif req.seq < st.seq:
            st.take_attributes(req)
        st.copies_sent += 1
        st.attempts += sent.attempts
        self._requests += 1
        self._attempts += sent.attempts
        if req.duplicate is not None:
            self._dup_sent[req.duplicate] += 1
        if sent.delivered:
            st.copies_delivered += 1
            self._delivered_requests += 1
            if st.received_ms is None or sent.sent_ms < st.received_ms:
                st.received_ms = sent.sent_ms

    def build(self) -> GroundTruth:
        minute: dict[tuple[int, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        day: Counter[tuple[str, str, str]] = Counter()
        fraud: Counter[str] = Counter()
        late = very_late = billable = spend = undelivered = 0
        for st in self._events.values():
            if st.received_ms is None:
                undelivered += 1
                continue
            lag = st.received_ms - st.event_time_ms
            late += lag > LATE_THRESHOLD_MS
            very_late += lag > VERY_LATE_THRESHOLD_MS
            key = (minute_start(st.event_time_ms), st.advertiser_id, st.campaign_id, st.ad_id)
            if st.fraud_reason is not None:
                fraud[st.fraud_reason] += 1
                minute[key][1] += 1
                continue
            billable += 1
            spend += self._campaigns[st.campaign_id].cpc_micros
            minute[key][0] += 1
            day[(utc_day(st.event_time_ms), st.advertiser_id, st.campaign_id)] += 1
        unique_delivered = len(self._events) - undelivered
        totals = {
            "requests_sent": self._requests,
            "attempts": self._attempts,
            "transport_retries": self._attempts - self._requests,
            "delivered": self._delivered_requests,
            "failed": self._requests - self._delivered_requests,
            "unique_event_ids_sent": len(self._events),
            "unique_event_ids": unique_delivered,
            "undelivered_event_ids": undelivered,
            "duplicates": self._delivered_requests - unique_delivered,
            "duplicates_sent_by_kind": dict(sorted(self._dup_sent.items())),
            "late": late,
            "very_late": very_late,
            "fraud_like": sum(fraud.values()),
            "fraud_like_by_reason": {r: fraud.get(r, 0) for r in (REASON_BOT_UA, REASON_IP_RATE)},
            "billable": billable,
            "spend_micros": spend,
        }
        return GroundTruth(
            totals=totals,
            per_minute=self._minute_rows(minute),
            per_day=self._day_rows(day),
            exact=undelivered == 0,
        )

    def _minute_rows(self, minute: dict) -> list[dict]:
        rows = []
        for (m, adv, cmp, ad), (billable, fraud) in sorted(minute.items()):
            rows.append(
                {
                    "minute_ms": m,
                    "minute": iso_utc(m),
                    "advertiser_id": adv,
                    "campaign_id": cmp,
                    "ad_id": ad,
                    "billable": billable,
                    "fraud_like": fraud,
                    "spend_micros": billable * self._campaigns[cmp].cpc_micros,
                }
            )
        return rows

    def _day_rows(self, day: Counter) -> list[dict]:
        rows = []
        for (d, adv, cmp), billable in sorted(day.items()):
            cpc = self._campaigns[cmp].cpc_micros
            rows.append(
                {
                    "day": d,
                    "advertiser_id": adv,
                    "campaign_id": cmp,
                    "billable": billable,
                    "cpc_micros": cpc,
                    "spend_micros": billable * cpc,
                }
            )
        return rows

    def iter_event_rows(self) -> Iterator[dict]:
        """One row per unique event_id, in first-send order (streamed: runs can be large)."""
        for event_id, st in sorted(self._events.items(), key=lambda kv: kv[1].seq):
            yield {
                "event_id": event_id,
                "impression_id": st.impression_id,
                "advertiser_id": st.advertiser_id,
                "campaign_id": st.campaign_id,
                "ad_id": st.ad_id,
                "publisher_id": st.publisher_id,
                "event_time": st.event_time_ms,
                "received_ms": st.received_ms,
                "kind": st.kind,
                "fraud_reason": st.fraud_reason,
                "billable": st.received_ms is not None and st.fraud_reason is None,
                "delivered": st.received_ms is not None,
                "late_band": st.late_band,
                "copies_sent": st.copies_sent,
                "copies_delivered": st.copies_delivered,
                "attempts": st.attempts,
                "ip": st.ip,
                "user_agent": st.user_agent,
                "user_id": st.user_id,
            }


def build_ground_truth(catalog: Catalog, sent: Iterable[SentClick]) -> GroundTruth:
    builder = GroundTruthBuilder(catalog)
    for s in sent:
        builder.add(s)
    return builder.build()


def _ip_key(kind: np.ndarray, user: np.ndarray) -> np.ndarray:
    """An integer per distinct client IP (mirrors `_identity`), for vectorized counting."""
    normal = (user + 1) % (1 << 24)
    bot = (1 << 25) + (user + 1) % (1 << 22)
    burst = (1 << 26) + user % (1 << 17)
    return np.where(kind == KIND_BURST, burst, np.where(kind == KIND_BOT_UA, bot, normal))


def schedule_checks(plan: LoadPlan, schedule: Schedule) -> dict:
    """Verify the fraud ground truth is unambiguous: per (client IP, event-time minute), every
    request counted (duplicates too), ordinary IPs stay <= the threshold and every burst IP is
    above it. Vectorized over the schedule, so it costs nothing per click in Python."""
    u = schedule.req_unique
    kind = schedule.kind[u]
    start = plan.require_start_ms() - CLOCK_MARGIN_MS
    minute = (start + schedule.primary_offset_ms[u] - schedule.lateness_ms[u]) // 60_000
    keys = (_ip_key(kind, schedule.user[u]).astype(np.int64) << 27) | minute.astype(np.int64)
    uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
    is_burst = kind[first] == KIND_BURST
    max_normal = int(counts[~is_burst].max()) if (~is_burst).any() else 0
    min_burst = int(counts[is_burst].min()) if is_burst.any() else None
    return {
        "max_clicks_per_ip_minute_non_burst": max_normal,
        "min_clicks_per_ip_minute_burst": min_burst,
        "burst_ips": int(len(np.unique(uniq[is_burst] >> 27))),
        "fraud_rules_unambiguous": max_normal <= IP_RATE_THRESHOLD
        and (min_burst is None or min_burst > IP_RATE_THRESHOLD),
    }


def planned_counts(plan: LoadPlan, schedule: Schedule) -> dict:
    """What the plan intended (independent of delivery): kinds, duplicates, lateness bands."""
    kinds = np.bincount(schedule.kind, minlength=3)
    dups = np.bincount(schedule.req_dup, minlength=3)
    bands = np.bincount(schedule.band[schedule.band >= 0], minlength=len(plan.lateness_mix))
    return {
        "requests": int(len(schedule.req_unique)),
        "unique_clicks": int(len(schedule.kind)),
        "by_kind": {name: int(kinds[i]) for i, name in enumerate(_KIND_NAMES)},
        "duplicates": {"double_click": int(dups[1]), "retry": int(dups[2])},
        "late_by_band": {b.name: int(bands[i]) for i, b in enumerate(plan.lateness_mix)},
        "bursts": int(len(np.unique(schedule.user[schedule.kind == KIND_BURST]))),
    }


def build_manifest(
    plan: LoadPlan,
    catalog: Catalog,
    truth: GroundTruth,
    *,
    target: str,
    endpoint: str,
    run: dict,
    planned: dict,
    checks: dict,
    events_file: str,
) -> dict:
    """The manifest document (serialize with sort_keys for a stable key order)."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "generator": "clickagg load",
        "target": target,
        "endpoint": endpoint,
        "plan": plan.to_json(),
        "run": run,
        "catalog": catalog.to_json(),
        "fraud_rules": fraud_rules(),
        "lateness": {
            "late_threshold_ms": LATE_THRESHOLD_MS,
            "very_late_threshold_ms": VERY_LATE_THRESHOLD_MS,
            "definition": "received time (send time of the first delivered copy) minus "
            "event time; very_late clicks are also counted in late",
            "client_time_param": "t (epoch ms) on every request; the capture must record "
            "event_time == t (requests are never sent before t + clock_margin_ms)",
            "clock_margin_ms": CLOCK_MARGIN_MS,
        },
        "exact": truth.exact,
        "planned": planned,
        "totals": truth.totals,
        "checks": checks,
        "per_minute": truth.per_minute,
        "per_day": truth.per_day,
        "events_file": events_file,
    }
