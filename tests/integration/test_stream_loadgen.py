"""The stream against the shared seeded generator (`clickagg_platform.loadgen`) and ITS ground
truth: duplicates (double clicks, retries), out-of-order and late clicks (all within the allowed
lateness), bot UAs and IP bursts -> hot totals == the manifest's billable per minute, exactly."""

from __future__ import annotations

from collections import Counter

import pytest

from clickagg_platform.loadgen import (
    GroundTruthBuilder,
    LatenessBand,
    LoadPlan,
    SentClick,
    build_catalog,
    generate_requests,
    simulate_capture,
)
from tests.integration.stream_harness import (
    Placed,
    Worker,
    now_ms,
    produce,
    wait_equal,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stream_internal_topics")]


WITHIN_LATENESS = (  # at most 8 min late: inside the stream's 10 min allowed lateness
    LatenessBand("out_of_order", 0.5, 2.0, 45.0),
    LatenessBand("late", 0.5, 120.0, 480.0),
)


def test_stream_matches_loadgen_ground_truth(settings, kafka_topic, ch_database, tmp_path, unique):
    plan = LoadPlan(
        seed=9,
        rate=300.0,
        clicks=9000,
        late_fraction=0.08,
        lateness_mix=WITHIN_LATENESS,
        bot_fraction=0.05,
        duplicate_fraction=0.08,
        start_ms=now_ms() - 2 * 3_600_000,
    )
    catalog = build_catalog(plan)
    requests = list(generate_requests(plan, catalog, settings.keyring(), settings.active_key_id))
    truth_builder = GroundTruthBuilder(catalog)
    for req in requests:  # sent in schedule order, accepted at the scheduled time
        truth_builder.add(SentClick(req, True, 1, req.scheduled_ms))
    truth = truth_builder.build()
    assert truth.exact and truth.totals["very_late"] == 0
    assert truth.totals["fraud_like_by_reason"]["ip_rate"] > 0 and truth.totals["duplicates"] > 0
    want = Counter()
    for row in truth.per_minute:
        if row["billable"]:
            want[(row["minute_ms"], row["campaign_id"], row["ad_id"])] += row["billable"]

    placed = Placed()
    produce(settings, [simulate_capture(r, r.scheduled_ms) for r in requests], placed)
    worker = Worker(settings, tmp_path / "w", f"t{unique}").start()
    try:
        wait_equal(settings, want, timeout=90, workers=[worker])
    finally:
        worker.stop()
