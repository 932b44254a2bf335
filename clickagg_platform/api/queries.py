"""ClickHouse reads of the query API. Every query runs on per-minute (or coarser) rollups, never
on one row per click: the hot table holds one row per (minute, campaign, ad, source partition)
version, the batch tables one row per (minute, campaign, ad) and per (day, campaign)."""

from __future__ import annotations

import re
import threading
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
    """One clickhouse-driver connection per thread (FastAPI runs sync endpoints in a pool)."""

    def __init__(self, client_factory):
        self._factory = client_factory
        self._local = threading.local()

    def execute(self, sql: str, params: dict | None = None) -> list[tuple]:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
        try:
            return client.execute(sql, params or {})
        except Exception:
            client.disconnect()
            self._local.client = None
            raise
