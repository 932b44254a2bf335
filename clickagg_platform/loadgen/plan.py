"""`LoadPlan`: everything that determines the traffic, validated up front."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, replace

MAX_REQUESTS = 50_000_000
MAX_LATENESS_S = 24 * 3600

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9]{1,16}$")


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
