"""Retention as a scheduled Dagster job: ClickHouse 18.16 has no TTL, so expired partitions of the
hot and drift tables are dropped daily (`clickagg_platform.retention`; billing is never dropped)."""

from datetime import UTC, datetime

import dagster as dg

from resources.clickhouse import ClickHouseResource
from resources.lake import LakeResource


class RetentionConfig(dg.Config):
    dry_run: bool = False
    hot_days: int | None = None


@dg.op(tags={"kind": "clickhouse"})
def drop_expired_partitions(
    context: dg.OpExecutionContext, config: RetentionConfig, clickhouse: ClickHouseResource
) -> list[str]:
    """Drop every partition past its table's retention; report what went."""
    from clickagg_platform.retention import DEFAULT_POLICY, apply_retention

    policy = dict(DEFAULT_POLICY)
    if config.hot_days is not None:
        policy["hot_clicks"] = config.hot_days
    c = clickhouse.client()
    try:
        drops = apply_retention(
            c, clickhouse.database, datetime.now(UTC).date(), policy, dry_run=config.dry_run
        )
    finally:
        c.disconnect()
    names = [f"{d.table}:{d.partition_id}" for d in drops]
    context.add_output_metadata(
        {"dropped": len(names), "partitions": ", ".join(names) or "-", "dry_run": config.dry_run}
    )
    return names


@dg.op(tags={"kind": "parquet"})
def drop_expired_index_hours(
    context: dg.OpExecutionContext, config: RetentionConfig, lake_store: LakeResource
) -> list[str]:
    """Drop first-seen index hours no reconcile can read again (horizon + 49 h)."""
    from clickagg_platform import first_seen
    from streaming.config import StreamSettings

    now = datetime.now(UTC)
    hours = first_seen.prune(
        lake_store.url,
        lake_store.topic,
        int(now.timestamp() * 1000),
        StreamSettings().horizon_ms,
        lake_store.settings(),
        dry_run=config.dry_run,
    )
    names = [f"{datetime.fromtimestamp(h / 1000, UTC):%Y-%m-%dT%H}" for h in hours]
    context.add_output_metadata(
        {"dropped": len(names), "hours": ", ".join(names) or "-", "dry_run": config.dry_run}
    )
    return names


@dg.job(
    description="Drop ClickHouse partitions past their retention (no TTL on 18.16) and "
    "first-seen index hours past the dedup horizon."
)
def retention_job():
    drop_expired_partitions()
    drop_expired_index_hours()


retention_daily = dg.ScheduleDefinition(
    name="retention_daily",
    job=retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
