"""Drift between the hot (streaming) totals and the batch truth, per (minute, campaign, ad).

`drift = hot - batch`. Part of it is expected: clicks that arrive after the stream's allowed
lateness are counted only by the batch (`stream_too_late`, computed by the reconcile transform
from the raw log). What remains, `unexplained = hot - (batch - stream_too_late)`, is a bug
somewhere (a hot path dropping or double-counting clicks) and is what the blocking check gates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[int, str, str]  # (minute epoch ms, campaign_id, ad_id)

OK, LATE_ONLY, DIFFERS, MISSING_IN_HOT, MISSING_IN_BATCH = (
    "ok",
    "late_only",
    "differs",
    "missing_in_hot",
    "missing_in_batch",
)


@dataclass(frozen=True)
class DriftRow:
    window_start_ms: int
    campaign_id: str
    ad_id: str
    hot_clicks: int
    batch_clicks: int
    stream_too_late: int
    drift: int  # hot - batch
    rel_drift: float  # |drift| / batch (1.0 when batch is 0 and hot is not)
    unexplained: int  # hot - (batch - stream_too_late)
    status: str


def _rel(diff: int, base: int) -> float:
    if base:
        return abs(diff) / base
    return 1.0 if diff else 0.0


def compare(hot: dict[Key, int], batch: dict[Key, tuple[int, int]]) -> list[DriftRow]:
    """One row per key present on either side (keys with 0 on both sides are omitted)."""
    rows = []
    for key in sorted(set(hot) | set(batch)):
        h = int(hot.get(key, 0))
        b, late = batch.get(key, (0, 0))
        if h == 0 and b == 0:
            continue
        drift, unexplained = h - b, h - (b - late)
        if key not in hot or h == 0:
            status = MISSING_IN_HOT if unexplained else LATE_ONLY
        elif key not in batch or b == 0:
            status = MISSING_IN_BATCH
        elif unexplained:
            status = DIFFERS
        elif drift:
            status = LATE_ONLY
        else:
            status = OK
        rows.append(
            DriftRow(key[0], key[1], key[2], h, b, late, drift, _rel(drift, b), unexplained, status)
        )
    return rows


@dataclass
class DriftSummary:
    hot_total: int
    batch_total: int
    stream_too_late: int
    drift: int
    unexplained_abs: int  # sum of |unexplained| over keys
    unexplained_rel: float  # unexplained_abs / batch_total
    keys: int
    keys_missing_in_hot: int
    keys_missing_in_batch: int
    keys_differing: int
    passed: bool
    offenders: list[DriftRow] = field(default_factory=list)  # worst unexplained keys

    def describe(self, limit: int = 10) -> str:
        if not self.offenders:
            return "no unexplained drift"
        parts = [
            f"{r.campaign_id}/{r.ad_id}@{_iso(r.window_start_ms)}: hot={r.hot_clicks} "
            f"batch={r.batch_clicks} late={r.stream_too_late} ({r.status})"
            for r in self.offenders[:limit]
        ]
        more = len(self.offenders) - limit
        return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def summarize(
    rows: list[DriftRow], max_unexplained_rel: float = 0.0, max_unexplained_abs: int = 0
) -> DriftSummary:
    """Passes when unexplained drift is within the relative share of the batch total OR the
    absolute click count allowed (both 0 by default: the stream must be exact once the
    explained late clicks are taken out)."""
    batch_total = sum(r.batch_clicks for r in rows)
    unexplained_abs = sum(abs(r.unexplained) for r in rows)
    rel = unexplained_abs / batch_total if batch_total else (1.0 if unexplained_abs else 0.0)
    offenders = sorted(
        (r for r in rows if r.unexplained),
        key=lambda r: (-abs(r.unexplained), r.window_start_ms, r.campaign_id, r.ad_id),
    )
    return DriftSummary(
        hot_total=sum(r.hot_clicks for r in rows),
        batch_total=batch_total,
        stream_too_late=sum(r.stream_too_late for r in rows),
        drift=sum(r.drift for r in rows),
        unexplained_abs=unexplained_abs,
        unexplained_rel=rel,
        keys=len(rows),
        keys_missing_in_hot=sum(r.status == MISSING_IN_HOT for r in rows),
        keys_missing_in_batch=sum(r.status == MISSING_IN_BATCH for r in rows),
        keys_differing=sum(r.status == DIFFERS for r in rows),
        passed=rel <= max_unexplained_rel or unexplained_abs <= max_unexplained_abs,
        offenders=offenders,
    )
