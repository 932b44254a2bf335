"""Helpers shared by the batch assets: event-time ranges, partition ids, lake output paths and
reading the raw archive for a range (with the dedup horizon) into Spark."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pyarrow as pa

from clickagg_platform import lake

# A ClickHouse/S3 restart mid-run: every write is an idempotent replace, so a step can simply run
# again (a failed check is not an exception and is never retried).
TRANSIENT = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

MINUTE_AGG_SCHEMA = pa.schema(
    [
        ("window_start", pa.timestamp("ms", tz="UTC")),
        ("advertiser_id", pa.string()),
        ("campaign_id", pa.string()),
        ("ad_id", pa.string()),
        ("clicks", pa.int64()),
    ]
)
BILLING_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("advertiser_id", pa.string()),
        ("campaign_id", pa.string()),
        ("billable_clicks", pa.int64()),
        ("cpc_micros", pa.int64()),
        ("spend_micros", pa.int64()),
        ("billed_at", pa.timestamp("ms", tz="UTC")),
        ("version", pa.int64()),
    ]
)
ADJUSTMENT_SCHEMA = pa.schema(
    [
        ("billed_day", pa.date32()),
        ("advertiser_id", pa.string()),
        ("campaign_id", pa.string()),
        ("delta_clicks", pa.int64()),
        ("delta_spend_micros", pa.int64()),
        ("invoice_day", pa.date32()),
        ("detected_at", pa.timestamp("ms", tz="UTC")),
        ("version", pa.int64()),
    ]
)


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def utc(ms_: int) -> datetime:
    return datetime.fromtimestamp(ms_ / 1000, UTC)


def hours_in(start: datetime, end: datetime) -> list[int]:
    return list(range(ms(start), ms(end), HOUR_MS))


def hour_pid(hour_ms: int) -> str:
    """ClickHouse partition id of toYYYYMMDDhhmmss(hour)."""
    return utc(hour_ms).strftime("%Y%m%d%H%M%S")


def day_pid(day: date) -> str:
    return day.strftime("%Y%m%d")


def minute_agg_url(root: str, hour_ms: int) -> str:
    h = utc(hour_ms)
    return f"{root.rstrip('/')}/batch/minute_aggregates/dt={h:%Y-%m-%d}/hour={h:%H}/data.parquet"


def billing_url(root: str, day: date) -> str:
    return f"{root.rstrip('/')}/batch/billing_daily/day={day.isoformat()}/data.parquet"


def adjustments_url(root: str, day: date) -> str:
    return f"{root.rstrip('/')}/batch/billing_adjustments/day={day.isoformat()}/data.parquet"


def days_in(start: datetime, end: datetime) -> list[date]:
    d, out = start.date(), []
    while datetime(d.year, d.month, d.day, tzinfo=UTC) < end:
        out.append(d)
        d += timedelta(days=1)
    return out


def raw_files_for(root, topic, hours_ms: list[int], settings) -> list[lake.RawFile]:
    """Every raw file holding a click of any of these event hours, resolved once across hours
    (a partial file and its longer successor can sit under different hours' markers)."""
    found: dict[str, lake.RawFile] = {}
    for h in hours_ms:
        for f in lake.hour_files(root, topic, utc(h), settings):
            found[f.url] = f
    return lake.resolve_blocks(list(found.values()))


def signature(files: list[lake.RawFile]) -> str:
    """Identity of the raw input of an hour: changes when a (late) file arrives or grows."""
    text = "\n".join(sorted(f"{f.partition}:{f.first}:{f.last}" for f in files))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_table(url: str, settings) -> pa.Table | None:
    import pyarrow.parquet as pq

    fs, path = lake.filesystem(url, settings)
    try:
        info = fs.get_file_info(path)
        if info.type.name == "NotFound":
            return None
        return pq.read_table(path, filesystem=fs)
    except FileNotFoundError:
        return None


def file_max_event_time(f: lake.RawFile, settings) -> int | None:
    """Max event_time of a raw file from its Parquet footer statistics (no data read)."""
    import pyarrow.parquet as pq

    fs, path = lake.filesystem(f.url, settings)
    try:
        with fs.open_input_file(path) as fh:
            md = pq.ParquetFile(fh).metadata
    except (FileNotFoundError, OSError):
        return None
    idx = md.schema.names.index("event_time")
    best = None
    for i in range(md.num_row_groups):
        st = md.row_group(i).column(idx).statistics
        if st is not None and st.has_min_max:
            best = st.max if best is None else max(best, st.max)
    return best
