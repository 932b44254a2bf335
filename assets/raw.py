"""Inputs of the batch path: the raw archive per event hour, the stream's hot table and the
campaign catalog (both produced outside Dagster, modelled here so their lineage shows)."""

import time
from datetime import UTC, datetime

import dagster as dg
import pyarrow.compute as pc

from assets.common import HOUR_MS, TRANSIENT, hours_in, ms, raw_files_for, signature
from assets.partitions import hourly
from clickagg_platform import lake
from clickagg_platform.model import click_schema
from resources.clickhouse import ClickHouseResource
from resources.kafka import KafkaResource
from resources.lake import LakeResource

SCHEMA_CHECK = dg.AssetCheckSpec(
    "raw_clicks_schema",
    asset="raw_clicks",
    description="Every decoded click of the hour passes the pandera ClickEvent schema",
    blocking=True,
)


def _column_schema() -> dg.TableSchema:
    schema = click_schema()
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(col.dtype)) for name, col in schema.columns.items()]
    )


@dg.asset(
    partitions_def=hourly,
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=TRANSIENT,
    kinds={"parquet", "pandas"},
    group_name="batch",
    check_specs=[SCHEMA_CHECK],
)
def raw_clicks(
    context: dg.AssetExecutionContext, lake_store: LakeResource, kafka: KafkaResource
) -> dg.MaterializeResult:
    """The hour's clicks in the raw archive (late arrivals included), validated."""
    import pandera.errors

    settings = lake_store.settings()
    window = context.partition_time_window
    per_hour, failures, records, files_total = {}, [], 0, set()
    for h in hours_in(window.start, window.end):
        files, table = lake.read_raw_listed(
            lambda h=h: raw_files_for(lake_store.url, lake_store.topic, [h], settings), settings
        )
        files_total.update(f.url for f in files)
        decoded = table.filter(pc.is_null(table["decode_error"]))
        t = decoded["event_time"]
        hour = decoded.filter(pc.and_(pc.greater_equal(t, h), pc.less(t, h + HOUR_MS)))
        df = hour.drop_columns(["raw_value"]).to_pandas()
        try:
            click_schema().validate(df, lazy=True)
        except pandera.errors.SchemaErrors as exc:
            cases = exc.failure_cases
            failures.append(
                f"{datetime.fromtimestamp(h / 1000, UTC):%Y-%m-%dT%H}: "
                f"{len(cases)} failures, e.g. {cases.head(3).to_dict('records')}"
            )
        records += hour.num_rows
        per_hour[h] = {
            "files": len(files),
            "records": hour.num_rows,
            "event_ids": len(set(hour["event_id"].to_pylist())),
            "bot_ua": int(pc.sum(pc.equal(hour["fraud_reason"], "bot_ua")).as_py() or 0),
            "undecodable_in_files": table.num_rows - decoded.num_rows,
            "signature": signature(files),
        }
    archived_end = {}
    for url in files_total:
        f = lake.parse_raw_name(url)
        if f:
            archived_end[f.partition] = max(archived_end.get(f.partition, 0), f.last + 1)
    metadata = {
        "records": records,
        "files": len(files_total),
        "event_ids": sum(v["event_ids"] for v in per_hour.values()),
        "duplicate_copies": records - sum(v["event_ids"] for v in per_hour.values()),
        "bot_ua": sum(v["bot_ua"] for v in per_hour.values()),
        "per_hour": dg.MetadataValue.json({str(k): v for k, v in per_hour.items()}),
        "kafka_end_offsets": dg.MetadataValue.json(
            {str(p): o for p, o in sorted(kafka.end_offsets().items())}
        ),
        "dagster/column_schema": _column_schema(),
    }
    sig = signature([f for u in sorted(files_total) if (f := lake.parse_raw_name(u))])
    return dg.MaterializeResult(
        metadata=metadata,
        data_version=dg.DataVersion(sig),
        check_results=[
            dg.AssetCheckResult(
                check_name="raw_clicks_schema",
                passed=not failures,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"failures": "; ".join(failures) or "none", "records": records},
            )
        ],
    )


@dg.observable_source_asset(
    group_name="hot",
    kinds={"clickhouse"},
    description="The stream worker's per-minute hot aggregates in ClickHouse (hot_clicks).",
)
def hot_minute_aggregates(clickhouse: ClickHouseResource) -> dg.ObserveResult:
    """The stream worker's per-minute hot aggregates in ClickHouse (hot_clicks)."""
    rows = clickhouse.query(
        f"SELECT count(), max(version), max(window_start) FROM {clickhouse.table('hot_clicks')}"
    )
    n, version, latest = rows[0]
    return dg.ObserveResult(
        data_version=dg.DataVersion(f"{n}:{version}"),
        metadata={"rows": int(n), "latest_window": str(latest)},
    )


@dg.asset_check(
    asset=hot_minute_aggregates,
    description="The hot table's newest minute is recent (WARN: dashboards go stale)",
)
def hot_table_fresh(clickhouse: ClickHouseResource) -> dg.AssetCheckResult:
    """Newest hot minute vs now: more than 15 minutes behind means the stream is stuck or the
    traffic stopped; either way on-call should look (informs, never blocks)."""
    latest = clickhouse.query(f"SELECT max(window_start) FROM {clickhouse.table('hot_clicks')}")[0][
        0
    ]
    latest_ms = ms(latest.replace(tzinfo=UTC)) if latest and latest.year > 1970 else 0
    now_ms = int(time.time() * 1000)
    lag_s = (now_ms - latest_ms) / 1000 if latest_ms else None
    max_lag_s = 15 * 60
    return dg.AssetCheckResult(
        passed=lag_s is not None and lag_s <= max_lag_s,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "latest_window": str(latest),
            "lag_s": lag_s if lag_s is not None else -1.0,
            "max_lag_s": max_lag_s,
        },
    )


campaign_catalog = dg.AssetSpec(
    "campaign_catalog",
    description="Advertisers, campaigns and CPCs (imported with `clickagg campaigns import`).",
    group_name="reference",
    kinds={"parquet", "clickhouse"},
)
