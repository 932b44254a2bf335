"""Seeded ad-click traffic and its ground truth: everything behind `clickagg load`.

A `LoadPlan` and its seed fully determine a campaign `Catalog` and the sequence of
`PlannedRequest`s (URL path + query, headers, scheduled send offset, the click's event time),
so the minute bucket of every click is known exactly to the generator. `GroundTruthBuilder`
turns what was actually sent (and acknowledged) into the expected results.

Pure logic (no I/O), re-exported here:
- `rules`: fraud and lateness definitions shared with the stream (`is_bot_user_agent`, ...)
- `plan`: `LoadPlan` and its validation
- `catalog`: advertisers, campaigns, ads and CPCs
- `schedule`: every unique click, its kind, lateness, duplicates and send time
- `identity`: the IP / User-Agent / user id a click comes from
- `requests`: the exact requests (`generate_requests`) and `simulate_capture`
- `truth`: `SentClick`, `GroundTruthBuilder`, `GroundTruth`
- `manifest`: schedule checks, planned counts and the manifest document

The I/O around it (imported from their modules, not here, so importing the pure part stays
free of httpx and Kafka): `pacing` (the absolute-time dispatcher), `session` (prepare a run,
write manifest + events.jsonl), `run_http` (capture service) and `run_kafka` (topic).
"""

from clickagg_platform.loadgen.catalog import Ad, Campaign, Catalog, build_catalog
from clickagg_platform.loadgen.manifest import (
    MANIFEST_VERSION,
    build_manifest,
    planned_counts,
    schedule_checks,
)
from clickagg_platform.loadgen.plan import (
    DEFAULT_LATENESS_MIX,
    MAX_LATENESS_S,
    MAX_REQUESTS,
    LatenessBand,
    LoadPlan,
)
from clickagg_platform.loadgen.requests import (
    DEFAULT_TOKEN_TTL_S,
    PlannedRequest,
    generate_requests,
    simulate_capture,
)
from clickagg_platform.loadgen.rules import (
    BOT_UA_IP_NETWORK,
    BOT_UA_MARKERS,
    BOT_USER_AGENTS,
    BURST_IP_NETWORK,
    BURST_MAX_CLICKS,
    BURST_MIN_CLICKS,
    BURST_SPAN_MS,
    CLIENT_TIME_MAX_AHEAD_MS,
    CLOCK_MARGIN_MS,
    IP_RATE_THRESHOLD,
    IP_RATE_WINDOW_S,
    LATE_THRESHOLD_MS,
    NORMAL_IP_NETWORK,
    NORMAL_USER_AGENTS,
    REASON_BOT_UA,
    REASON_IP_RATE,
    VERY_LATE_THRESHOLD_MS,
    fraud_rules,
    is_bot_user_agent,
)
from clickagg_platform.loadgen.schedule import (
    DOUBLE_CLICK_DELAY_MS,
    IMPRESSION_TO_CLICK_S,
    KIND_BOT_UA,
    KIND_BURST,
    KIND_NORMAL,
    MAX_USERS,
    RETRY_DELAY_MS,
    USERS_PER_RPS,
    Schedule,
    plan_schedule,
)
from clickagg_platform.loadgen.truth import (
    GroundTruth,
    GroundTruthBuilder,
    SentClick,
    build_ground_truth,
    iso_utc,
    minute_start,
    utc_day,
)

__all__ = [
    "BOT_UA_IP_NETWORK",
    "BOT_UA_MARKERS",
    "BOT_USER_AGENTS",
    "BURST_IP_NETWORK",
    "BURST_MAX_CLICKS",
    "BURST_MIN_CLICKS",
    "BURST_SPAN_MS",
    "CLIENT_TIME_MAX_AHEAD_MS",
    "CLOCK_MARGIN_MS",
    "DEFAULT_LATENESS_MIX",
    "DEFAULT_TOKEN_TTL_S",
    "DOUBLE_CLICK_DELAY_MS",
    "IMPRESSION_TO_CLICK_S",
    "IP_RATE_THRESHOLD",
    "IP_RATE_WINDOW_S",
    "KIND_BOT_UA",
    "KIND_BURST",
    "KIND_NORMAL",
    "LATE_THRESHOLD_MS",
    "MANIFEST_VERSION",
    "MAX_LATENESS_S",
    "MAX_REQUESTS",
    "MAX_USERS",
    "NORMAL_IP_NETWORK",
    "NORMAL_USER_AGENTS",
    "REASON_BOT_UA",
    "REASON_IP_RATE",
    "RETRY_DELAY_MS",
    "USERS_PER_RPS",
    "VERY_LATE_THRESHOLD_MS",
    "Ad",
    "Campaign",
    "Catalog",
    "GroundTruth",
    "GroundTruthBuilder",
    "LatenessBand",
    "LoadPlan",
    "PlannedRequest",
    "Schedule",
    "SentClick",
    "build_catalog",
    "build_ground_truth",
    "build_manifest",
    "fraud_rules",
    "generate_requests",
    "is_bot_user_agent",
    "iso_utc",
    "minute_start",
    "plan_schedule",
    "planned_counts",
    "schedule_checks",
    "simulate_capture",
    "utc_day",
]
