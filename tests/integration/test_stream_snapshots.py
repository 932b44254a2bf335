"""A worker on a new disk restores stage 1's state from the newest snapshot in the object store
and reads only the changelog after it (not its whole history), then ends exact."""

from __future__ import annotations

import pytest

from tests.conftest import wait_until
from tests.integration.stream_harness import (
    Feed,
    Placed,
    Worker,
    metric_value,
    now_ms,
    wait_equal,
)
from tests.unit.stream_sim import expected_billable, make_events

pytestmark = [
    pytest.mark.integration,
    pytest.mark.fault,
    pytest.mark.usefixtures("stream_internal_topics"),
]


def value(worker: Worker, name: str) -> float:
    try:
        return metric_value(worker.metrics(), name)
    except Exception:  # noqa: BLE001 - not up yet
        return -1.0


def counter_checkpoints(worker: Worker) -> float:
    """Stage-1 deltas written: the changelog records a full replay would read."""
    return value(worker, "clickagg_stream_checkpoints_total")


def test_new_disk_restores_the_snapshot_then_reads_only_the_tail(
    settings, kafka_topic, ch_database, tmp_path, unique
):
    events = make_events(seed=31, n=20_000, start_ms=now_ms() - 3_600_000)
    placed = Placed()
    feed = Feed(settings, events, placed, chunks=10)
    app = f"t{unique}"
    fast = {"CLICKAGG_STREAM_SNAPSHOT_INTERVAL_S": "1"}
    first = Worker(settings, tmp_path / "a", app, **fast)
    second = Worker(settings, tmp_path / "b", app, **fast)  # a new machine: an empty disk
    try:
        first.start()
        for _ in range(8):  # a checkpoint per chunk and partition at least: a long changelog
            feed.send()
            wait_equal(settings, expected_billable(placed.by_partition()), 90, [first])
        snapshots = value(first, "clickagg_stream_snapshots_total")
        feed.send()  # the next checkpoints take a snapshot of every partition (due by now)
        wait_until(
            lambda: (
                value(first, "clickagg_stream_snapshots_total")
                >= snapshots + settings.clicks_partitions
            ),
            60,
            "a snapshot of every partition after the long changelog",
        )
        wait_equal(settings, expected_billable(placed.by_partition()), 90, [first])
        written = counter_checkpoints(first)
        first.kill()
        feed.send()  # arrives while no worker runs
        assert feed.left == 0
        second.start()
        wait_equal(settings, expected_billable(placed.by_partition()), 90, [second])
        restored = [
            ln for ln in second.log_path.read_text().splitlines() if "restored the snap" in ln
        ]
        stage1 = [ln for ln in restored if f"topic='{settings.clicks_topic}'" in ln]
        assert len(stage1) == settings.clicks_partitions, second.log_tail()
        assert len(restored) == 2 * settings.clicks_partitions  # stage 2's too
        applied = metric_value(
            second.metrics(), 'clickagg_stream_recovery_deltas_total{stage="counter"}'
        )
        # stage 1 read at most the record or two after each snapshot, not the ~10 before it
        assert applied <= 2 * settings.clicks_partitions, (applied, written)
        assert written >= 8 * settings.clicks_partitions
    finally:
        first.kill()
        second.kill()
