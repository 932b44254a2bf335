"""When the batch path runs: each hour after its lateness grace, each day after its close, and
again for any hour whose raw input changed (late files) -> re-bill its day as adjustments."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.common import hours_in, raw_files_for, signature
from assets.partitions import daily, hourly
from resources.lake import LakeResource

# Stream allowed lateness (10 min) + watermark bound + archive flush: an hour's raw input is
# complete (barring very late clicks, handled by the late-input sensor) 15 minutes after it ends.
HOUR_GRACE_MIN = 15
DAY_CLOSE = (1, 30)  # billing at 01:30 UTC: every hour of the day reconciled + drift-checked

reconcile_job = dg.define_asset_job(
    "reconcile_hours",
    selection=dg.AssetSelection.assets(
        "raw_clicks", "first_seen_index", "minute_aggregates", "drift_report"
    ),
    partitions_def=hourly,
    description="Reconcile event hours from the raw archive and measure the hot path's drift",
)
billing_job = dg.define_asset_job(
    "bill_days",
    selection=dg.AssetSelection.assets("billing_daily"),
    partitions_def=daily,
    description="Invoice closed days; re-billing a billed day issues adjustments",
)


def hour_key(t: datetime) -> str:
    return t.strftime("%Y-%m-%d-%H:00")


@dg.schedule(
    job=reconcile_job,
    cron_schedule=f"{HOUR_GRACE_MIN} * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def reconcile_closed_hours(context: dg.ScheduleEvaluationContext):
    """The hour that ended `HOUR_GRACE_MIN` minutes ago."""
    t = context.scheduled_execution_time.astimezone(UTC)
    hour = (t - timedelta(minutes=HOUR_GRACE_MIN)).replace(minute=0, second=0, microsecond=0)
    key = hour_key(hour - timedelta(hours=1))
    return dg.RunRequest(run_key=f"hour-{key}", partition_key=key)


@dg.schedule(
    job=billing_job,
    cron_schedule=f"{DAY_CLOSE[1]} {DAY_CLOSE[0]} * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def bill_closed_days(context: dg.ScheduleEvaluationContext):
    """Yesterday (UTC), once it has closed."""
    t = context.scheduled_execution_time.astimezone(UTC)
    key = (t - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"day-{key}", partition_key=key)


def _latest(instance, asset: str, partition: str):
    res = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
        limit=1,
    )
    return res.records[0] if res.records else None


@dg.sensor(
    jobs=[reconcile_job, billing_job],
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def late_input_sensor(context: dg.SensorEvaluationContext, lake_store: LakeResource):
    """Re-reconcile a reconciled hour whose raw files changed since (very late clicks), and
    re-bill a billed day once any of its hours was reconciled after its billing."""
    now = datetime.now(UTC)
    settings = lake_store.settings()
    last_closed = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    requests = []
    for back in range(48):
        hour = last_closed - timedelta(hours=back)
        key = hour_key(hour)
        rec = _latest(context.instance, "minute_aggregates", key)
        if rec is None:
            continue
        md = rec.asset_materialization.metadata
        sigs = md["raw_signatures"].value if "raw_signatures" in md else {}
        h = int(hour.timestamp() * 1000)
        current = signature(raw_files_for(lake_store.url, lake_store.topic, [h], settings))
        if sigs.get(str(h)) != current:
            requests.append(
                dg.RunRequest(
                    run_key=f"late-{key}-{current}", partition_key=key, job_name=reconcile_job.name
                )
            )
    for back in range(1, 3):
        day = (now - timedelta(days=back)).strftime("%Y-%m-%d")
        billed = _latest(context.instance, "billing_daily", day)
        if billed is None:
            continue
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        newest = 0.0
        for h in hours_in(start, start + timedelta(days=1)):
            rec = _latest(
                context.instance,
                "minute_aggregates",
                hour_key(datetime.fromtimestamp(h / 1000, UTC)),
            )
            if rec is not None:
                newest = max(newest, rec.timestamp)
        if newest > billed.timestamp:
            requests.append(
                dg.RunRequest(
                    run_key=f"rebill-{day}-{newest}", partition_key=day, job_name=billing_job.name
                )
            )
    if not requests:
        return dg.SkipReason("no late raw input and no re-reconciled billed day")
    return requests
