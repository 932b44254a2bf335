"""The manifest: plan, catalog, rules, planned counts, checks and the ground truth in one doc.

`schedule_checks` and `planned_counts` summarize the schedule itself (what was intended,
independent of delivery); `build_manifest` puts them next to the ground truth.
"""

from __future__ import annotations

import numpy as np

from clickagg_platform.loadgen.catalog import Catalog
from clickagg_platform.loadgen.identity import ip_key
from clickagg_platform.loadgen.plan import LoadPlan
from clickagg_platform.loadgen.rules import (
    CLOCK_MARGIN_MS,
    IP_RATE_THRESHOLD,
    LATE_THRESHOLD_MS,
    VERY_LATE_THRESHOLD_MS,
    fraud_rules,
)
from clickagg_platform.loadgen.schedule import KIND_BURST, KIND_NAMES, Schedule
from clickagg_platform.loadgen.truth import GroundTruth

MANIFEST_VERSION = 1


def schedule_checks(plan: LoadPlan, schedule: Schedule) -> dict:
    """Verify the fraud ground truth is unambiguous: per (client IP, event-time minute), every
    request counted (duplicates too), ordinary IPs stay <= the threshold and every burst IP is
    above it. Vectorized over the schedule, so it costs nothing per click in Python."""
    u = schedule.req_unique
    kind = schedule.kind[u]
    start = plan.require_start_ms() - CLOCK_MARGIN_MS
    minute = (start + schedule.primary_offset_ms[u] - schedule.lateness_ms[u]) // 60_000
    keys = (ip_key(kind, schedule.user[u]).astype(np.int64) << 27) | minute.astype(np.int64)
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
        "by_kind": {name: int(kinds[i]) for i, name in enumerate(KIND_NAMES)},
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
