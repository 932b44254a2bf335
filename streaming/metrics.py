"""Prometheus metrics of the stream worker and the archiver (served on the Faust web port).

Counters are process-local and may re-count after a replay (they are telemetry, not billing).
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

EVENTS = Counter("clickagg_stream_events_total", "Source records processed", ["outcome"])
DUPLICATES = Counter("clickagg_stream_duplicates_total", "Clicks dropped as duplicate event_id")
LATE_CORRECTIONS = Counter(
    "clickagg_stream_late_corrections_total",
    "Clicks counted into a window the watermark had already passed (within allowed lateness)",
)
TOO_LATE = Counter(
    "clickagg_stream_too_late_total", "Clicks beyond allowed lateness (left to the batch path)"
)
FRAUD = Counter("clickagg_stream_fraud_flagged_total", "Clicks flagged, not billed", ["reason"])
BAD_RECORDS = Counter("clickagg_stream_bad_records_total", "Undecodable source records")
CONSUMER_LAG = Gauge(
    "clickagg_stream_consumer_lag", "High watermark minus position", ["topic", "partition"]
)
WATERMARK_LAG = Gauge(
    "clickagg_stream_watermark_lag_seconds", "Now minus the partition's watermark", ["partition"]
)
EVENTS_PER_S = Gauge("clickagg_stream_events_per_second", "Source records/s, last interval")
SINK_LATENCY = Histogram(
    "clickagg_stream_sink_seconds",
    "ClickHouse insert latency",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SINK_ERRORS = Counter("clickagg_stream_sink_errors_total", "Failed ClickHouse inserts")
SINK_PENDING = Gauge("clickagg_stream_sink_pending_rows", "Rows waiting for the sink")
ASSIGNED = Gauge("clickagg_stream_assigned_partitions", "Partitions this worker owns", ["topic"])
CHECKPOINTS = Counter("clickagg_stream_checkpoints_total", "State deltas written")
CHECKPOINT_FAILURES = Counter(
    "clickagg_stream_checkpoint_failures_total", "Checkpoint writes that failed (each: a rewind)"
)
UNCHECKPOINTED = Gauge(
    "clickagg_stream_uncheckpointed_records", "Records a crash now would replay (since checkpoint)"
)
STATE_IDS = Gauge(
    "clickagg_stream_state_ids", "Dedup ids held in the local store (flushed)", ["partition"]
)
STATE_DISK_BYTES = Gauge(
    "clickagg_stream_state_disk_bytes", "Local store SST bytes (ids + expiry index)", ["partition"]
)
STATE_FILTER_BYTES = Gauge(
    "clickagg_stream_state_filter_bytes",
    "Local store's in-memory id filter arrays (bytes; bounded by generations x size)",
    ["partition"],
)
IPRATE_IP_MINUTES = Gauge(
    "clickagg_stream_iprate_ip_minutes",
    "Stage 2 (per-IP rate rule): IP-minutes held in memory (open minutes only)",
    ["partition"],
)
RECOVERY_SECONDS = Gauge(
    "clickagg_stream_recovery_seconds", "Duration of the last state recovery of an assignment"
)
RECOVERY_DELTAS = Counter(
    "clickagg_stream_recovery_deltas_total",
    "Changelog records applied while recovering state",
    ["stage"],
)
SNAPSHOTS = Counter("clickagg_stream_snapshots_total", "State snapshots uploaded")
SNAPSHOT_FAILURES = Counter(
    "clickagg_stream_snapshot_failures_total", "State snapshots that failed (retried later)"
)
ARCHIVE_LAG = Gauge(
    "clickagg_archive_lag", "Archiver: high watermark minus archived offset", ["partition"]
)
ARCHIVE_FILES = Counter("clickagg_archive_files_total", "Parquet files written by the archiver")
ARCHIVE_ROWS = Counter("clickagg_archive_rows_total", "Rows written by the archiver")


def render() -> tuple[bytes, str]:
    """Body and content type (aiohttp wants the charset outside the content type)."""
    content_type = "; ".join(
        p.strip() for p in CONTENT_TYPE_LATEST.split(";") if "charset" not in p
    )
    return generate_latest(), content_type


async def monitor(consumer, procs: dict, source_topic: str, no_watermark: int) -> None:
    """Every 2 s: consumer lag per partition, watermark lag, events/s."""
    last_n, last_t = 0.0, time.monotonic()
    while True:
        await asyncio.sleep(2.0)
        now_ms = time.time() * 1000
        for tp, proc in list(procs.items()):
            hw = consumer.highwater(tp)
            if hw is not None and proc.next_offset is not None:
                CONSUMER_LAG.labels(tp.topic, tp.partition).set(hw - proc.next_offset)
            if tp.topic == source_topic and proc.watermark != no_watermark:
                WATERMARK_LAG.labels(tp.partition).set((now_ms - proc.watermark) / 1000)
        n = sum(
            s.value
            for metric in EVENTS.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        )
        t = time.monotonic()
        EVENTS_PER_S.set((n - last_n) / (t - last_t))
        last_n, last_t = n, t
