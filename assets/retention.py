"""Retention as a scheduled Dagster job: ClickHouse 18.16 has no TTL, so expired partitions of the
hot and drift tables are dropped daily (`clickagg_platform.retention`; billing is never dropped)."""

from datetime import UTC, datetime

import dagster as dg

from resources.clickhouse import ClickHouseResource


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


@dg.job(description="Drop ClickHouse partitions past their retention (no TTL on 18.16).")
def retention_job():
    drop_expired_partitions()


retention_daily = dg.ScheduleDefinition(
    name="retention_daily",
    job=retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
