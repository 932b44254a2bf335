"""Retention for ClickHouse 18.16, which has no TTL: drop whole partitions older than a policy.

Every table the platform writes is partitioned by day (`toYYYYMMDD`) or hour
(`toYYYYMMDDhhmmss`), so a partition id starts with its UTC day: a partition is dropped when its
day is before the table's cutoff. Billing tables (money) are never in the policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

# days of data kept per table; billing_daily / billing_adjustments / campaigns are kept forever
DEFAULT_POLICY: dict[str, int] = {
    "hot_clicks": 35,
    "drift_report": 90,
    "drift_hours": 400,
    "minute_aggregates_batch": 400,
}


@dataclass(frozen=True)
class Drop:
    table: str
    partition_id: str
    day: date


def partition_day(partition_id: str) -> date | None:
    """The UTC day a partition id starts with (YYYYMMDD...), or None if it is not a date."""
    if len(partition_id) < 8 or not partition_id[:8].isdigit():
        return None
    try:
        return date(int(partition_id[:4]), int(partition_id[4:6]), int(partition_id[6:8]))
    except ValueError:
        return None


def plan_drops(
    partitions: Iterable[tuple[str, str]], today: date, policy: dict[str, int]
) -> list[Drop]:
    """(table, partition_id) pairs -> the partitions older than each table's retention."""
    drops = []
    for table, pid in partitions:
        keep_days = policy.get(table)
        day = partition_day(pid)
        if keep_days is None or day is None:
            continue
        if day < today - timedelta(days=keep_days):
            drops.append(Drop(table, pid, day))
    return sorted(drops, key=lambda d: (d.table, d.partition_id))


def apply_retention(
    client, db: str, today: date, policy: dict[str, int] | None = None, dry_run: bool = False
) -> list[Drop]:
    """List active partitions, drop the expired ones (unless dry_run); returns what it dropped."""
    policy = DEFAULT_POLICY if policy is None else policy
    rows = client.execute(
        "SELECT DISTINCT table, partition_id FROM system.parts WHERE database = %(db)s AND active",
        {"db": db},
    )
    drops = plan_drops(rows, today, policy)
    if not dry_run:
        for d in drops:
            client.execute(f"ALTER TABLE {db}.{d.table} DROP PARTITION ID '{d.partition_id}'")
    return drops
