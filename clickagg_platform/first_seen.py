"""The first-seen index: per event hour, the first copy of every event_id whose event time is in
that hour (its kafka partition, offset and event time), hash-bucketed by event_id.

Why: the click is the first copy of its event_id within the 24 h dedup horizon. Reading every raw
file of the horizon to find earlier copies made one hour's reconcile read ~25 hours of full raw
records. The index keeps only what the rule needs from the horizon (4 narrow columns, one row
per id and hour), so an hour's run reads its own raw files plus the index of the hours before
it, and extends the index by its own hour (docs/batch.md, "First-seen index").

Layout under the lake root (one hour = one Dagster partition of `first_seen_index`):
    index/first_seen/topic=<t>/dt=<YYYY-MM-DD>/hour=<HH>/_CURRENT          (JSON pointer)
    index/first_seen/topic=<t>/dt=<YYYY-MM-DD>/hour=<HH>/v=<version>/bucket=<k>/part-*.parquet

A build writes a fresh version prefix, then replaces `_CURRENT` (one PUT on S3, rename locally),
then deletes the other versions: a reader (which reads the pointer first) never sees half an
index, and re-running an hour is idempotent. The pointer records the signature of the raw file
set the version was built from: when late files arrive the signature differs and the hour is
rebuilt before it is used (`stale_hours`).

Everything here is pure (URLs, pointer records, the Spark and DuckDB transforms); the Dagster
asset in `assets/first_seen.py` does the I/O.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

INDEX_COLUMNS = ("event_id", "kafka_partition", "kafka_offset", "event_time")
DEFAULT_BUCKETS = 0  # 0 = sized from the hour's raw rows (`auto_buckets`)
ROWS_PER_BUCKET = 2_000_000
MAX_BUCKETS = 256


def auto_buckets(rows_per_hour: float) -> int:
    """Buckets for an hour of this many raw rows: a power of two, ~2 M ids per bucket file at
    most (1 below that: hundreds of tiny files cost a reader more than they save)."""
    b = 1
    while b < MAX_BUCKETS and rows_per_hour / b > ROWS_PER_BUCKET:
        b *= 2
    return b


@dataclass(frozen=True)
class Pointer:
    """What `_CURRENT` says about one hour's index."""

    version: str  # the data prefix `v=<version>`
    signature: str  # of the raw files the version was built from (assets.common.signature)
    rows: int
    buckets: int
    built_at: str
    run_id: str = ""

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def loads(cls, data: bytes) -> Pointer:
        d = json.loads(data)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def hour_prefix(root: str, topic: str, hour_ms: int) -> str:
    h = datetime.fromtimestamp(hour_ms / 1000, UTC)
    return f"{root.rstrip('/')}/index/first_seen/topic={topic}/dt={h:%Y-%m-%d}/hour={h:%H}"


def pointer_url(root: str, topic: str, hour_ms: int) -> str:
    return f"{hour_prefix(root, topic, hour_ms)}/_CURRENT"


def version_prefix(root: str, topic: str, hour_ms: int, version: str) -> str:
    return f"{hour_prefix(root, topic, hour_ms)}/v={version}"


def topic_prefix(root: str, topic: str) -> str:
    return f"{root.rstrip('/')}/index/first_seen/topic={topic}"


def parse_hour(url: str) -> int | None:
    """The hour (epoch ms) of an index URL, or None."""
    import re

    m = re.search(r"/dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})(?:/|$)", url)
    if not m:
        return None
    t = datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def stale_hours(
    hours: list[int], pointers: dict[int, Pointer | None], signatures: dict[int, str]
) -> list[int]:
    """Hours whose index is missing or was built from another raw file set than today's."""
    return [
        h
        for h in hours
        if pointers.get(h) is None or pointers[h].signature != signatures.get(h, "")
    ]


def expired_hours(index_hours: list[int], now_ms: int, keep_ms: int) -> list[int]:
    """Index hours entirely older than `now - keep`: no hour still to be (re)reconciled can
    need them (keep = the dedup horizon plus the re-reconcile window of the late-input sensor)."""
    cutoff = now_ms - keep_ms
    return sorted(h for h in index_hours if h + 3_600_000 <= cutoff)


def index_rows(raw, start_ms: int, end_ms: int, buckets: int):
    """Raw records (lake.RAW_SCHEMA) -> one row per (event hour in [start, end), event_id): the
    copy with the lowest (kafka_partition, kafka_offset) among the records of that hour, plus
    `hour` (epoch ms) and `bucket` = pmod(xxhash64(event_id), buckets)."""
    from pyspark.sql import functions as F

    records = (
        raw.where(F.col("decode_error").isNull() & F.col("event_id").isNotNull())
        .where((F.col("event_time") >= start_ms) & (F.col("event_time") < end_ms))
        .select(*INDEX_COLUMNS)
        .withColumn("hour", F.col("event_time") - F.pmod(F.col("event_time"), F.lit(3_600_000)))
    )
    first = records.groupBy("hour", "event_id").agg(
        F.min(F.struct("kafka_partition", "kafka_offset", "event_time")).alias("f")
    )
    return first.select(
        "hour",
        F.pmod(F.xxhash64("event_id"), F.lit(buckets)).cast("int").alias("bucket"),
        "event_id",
        F.col("f.kafka_partition").alias("kafka_partition"),
        F.col("f.kafka_offset").alias("kafka_offset"),
        F.col("f.event_time").alias("event_time"),
    )


def _listing(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


# The independent recount of one hour's index rows from its raw files (DuckDB), for the
# `first_seen_index_matches_raw` check.
DUCKDB_INDEX_SQL = """
SELECT event_id, kafka_partition AS p, kafka_offset AS o
FROM read_parquet({files})
WHERE decode_error IS NULL AND event_id IS NOT NULL
  AND event_time >= $start AND event_time < $end
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY kafka_partition, kafka_offset) = 1
"""


def duckdb_index_diff(raw_paths: list[str], index_paths: list[str], start_ms: int, end_ms: int):
    """(rows expected, rows in the index, rows that differ either way) for one hour."""
    import duckdb

    con = duckdb.connect()
    if raw_paths:
        con.execute(
            "CREATE TEMP TABLE want AS " + DUCKDB_INDEX_SQL.format(files=_listing(raw_paths)),
            {"start": start_ms, "end": end_ms},
        )
    else:
        con.execute("CREATE TEMP TABLE want (event_id VARCHAR, p INTEGER, o BIGINT)")
    if index_paths:
        con.execute(
            "CREATE TEMP TABLE got AS SELECT event_id, kafka_partition AS p, kafka_offset AS o "
            f"FROM read_parquet({_listing(index_paths)})"
        )
    else:
        con.execute("CREATE TEMP TABLE got (event_id VARCHAR, p INTEGER, o BIGINT)")
    want = con.execute("SELECT count(*) FROM want").fetchone()[0]
    got = con.execute("SELECT count(*) FROM got").fetchone()[0]
    differ = con.execute(
        "SELECT count(*) FROM ((SELECT * FROM want EXCEPT ALL SELECT * FROM got) "
        "UNION ALL (SELECT * FROM got EXCEPT ALL SELECT * FROM want))"
    ).fetchone()[0]
    return int(want), int(got), int(differ)


# Retention: the late-input sensor re-reconciles the last 48 closed hours, each joining the index
# of the horizon before it; older index hours can never be read again.
RECONCILE_WINDOW_MS = 49 * 3_600_000


def prune(root: str, topic: str, now_ms: int, horizon_ms: int, settings=None, dry_run=False):
    """Delete the index hours older than horizon + the re-reconcile window; returns the hours
    (epoch ms) dropped (or that would be, with `dry_run`)."""
    from clickagg_platform import lake

    prefix = topic_prefix(root, topic)
    base_path = lake.filesystem(prefix, settings)[1]
    by_hour: dict[int, list[str]] = {}
    for path in lake._list(prefix, settings):
        h = parse_hour(path)
        if h is not None:
            by_hour.setdefault(h, []).append(prefix + path[len(base_path) :])
    expired = expired_hours(list(by_hour), now_ms, horizon_ms + RECONCILE_WINDOW_MS)
    if not dry_run:
        for h in expired:
            # the pointer first: a reader then sees "missing" (and rebuilds), never a torn hour
            urls = sorted(by_hour[h], key=lambda u: not u.endswith("/_CURRENT"))
            lake.delete(urls, settings)
    return expired
