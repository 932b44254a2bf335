"""ClickHouse reads of the query API. Every query runs on per-minute (or coarser) rollups, never
on one row per click: the hot table holds one row per (minute, campaign, ad, source partition)
version, the batch tables one row per (minute, campaign, ad) and per (day, campaign)."""

from __future__ import annotations

import queue
import re
from datetime import UTC, datetime

from clickagg_platform.api.series import Granularity

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUCKET = {
    Granularity.minute: "window_start",
    Granularity.hour: "toStartOfHour(window_start)",
    Granularity.day: "toStartOfDay(window_start)",
}


def _db(db: str) -> str:
    if not _IDENT.match(db):
        raise ValueError(f"invalid database name {db!r}")
    return db


def hot_series_sql(db: str, g: Granularity, *, by_ad: bool = False, ad: bool = False) -> str:
    """Clicks per bucket (and ad) of one campaign from the hot table: the latest version per
    (minute, ad, source, source partition), summed. Filters sit in the inner query."""
    ad_filter = "AND ad_id = %(ad_id)s" if ad else ""
    group = "t, ad_id" if by_ad else "t"
    cols = "t, ad_id, sum(latest)" if by_ad else "t, sum(latest)"
    return f"""
SELECT {cols}
FROM
(
    SELECT {_BUCKET[g]} AS t, ad_id, argMax(clicks, version) AS latest
    FROM {_db(db)}.hot_clicks
    WHERE campaign_id = %(campaign_id)s {ad_filter}
      AND window_start >= %(start)s AND window_start < %(end)s
    GROUP BY window_start, ad_id, source, source_partition
)
GROUP BY {group}
ORDER BY {group}
"""


def campaign_owner_sql(db: str) -> str:
    return f"SELECT advertiser_id FROM {_db(db)}.campaigns WHERE campaign_id = %(campaign_id)s"


def advertiser_campaigns_sql(db: str) -> str:
    return (
        f"SELECT campaign_id, name, cpc_micros FROM {_db(db)}.campaigns "
        "WHERE advertiser_id = %(advertiser_id)s ORDER BY campaign_id"
    )


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def naive_utc(t: datetime) -> datetime:
    """clickhouse-driver sends naive datetimes as UTC when use_client_time_zone is off."""
    return utc(t).replace(tzinfo=None)


class ClickHouseReader:
    """A pool of clickhouse-driver connections (a connection runs one query at a time). Any
    thread borrows an idle one or opens a new one, and gives it back after the query, so the
    connections in use follow the queries in flight, not the threads that ever ran one."""

    def __init__(self, client_factory, max_idle: int = 16):
        self._factory = client_factory
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._max_idle = max_idle

    def execute(self, sql: str, params: dict | list | None = None) -> list[tuple]:
        """Run one statement (params: a dict, or the rows of an INSERT ... VALUES)."""
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self._factory()
        try:
            rows = client.execute(sql, params or {})
        except Exception:
            client.disconnect()  # unknown state: never handed out again
            raise
        if self._idle.qsize() < self._max_idle:
            self._idle.put(client)
        else:
            client.disconnect()
        return rows


def exact_series_sql(db: str, g: Granularity, *, by_ad: bool = False, ad: bool = False) -> str:
    """Clicks per bucket of one campaign from the reconciled per-minute table. The `hour`
    condition lets ClickHouse prune the table's hourly partitions (window_start alone cannot:
    it is not in the partition key), which is what keeps 90 days of hours fast."""
    ad_filter = "AND ad_id = %(ad_id)s" if ad else ""
    group = "t, ad_id" if by_ad else "t"
    cols = "t, ad_id, sum(clicks)" if by_ad else "t, sum(clicks)"
    return f"""
SELECT {cols}
FROM
(
    SELECT {_BUCKET[g]} AS t, ad_id, clicks
    FROM {_db(db)}.minute_aggregates_batch
    WHERE campaign_id = %(campaign_id)s {ad_filter}
      AND hour >= %(start_hour)s AND hour < %(end)s
      AND window_start >= %(start)s AND window_start < %(end)s
)
GROUP BY {group}
ORDER BY {group}
"""


def reconciled_hours_sql(db: str) -> str:
    """Hours in [first_partition, end_partition) the batch has reconciled, from partition
    metadata (both tables are partitioned by hour; an hour reconciled without any click still
    has its drift_hours partition). Partition ids are 'YYYYMMDDhhmmss' (toYYYYMMDDhhmmss(hour)),
    so the range is a string range: only the requested hours come back. Reading system.parts
    costs milliseconds where a DISTINCT over the rows of 90 days costs a second."""
    return f"""
SELECT DISTINCT partition_id FROM system.parts
WHERE database = '{_db(db)}' AND table IN ('minute_aggregates_batch', 'drift_hours') AND active
  AND partition_id >= %(first_partition)s AND partition_id < %(end_partition)s
"""


def reconciled_hours_rows_sql(db: str) -> str:
    """The same set as `reconciled_hours_sql`, from the rows of the requested hours (a table has
    a partition for an hour exactly when it has rows in it). Cheaper for short ranges: its cost
    grows with the hours asked for, that of system.parts with every part of the tables."""
    return f"""
SELECT DISTINCT hour FROM
(
    SELECT hour FROM {_db(db)}.minute_aggregates_batch
    WHERE hour >= %(first_hour)s AND hour < %(end_hour)s
    UNION ALL
    SELECT hour FROM {_db(db)}.drift_hours
    WHERE hour >= %(first_hour)s AND hour < %(end_hour)s
)
"""


ROW_SCAN_MAX_HOURS = 72  # reconciled hours of ranges up to this long come from a row scan


def reconciled_hours_statement(db: str, first: datetime, end: datetime) -> tuple[str, dict]:
    """The statement for the reconciled hours in [first, end) (whole hours): a row scan for
    short ranges (milliseconds for a day), partition metadata for long ones (a row scan of 90
    days costs 200 ms, system.parts ~10 ms whatever the range). Rows are hours (row scan) or
    partition ids (metadata): `reconciled_hours_of` reads both."""
    if (end - first).total_seconds() <= ROW_SCAN_MAX_HOURS * 3600:
        params = {"first_hour": naive_utc(first), "end_hour": naive_utc(end)}
        return reconciled_hours_rows_sql(db), params
    params = {"first_partition": partition_of_hour(first), "end_partition": partition_of_hour(end)}
    return reconciled_hours_sql(db), params


def reconciled_hours_of(rows: list[tuple], first: datetime, end: datetime) -> set[datetime]:
    hours = (utc(v) if isinstance(v, datetime) else hour_of_partition(v) for (v,) in rows)
    return {h for h in hours if h is not None and first <= h < end}


def partition_of_hour(t: datetime) -> str:
    """An hour -> its partition id, 'YYYYMMDDhh0000' (UTC)."""
    return utc(t).strftime("%Y%m%d%H0000")


def hour_of_partition(partition_id: str) -> datetime | None:
    """'YYYYMMDDhh0000' -> that hour, UTC (int slicing: this runs once per hour of a range)."""
    p = partition_id
    if len(p) != 14 or not p.isdigit() or p[10:] != "0000":
        return None
    try:
        return datetime(int(p[:4]), int(p[4:6]), int(p[6:8]), int(p[8:10]), tzinfo=UTC)
    except ValueError:
        return None


def advertiser_totals_sql(db: str, source: str) -> str:
    """Clicks per (hour, campaign, ad) of all campaigns of one advertiser, from one source."""
    if source == "hot":
        inner = f"""
    SELECT toStartOfHour(window_start) AS t, campaign_id, ad_id,
        argMax(clicks, version) AS n
    FROM {_db(db)}.hot_clicks
    WHERE campaign_id IN (SELECT campaign_id FROM {_db(db)}.campaigns
                          WHERE advertiser_id = %(advertiser_id)s)
      AND window_start >= %(start)s AND window_start < %(end)s
    GROUP BY window_start, campaign_id, ad_id, source, source_partition"""
    else:
        inner = f"""
    SELECT hour AS t, campaign_id, ad_id, clicks AS n
    FROM {_db(db)}.minute_aggregates_batch
    WHERE advertiser_id = %(advertiser_id)s
      AND hour >= %(start_hour)s AND hour < %(end)s
      AND window_start >= %(start)s AND window_start < %(end)s"""
    return f"SELECT t, campaign_id, ad_id, sum(n) FROM ({inner}) GROUP BY t, campaign_id, ad_id"


def campaign_drift_sql(db: str) -> str:
    return f"""
SELECT hour, sum(hot_clicks), sum(batch_clicks), sum(stream_too_late)
FROM {_db(db)}.drift_report
WHERE campaign_id = %(campaign_id)s AND hour >= %(start)s AND hour < %(end)s
GROUP BY hour
ORDER BY hour
"""


def billing_sql(db: str) -> str:
    return f"""
SELECT day, campaign_id, billable_clicks, cpc_micros, spend_micros, in_catalog
FROM {_db(db)}.billing_daily
WHERE advertiser_id = %(advertiser_id)s AND day >= %(start)s AND day <= %(end)s
ORDER BY day, campaign_id
"""


def adjustments_sql(db: str) -> str:
    """Adjustment lines issued on the statement's days (each row is one issued line)."""
    return f"""
SELECT billed_day, campaign_id, delta_clicks, delta_spend_micros, invoice_day, detected_at
FROM {_db(db)}.billing_adjustments
WHERE advertiser_id = %(advertiser_id)s AND invoice_day >= %(start)s AND invoice_day <= %(end)s
ORDER BY invoice_day, billed_day, campaign_id, version
"""


def batch_health_sql(db: str) -> str:
    return f"""
SELECT max(hour), maxIf(unexplained_rel, hour >= now() - 86400),
    countIf(hour >= now() - 86400)
FROM {_db(db)}.drift_hours
"""
