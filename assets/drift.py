"""Hot vs batch per (minute, campaign, ad): the stream's error, measured against the truth."""

from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from assets.common import HOUR_MS, TRANSIENT, hour_pid, hours_in, ms, utc
from assets.partitions import hourly
from clickagg_platform import drift as drift_math
from clickagg_platform.hot_queries import hot_totals
from resources.clickhouse import ClickHouseResource

GATE = dg.AssetCheckSpec(
    "drift_within_threshold",
    asset="drift_report",
    description="Unexplained drift (hot - (batch - clicks too late for the stream)) within the "
    "configured threshold; gates billing",
    blocking=True,
)
LATE = dg.AssetCheckSpec(
    "drift_including_late",
    asset="drift_report",
    description="Hot equals batch including late clicks only the batch counts (informs)",
)


class DriftConfig(dg.Config):
    max_unexplained_rel: float = Field(0.0, description="Allowed |unexplained| / batch clicks")
    max_unexplained_abs: int = Field(0, description="Allowed |unexplained| clicks per hour")


def batch_totals(clickhouse: ClickHouseResource, start, end) -> dict:
    rows = clickhouse.query(
        f"""SELECT window_start, campaign_id, ad_id, sum(clicks), sum(stream_too_late)
        FROM {clickhouse.table("minute_aggregates_batch")}
        WHERE hour >= %(start)s AND hour < %(end)s
        GROUP BY window_start, campaign_id, ad_id""",
        {"start": start, "end": end},
    )
    return {(ms(w.replace(tzinfo=UTC)), c, a): (int(n), int(late)) for w, c, a, n, late in rows}


@dg.asset(
    partitions_def=hourly,
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=TRANSIENT,
    deps=["minute_aggregates", "hot_minute_aggregates"],
    kinds={"clickhouse"},
    group_name="batch",
    check_specs=[GATE, LATE],
)
def drift_report(
    context: dg.AssetExecutionContext, config: DriftConfig, clickhouse: ClickHouseResource
) -> dg.MaterializeResult:
    """Hot vs batch clicks per minute, campaign and ad: absolute, relative and missing keys."""
    window = context.partition_time_window
    settings = clickhouse.settings()
    now = datetime.now(UTC).replace(microsecond=0)
    detail, hours_rows, summaries = [], [], {}
    for h in hours_in(window.start, window.end):
        start, end = utc(h), utc(h + HOUR_MS)
        hot = {(ms(m), c, a): n for (m, c, a), n in hot_totals(settings, start, end).items()}
        rows = drift_math.compare(hot, batch_totals(clickhouse, start, end))
        s = drift_math.summarize(rows, config.max_unexplained_rel, config.max_unexplained_abs)
        summaries[h] = s
        detail += [
            (
                start,
                utc(r.window_start_ms),
                r.campaign_id,
                r.ad_id,
                r.hot_clicks,
                r.batch_clicks,
                r.stream_too_late,
                r.drift,
                r.rel_drift,
                r.unexplained,
                r.status,
                now,
                context.run_id,
            )
            for r in rows
        ]
        hours_rows.append(
            (
                start,
                s.hot_total,
                s.batch_total,
                s.stream_too_late,
                s.unexplained_abs,
                s.unexplained_rel,
                s.keys,
                s.keys_missing_in_hot,
                s.keys_missing_in_batch,
                s.keys_differing,
                int(s.passed),
                now,
                context.run_id,
            )
        )
    pids = [hour_pid(h) for h in summaries]
    clickhouse.replace_partitions(
        "drift_report",
        pids,
        [
            "hour",
            "window_start",
            "campaign_id",
            "ad_id",
            "hot_clicks",
            "batch_clicks",
            "stream_too_late",
            "drift",
            "rel_drift",
            "unexplained",
            "status",
            "computed_at",
            "run_id",
        ],
        detail,
    )
    clickhouse.replace_partitions(
        "drift_hours",
        pids,
        [
            "hour",
            "hot_total",
            "batch_total",
            "stream_too_late",
            "unexplained_abs",
            "unexplained_rel",
            "keys",
            "keys_missing_in_hot",
            "keys_missing_in_batch",
            "keys_differing",
            "passed",
            "computed_at",
            "run_id",
        ],
        hours_rows,
    )
    failing = {h: s for h, s in summaries.items() if not s.passed}
    late_hours = {h: s for h, s in summaries.items() if s.drift}
    label = lambda h: utc(h).strftime("%Y-%m-%dT%H")  # noqa: E731
    table = "\n".join(
        f"| {label(h)} | {s.hot_total} | {s.batch_total} | {s.stream_too_late} | "
        f"{s.unexplained_abs} | {s.keys_missing_in_hot} | {s.keys_missing_in_batch} | "
        f"{'ok' if s.passed else 'FAIL'} |"
        for h, s in summaries.items()
    )
    md = (
        "| hour | hot | batch | late (batch only) | unexplained | missing in hot | "
        "missing in batch | gate |\n|---|---|---|---|---|---|---|---|\n" + table
    )
    total = lambda attr: sum(getattr(s, attr) for s in summaries.values())  # noqa: E731
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(md),
            "hot_clicks": total("hot_total"),
            "batch_clicks": total("batch_total"),
            "drift": total("drift"),
            "explained_late": total("stream_too_late"),
            "unexplained_abs": total("unexplained_abs"),
            "keys_missing_in_hot": total("keys_missing_in_hot"),
            "keys_missing_in_batch": total("keys_missing_in_batch"),
            "failing_hours": ", ".join(label(h) for h in failing) or "none",
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="drift_within_threshold",
                passed=not failing,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "failing_hours": ", ".join(label(h) for h in failing) or "none",
                    "offenders": " | ".join(
                        f"{label(h)}: {s.describe()}" for h, s in failing.items()
                    )
                    or "none",
                    "max_unexplained_rel": config.max_unexplained_rel,
                    "max_unexplained_abs": config.max_unexplained_abs,
                },
            ),
            dg.AssetCheckResult(
                check_name="drift_including_late",
                passed=not late_hours,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "hours_with_drift": ", ".join(label(h) for h in late_hours) or "none",
                    "drift": total("drift"),
                    "explained_late": total("stream_too_late"),
                },
            ),
        ],
    )
