"""Effectively-once under failure, against the real services: SIGKILL of the worker at random
moments mid-stream, ClickHouse stopped and restarted mid-stream, two workers with a rebalance
and one of them killed. Every case must end with hot totals == the independent recount."""

from __future__ import annotations

import random
import subprocess

import pytest

from tests.conftest import wait_until
from tests.integration.stream_harness import (
    ROOT,
    Feed,
    Placed,
    Worker,
    metric_value,
    now_ms,
    produce,
    totals,
    wait_equal,
)
from tests.unit.stream_sim import expected_billable, make_events

pytestmark = [
    pytest.mark.integration,
    pytest.mark.fault,
    pytest.mark.usefixtures("stream_internal_topics"),
]


def processed(worker: Worker) -> float:
    try:
        return metric_value(worker.metrics(), "clickagg_stream_events_total")
    except Exception:  # noqa: BLE001 - not up yet
        return 0.0


def owned(worker: Worker) -> float:
    try:
        return metric_value(worker.metrics(), "clickagg_stream_assigned_partitions")
    except Exception:  # noqa: BLE001 - not up yet
        return 0.0


def test_sigkill_mid_stream_three_times(settings, kafka_topic, ch_database, tmp_path, unique):
    events = make_events(seed=21, n=30_000, start_ms=now_ms() - 3_600_000)
    placed = Placed()
    feed = Feed(settings, events, placed, chunks=4)
    worker = Worker(settings, tmp_path / "w", f"t{unique}")
    rng = random.Random(unique)  # kill points vary from run to run (and are in the log)
    kills = 0
    try:
        for _ in range(3):
            worker.start()
            feed.send()  # a quarter arrives while it runs (on top of what came while it was dead)
            at = rng.randrange(200, 6000)  # below a quarter: the kill is always mid-stream
            wait_until(lambda at=at: processed(worker) > at, 60, f"{at} records processed")
            worker.kill()
            kills += 1
        feed.rest()  # the last quarter lands while no worker runs
        assert feed.left == 0
        assert totals(settings) != expected_billable(placed.by_partition())  # not done yet
        worker.start()
        wait_equal(settings, expected_billable(placed.by_partition()), 120, [worker])
        assert kills == 3
    finally:
        worker.stop()


def clickhouse(cmd: str) -> None:
    subprocess.run(["bash", str(ROOT / "infra/clickhouse.sh"), cmd], check=True, timeout=120)


def test_clickhouse_outage_mid_stream(settings, kafka_topic, ch_database, tmp_path, unique):
    first = make_events(seed=31, n=5000, start_ms=now_ms() - 3_600_000)
    second = make_events(seed=32, n=8000, start_ms=now_ms() - 3_000_000)
    placed = Placed()
    produce(settings, first, placed)
    worker = Worker(settings, tmp_path / "w", f"t{unique}").start()
    try:
        wait_equal(settings, expected_billable(placed.by_partition()), 90, [worker])
        clickhouse("stop")
        try:
            produce(settings, second, placed)
            wait_until(
                lambda: (
                    metric_value(worker.metrics(), "clickagg_stream_sink_errors_total") >= 2
                    and processed(worker) >= len(first) + len(second)
                ),
                60,
                "worker consuming while the sink fails",
            )
            pending = metric_value(worker.metrics(), "clickagg_stream_sink_pending_rows")
            keys = {
                (p, ev.event_time // 60_000, ev.campaign_id, ev.ad_id)
                for p, evs in placed.by_partition().items()
                for ev in evs
            }
            # bounded by keys x partitions (clicks rows + fraud rows), not by events
            assert 0 < pending <= 2 * len(keys) < len(first) + len(second)
            assert worker.alive()
            # crash while rows wait for the sink: they are in the checkpoints, not only in RAM
            wait_until(
                lambda: (
                    metric_value(worker.metrics(), "clickagg_stream_uncheckpointed_records") == 0
                ),
                30,
                "a checkpoint after the last record (it holds the pending rows)",
            )
            worker.kill()
            worker.start()
        finally:
            clickhouse("start")
        wait_equal(settings, expected_billable(placed.by_partition()), 90, [worker])
    finally:
        worker.stop()


def test_two_workers_rebalance_and_kill(settings, kafka_topic, ch_database, tmp_path, unique):
    events = make_events(seed=41, n=24_000, start_ms=now_ms() - 3_600_000)
    placed = Placed()
    feed = Feed(settings, events, placed, chunks=4)
    a = Worker(settings, tmp_path / "a", f"t{unique}").start()
    b = Worker(settings, tmp_path / "b", f"t{unique}")
    try:
        feed.send()
        wait_until(lambda: processed(a) > 1000, 60, "worker A progress")
        b.start()
        feed.send()  # traffic during the rebalance
        wait_until(
            lambda: 0 < owned(b) and 0 < owned(a) < 2 * settings.clicks_partitions,
            60,
            "a rebalance sharing the partitions between A and B",
        )
        a.kill()  # B must take A's partitions, rebuilding them from the Kafka changelog
        feed.send()  # traffic while B takes them over
        wait_until(lambda: owned(b) == 2 * settings.clicks_partitions, 60, "B owns all")
        feed.rest()
        assert feed.left == 0
        wait_equal(settings, expected_billable(placed.by_partition()), 120, [a, b])
        assert "deltas applied" in b.log_path.read_text()
    finally:
        a.stop()
        b.stop()


def kafka(cmd: str) -> None:
    subprocess.run(["bash", str(ROOT / "infra/kafka.sh"), cmd], check=True, timeout=180)


def test_broker_restart_mid_stream(settings, kafka_topic, ch_database, tmp_path, unique):
    first = make_events(seed=51, n=5000, start_ms=now_ms() - 3_600_000)
    second = make_events(seed=52, n=5000, start_ms=now_ms() - 3_000_000)
    placed = Placed()
    produce(settings, first, placed)
    worker = Worker(settings, tmp_path / "w", f"t{unique}").start()
    try:
        wait_until(lambda: processed(worker) > 1000, 60, "worker progress")
        kafka("kill")  # SIGKILL the broker mid-stream
        kafka("start")
        produce(settings, second, placed)
        wait_equal(settings, expected_billable(placed.by_partition()), 150, [worker])
        assert worker.alive()
    finally:
        kafka("start")
        worker.stop()


def test_checkpoint_write_fails_and_rewinds(settings, kafka_topic, ch_database, tmp_path, unique):
    """Kafka stopped for longer than the checkpoint timeout while the worker holds unsaved
    progress: the checkpoint being written fails, the worker rewinds to its last durable state
    and, once Kafka is back, rebuilds it and replays. Totals stay exact."""
    first = make_events(seed=61, n=4000, start_ms=now_ms() - 3_600_000)
    second = make_events(seed=62, n=4000, start_ms=now_ms() - 3_000_000)
    placed = Placed()
    worker = Worker(
        settings,
        tmp_path / "w",
        f"t{unique}",
        CLICKAGG_STREAM_CHECKPOINT_INTERVAL_S="3",
        CLICKAGG_STREAM_CHECKPOINT_TIMEOUT_S="2",
    ).start()

    def unsaved() -> float:
        try:
            return metric_value(worker.metrics(), "clickagg_stream_uncheckpointed_records")
        except Exception:  # noqa: BLE001 - not up yet
            return 0.0

    def failures() -> float:
        return metric_value(worker.metrics(), "clickagg_stream_checkpoint_failures_total")

    try:
        wait_until(lambda: owned(worker) > 0, 60, "worker assignment")
        produce(settings, first, placed)
        wait_until(lambda: unsaved() > 0, 60, "records processed, not yet checkpointed")
        kafka("stop")
        wait_until(lambda: failures() >= 1, 60, "a failed checkpoint write")
        kafka("start")
        produce(settings, second, placed)
        wait_equal(settings, expected_billable(placed.by_partition()), 150, [worker])
        assert worker.alive()
        assert "rewinding to the last durable state" in worker.log_path.read_text()
    finally:
        kafka("start")
        worker.stop()
