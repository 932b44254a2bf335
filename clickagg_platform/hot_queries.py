"""Reads of the streaming hot table: (minute, campaign, ad) totals.

Each (window, campaign, ad, source, source partition) may have several rows until ClickHouse
merges them; the latest version is the truth, so the query takes argMax(clicks, version) per
key and sums over sources (clicks minus fraud corrections) and source partitions. The time
filter sits in the inner query so only the wanted days are read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from clickagg_platform.settings import Settings, get_settings

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def hot_totals_sql(db: str, *, with_range: bool = True, with_campaign: bool = False) -> str:
    if not _IDENT.match(db):
        raise ValueError(f"invalid database name {db!r}")
    where = []
    if with_range:
        where.append("window_start >= %(start)s AND window_start < %(end)s")
    if with_campaign:
        where.append("campaign_id = %(campaign_id)s")
    cond = ("WHERE " + " AND ".join(where)) if where else ""
    return f"""
SELECT window_start, campaign_id, ad_id, sum(latest) AS clicks
FROM
(
    SELECT window_start, campaign_id, ad_id, source, source_partition,
        argMax(clicks, version) AS latest
    FROM {db}.hot_clicks
    {cond}
    GROUP BY window_start, campaign_id, ad_id, source, source_partition
)
GROUP BY window_start, campaign_id, ad_id
HAVING clicks != 0
ORDER BY window_start, campaign_id, ad_id
"""


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def hot_totals(
    settings: Settings | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    campaign_id: str | None = None,
    client=None,
) -> dict[tuple[datetime, str, str], int]:
    """{(minute (UTC, aware), campaign_id, ad_id): clicks} over [start, end) (all if unset)."""
    from clickagg_platform import clickhouse

    s = settings or get_settings()
    ranged = start is not None or end is not None
    params: dict = {}
    if ranged:
        params["start"] = _utc(start or datetime(1971, 1, 1, tzinfo=UTC))
        params["end"] = _utc(end or datetime(2105, 1, 1, tzinfo=UTC))
    if campaign_id is not None:
        params["campaign_id"] = campaign_id
    sql = hot_totals_sql(
        s.clickhouse_database, with_range=ranged, with_campaign=campaign_id is not None
    )
    c = client or clickhouse.client(s)
    try:
        rows = c.execute(sql, params)
    finally:
        if client is None:
            c.disconnect()
    return {(_utc(m), camp, ad): int(n) for m, camp, ad, n in rows}
