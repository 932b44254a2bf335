"""The Faust worker against the real broker and ClickHouse: seeded clicks with duplicates,
out-of-order, late and too-late clicks, bot UAs and IP bursts -> the hot totals equal an
independent recount (tests/unit/stream_sim.py) exactly."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until
from tests.integration.stream_harness import (
    Placed,
    Worker,
    metric_value,
    now_ms,
    produce,
    produce_raw,
    wait_equal,
)
from tests.unit.stream_sim import expected_billable, make_events

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stream_internal_topics")]


def test_worker_counts_equal_ground_truth(settings, kafka_topic, ch_database, tmp_path, unique):
    events = make_events(seed=11, n=6000, start_ms=now_ms() - 3_600_000)
    placed = Placed()
    produce_raw(settings, [b"not a click", b'{"event_id": 1}'])  # skipped, never fatal
    produce(settings, events, placed)
    want = expected_billable(placed.by_partition())
    assert sum(want.values()) > 4000
    worker = Worker(settings, tmp_path / "w1", f"t{unique}").start()
    try:
        wait_equal(settings, want, timeout=90, workers=[worker])
        text = wait_until(lambda: worker.metrics(), 10, "metrics page")
        dups = sum(1 for _ in events) - len({e.event_id for e in events})
        assert metric_value(text, "clickagg_stream_duplicates_total") == dups
        assert metric_value(text, "clickagg_stream_too_late_total") > 0
        assert metric_value(text, 'clickagg_stream_fraud_flagged_total{reason="ip_rate"}') > 0
        assert metric_value(text, 'clickagg_stream_fraud_flagged_total{reason="bot_ua"}') > 0
        assert metric_value(text, "clickagg_stream_bad_records_total") == 2
        assert "clickagg_stream_consumer_lag" in text and "clickagg_stream_sink_seconds" in text
    finally:
        worker.stop()


def test_stages_in_separate_workers(settings, kafka_topic, ch_database, tmp_path, unique):
    """Stage 1 and stage 2 scaled apart (CLICKAGG_STREAM_STAGES): same exact totals."""
    events = make_events(seed=12, n=5000, start_ms=now_ms() - 3_600_000)
    placed = Placed()
    produce(settings, events, placed)
    want = expected_billable(placed.by_partition())
    app = f"t{unique}"
    counter = Worker(settings, tmp_path / "c", app, CLICKAGG_STREAM_STAGES="counter").start()
    iprate = Worker(settings, tmp_path / "i", app, CLICKAGG_STREAM_STAGES="iprate").start()
    try:
        wait_equal(settings, want, timeout=90, workers=[counter, iprate])
        text = iprate.metrics()
        assert metric_value(text, 'clickagg_stream_fraud_flagged_total{reason="ip_rate"}') > 0
        assert metric_value(text, "clickagg_stream_duplicates_total") == 0  # stage 1 is elsewhere
    finally:
        counter.stop()
        iprate.stop()
