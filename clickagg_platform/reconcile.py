"""The batch reconcile transform: raw archive records -> billable clicks per (minute, campaign, ad).

A pure function of a Spark DataFrame of raw records (`lake.RAW_SCHEMA`) and the event-time
range to count, so tests call it directly and Dagster only wraps I/O around it. The rule is the
stream's rule (docs/batch.md), applied to the whole log instead of a watermark-bounded state:

1. drop undecodable records and re-archived copies of one Kafka record (same partition, offset);
2. the first copy of every event_id (lowest (kafka_partition, kafka_offset)) is the click; all
   its copies share a partition (key = event_id), so "first" is the stream's processing order;
   its event time decides its minute. Later copies are duplicates, also across hours, as long as
   the first copy is inside the records given (the caller passes the dedup horizon's files);
3. fraud-like: bot user agent; else more than `ip_rate_threshold` distinct event_ids (first
   copies, bots included, as the stream's stage 2 counts them) from one ip_hash in the minute
   -> all of that ip's clicks in the minute;
4. count the remaining first copies whose event time is in [start_ms, end_ms).

It also counts, per key, the billable clicks the stream could not count by its own lateness
policy: a record is too late for the stream when its partition's watermark (max event time of
the earlier records of the partition minus the out-of-orderness bound) has passed its minute's
end plus the allowed lateness. The drift report uses that to separate explained drift (late
clicks only the batch counts) from unexplained drift (a hot path bug).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clickagg_platform.loadgen.rules import BOT_UA_MARKERS, IP_RATE_THRESHOLD

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
OUTPUT_COLUMNS = (
    "window_start",
    "advertiser_id",
    "campaign_id",
    "ad_id",
    "clicks",
    "fraud_clicks",
    "stream_too_late",
)


_NEEDED = (
    "event_id",
    "event_time",
    "ip_hash",
    "user_agent",
    "advertiser_id",
    "campaign_id",
    "ad_id",
    "kafka_partition",
    "kafka_offset",
)


@dataclass(frozen=True)
class ReconcileParams:
    start_ms: int  # first event-time ms counted (inclusive), UTC
    end_ms: int  # end of the range (exclusive)
    ip_rate_threshold: int = IP_RATE_THRESHOLD
    out_of_orderness_ms: int = 5_000
    allowed_lateness_ms: int = 600_000


def reconcile(raw, params: ReconcileParams, seeds=None, seen=None, broadcast_candidates=False):
    """Raw records -> one row per (window_start, advertiser, campaign, ad) with a first copy in
    range: `clicks` billable, `fraud_clicks` not billed as fraud-like, `stream_too_late` billable
    clicks the stream's lateness policy excludes. `window_start` is a Spark TIMESTAMP (UTC).

    `seeds` (optional; columns kafka_partition, first, last, seed_max_t): per raw file given,
    the max event time of the partition's records before it that are NOT given (files without a
    marker in the range, found from Parquet statistics), so the stream's watermark is replayed
    exactly without reading those files.

    `seen` (optional; columns event_id, kafka_partition, kafka_offset): first copies known from
    outside `raw` (the first-seen index of the horizon's earlier hours). A first copy in `raw`
    with an earlier copy in `seen` (lower (partition, offset)) is a duplicate, exactly as if
    those records had been read. `broadcast_candidates`: the range's first copies are few enough
    to broadcast (see `_drop_seen`)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    p = params
    records = raw.where(F.col("decode_error").isNull() & F.col("event_id").isNotNull()).select(
        *_NEEDED
    )
    # Re-archived copies of one Kafka record (same partition, offset) need no shuffle of their
    # own: they share the event_id, so the first-copy pick below keeps one of them, and in the
    # watermark replay a twin only adds its own event time, which can never make the record too
    # late (its watermark would stay below its own minute's end). Dropping that dropDuplicates
    # saved ~20% of the job (bench-reconcile notes in docs/batch.md).
    in_partition_order = (
        Window.partitionBy("kafka_partition")
        .orderBy("kafka_offset")
        .rowsBetween(Window.unboundedPreceding, -1)
    )
    records = records.withColumn("prev_max_t", F.max("event_time").over(in_partition_order))
    if seeds is not None:
        s = seeds.alias("s")
        cond = (
            (F.col("r.kafka_partition") == F.col("s.kafka_partition"))
            & (F.col("r.kafka_offset") >= F.col("s.first"))
            & (F.col("r.kafka_offset") <= F.col("s.last"))
        )
        records = (
            records.alias("r")
            .join(F.broadcast(s), cond, "left")
            .select("r.*", F.col("s.seed_max_t"))
            .withColumn("prev_max_t", F.greatest("prev_max_t", "seed_max_t"))
            .drop("seed_max_t")
        )
    by_id = Window.partitionBy("event_id").orderBy("kafka_partition", "kafka_offset")
    firsts = records.withColumn("copy_no", F.row_number().over(by_id)).where(F.col("copy_no") == 1)
    firsts = (
        firsts.withColumn(
            "minute", F.col("event_time") - F.pmod(F.col("event_time"), F.lit(MINUTE_MS))
        )
        # minutes never straddle the range's whole-minute bounds: filter before the ip count
        .where((F.col("event_time") >= p.start_ms) & (F.col("event_time") < p.end_ms))
    )
    if seen is not None:
        firsts = _drop_seen(firsts, seen, broadcast_candidates)
    per_ip_minute = Window.partitionBy("ip_hash", "minute")
    firsts = firsts.withColumn("ip_clicks", F.count(F.lit(1)).over(per_ip_minute))
    bot = F.coalesce(_bot_user_agent(F.col("user_agent")), F.lit(False))
    fraud = bot | (F.col("ip_clicks") > p.ip_rate_threshold)
    watermark = F.col("prev_max_t") - F.lit(p.out_of_orderness_ms)
    too_late = F.col("prev_max_t").isNotNull() & (
        watermark > F.col("minute") + F.lit(MINUTE_MS + p.allowed_lateness_ms)
    )
    billable = ~fraud
    out = firsts.groupBy("minute", "advertiser_id", "campaign_id", "ad_id").agg(
        F.sum(F.when(billable, 1).otherwise(0)).cast("long").alias("clicks"),
        F.sum(F.when(fraud, 1).otherwise(0)).cast("long").alias("fraud_clicks"),
        F.sum(F.when(billable & too_late, 1).otherwise(0)).cast("long").alias("stream_too_late"),
    )
    return out.select(
        F.timestamp_millis(F.col("minute")).alias("window_start"),
        "advertiser_id",
        "campaign_id",
        "ad_id",
        "clicks",
        "fraud_clicks",
        "stream_too_late",
    )


def _bot_user_agent(user_agent):
    """The stream's rule (`is_bot_user_agent`: a marker in the lower-cased User-Agent) as
    Spark's own string functions: `lower` once, then a byte search per marker, compiled by
    whole-stage codegen. (A Java regex `(?i)(bot|spider|...)` per row was most of the day's
    "time in aggregation build": bench-reconcile notes in docs/batch.md.)"""
    from functools import reduce

    from pyspark.sql import functions as F

    lowered = F.lower(user_agent)
    return reduce(lambda a, b: a | b, [lowered.contains(m.lower()) for m in BOT_UA_MARKERS])


# Up to this many raw rows read for a range, its first copies are broadcast to probe the index
# (~50 B each: 100 MB at most in the driver and each executor); above, a sort-merge join.
BROADCAST_MAX_ROWS = 2_000_000


def _drop_seen(firsts, seen, broadcast_candidates: bool):
    """First copies without an earlier copy in `seen`. The index side is ~24x the range's side
    (one hour per hour of the horizon): it is scanned once and probed against the range's
    candidate ids (a broadcast hash join when they are few, so the index is never shuffled), which
    yields the few ids that do have an earlier copy; those are then dropped."""
    from pyspark.sql import functions as F

    cand = firsts.select("event_id", "kafka_partition", "kafka_offset").alias("f")
    if broadcast_candidates:
        cand = F.broadcast(cand)
    k = seen.select("event_id", "kafka_partition", "kafka_offset").alias("k")
    earlier = (F.col("f.event_id") == F.col("k.event_id")) & (
        (F.col("k.kafka_partition") < F.col("f.kafka_partition"))
        | (
            (F.col("k.kafka_partition") == F.col("f.kafka_partition"))
            & (F.col("k.kafka_offset") < F.col("f.kafka_offset"))
        )
    )
    dup_ids = k.join(cand, earlier, "inner").select(F.col("f.event_id").alias("event_id"))
    return firsts.join(
        F.broadcast(dup_ids.distinct()) if broadcast_candidates else dup_ids.distinct(),
        "event_id",
        "left_anti",
    )


def watermark_seeds(read: list, all_files: list, max_event_time) -> list[tuple[int, int, int, int]]:
    """(partition, first, last, seed_max_t) per read file whose partition has earlier files that
    are not read: the max event time of those earlier unread files (`max_event_time(f)` reads it
    from Parquet statistics). `all_files` = the files of the dedup horizon's hours (older files
    hold older events: they cannot move the watermark past the range's minutes)."""
    read_keys = {(f.partition, f.first) for f in read}
    by_part: dict[int, list] = {}
    for f in read:
        by_part.setdefault(f.partition, []).append(f)
    out = []
    for part, files in by_part.items():
        hi = max(f.first for f in files)
        gap = sorted(
            (
                f
                for f in all_files
                if f.partition == part and f.first < hi and (f.partition, f.first) not in read_keys
            ),
            key=lambda f: f.first,
        )
        if not gap:
            continue
        gap_max = [(g, max_event_time(g)) for g in gap]  # one footer read per file
        for f in sorted(files, key=lambda f: f.first):
            before = [t for g, t in gap_max if g.last < f.first and t is not None]
            if before:
                out.append((part, f.first, f.last, max(before)))
    return out


def horizon_hours(start_ms: int, end_ms: int, horizon_ms: int) -> list[int]:
    """Event hours (epoch ms) whose raw files the range needs: the dedup horizon before the
    range's first hour, through the range's last hour."""
    first = (start_ms - horizon_ms) // HOUR_MS * HOUR_MS
    last = (end_ms - 1) // HOUR_MS * HOUR_MS
    return list(range(first, last + 1, HOUR_MS))


# The same rule in SQL for DuckDB: the independent recount behind the `batch_total_matches_raw`
# check and the single-machine baseline of `make bench-reconcile`. `{files}` is a list literal
# of Parquet paths, `{seen}` a query of earlier first copies (the first-seen index files); the
# parameters are $start, $end, $threshold.
DUCKDB_RECONCILE_SQL = """
WITH records AS (
    SELECT DISTINCT ON (kafka_partition, kafka_offset)
        kafka_partition, kafka_offset, event_id, event_time, ip_hash, user_agent,
        advertiser_id, campaign_id, ad_id
    FROM read_parquet({files})
    WHERE decode_error IS NULL AND event_id IS NOT NULL
),
firsts AS (
    SELECT * FROM records
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY kafka_partition, kafka_offset) = 1
),
seen AS ({seen}),
in_range AS (
    SELECT *, event_time - event_time % 60000 AS minute,
        regexp_matches(lower(user_agent), '{bot_regex}') AS bot
    FROM firsts f
    WHERE event_time >= $start AND event_time < $end
      AND NOT EXISTS (
        SELECT 1 FROM seen s WHERE s.event_id = f.event_id
          AND (s.kafka_partition, s.kafka_offset) < (f.kafka_partition, f.kafka_offset)
      )
),
flagged AS (
    SELECT *, bot OR count(*) OVER (PARTITION BY ip_hash, minute) > $threshold AS fraud
    FROM in_range
),
final AS (
    SELECT minute, advertiser_id, campaign_id, ad_id,
        count(*) FILTER (WHERE NOT fraud) AS clicks,
        count(*) FILTER (WHERE fraud) AS fraud_clicks
    FROM flagged
    GROUP BY ALL
)
SELECT * FROM final
"""


NO_SEEN = "SELECT NULL::VARCHAR AS event_id, NULL::INTEGER AS kafka_partition, " + (
    "NULL::BIGINT AS kafka_offset WHERE false"
)


def _listing(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def duckdb_reconcile(
    files: list[str], params: ReconcileParams, con=None, seen_files: list[str] | None = None
) -> dict[tuple[int, str, str, str], tuple[int, int]]:
    """{(minute_ms, advertiser, campaign, ad): (clicks, fraud_clicks)} over local Parquet files;
    `seen_files`: first-seen index files of earlier hours (their copies are earlier copies)."""
    import duckdb

    if not files:
        return {}
    con = con or duckdb.connect()
    bot = "|".join(re.escape(m.lower()) for m in BOT_UA_MARKERS)
    seen = NO_SEEN
    if seen_files:
        seen = (
            "SELECT event_id, kafka_partition, kafka_offset "
            f"FROM read_parquet({_listing(seen_files)})"
        )
    sql = DUCKDB_RECONCILE_SQL.format(files=_listing(files), bot_regex=bot, seen=seen)
    rows = con.execute(
        sql, {"start": params.start_ms, "end": params.end_ms, "threshold": params.ip_rate_threshold}
    ).fetchall()
    return {(int(m), adv, c, a): (int(n), int(f)) for m, adv, c, a, n, f in rows}
