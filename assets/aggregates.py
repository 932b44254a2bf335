"""The reconcile step: raw archive -> billable clicks per (minute, campaign, ad), by Spark."""

import time
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa
from pydantic import Field

from assets import first_seen
from assets.common import (
    HOUR_MS,
    MINUTE_AGG_SCHEMA,
    TRANSIENT,
    file_max_event_time,
    hour_pid,
    hours_in,
    minute_agg_url,
    ms,
    raw_files_for,
    signature,
    utc,
)
from assets.partitions import hourly
from clickagg_platform import lake
from clickagg_platform.reconcile import (
    BROADCAST_MAX_ROWS,
    OUTPUT_COLUMNS,
    ReconcileParams,
    duckdb_reconcile,
    horizon_hours,
    reconcile,
    watermark_seeds,
)
from resources.clickhouse import ClickHouseResource
from resources.lake import LakeResource
from resources.spark import SparkResource

TOTAL_CHECK = dg.AssetCheckSpec(
    "batch_total_matches_raw",
    asset="minute_aggregates",
    description="Per (minute, campaign, ad) and in total, the Spark result equals an "
    "independent DuckDB recount of distinct billable event_ids over the same raw files",
    blocking=True,
)


SCHEMA_CHECK = dg.AssetCheckSpec(
    "minute_aggregates_schema",
    asset="minute_aggregates",
    description="The lake files read back with exactly the contract schema the dbt project reads",
    blocking=True,
)


def _schema_problems(url: str, settings) -> list[str]:
    import pyarrow.parquet as pq

    fs, path = lake.filesystem(url, settings)
    with fs.open_input_file(path) as fh:
        got = pq.read_schema(fh)
    if got.equals(MINUTE_AGG_SCHEMA):
        return []
    return [f"{url}: {got} != contract"]


class ReconcileConfig(dg.Config):
    """Unset values come from the stream's settings (CLICKAGG_STREAM_*): one rule, two paths."""

    dedup_horizon_hours: int | None = Field(None, description="Dedup horizon (default: stream's)")
    ip_rate_threshold: int | None = Field(None, description="Distinct clicks per ip-minute")
    out_of_orderness_s: float | None = Field(None, description="Stream watermark bound")
    allowed_lateness_s: float | None = Field(None, description="Stream allowed lateness")
    use_index: bool = Field(
        True,
        description="Join the first-seen index of the horizon's earlier hours (False: re-read "
        "every raw file of the horizon, the pre-index path: O(horizon) per run)",
    )
    full_recount: bool = Field(
        False,
        description="The DuckDB recount behind batch_total_matches_raw re-reads the whole "
        "horizon's raw files (independent of the index) instead of joining the same index",
    )
    broadcast_max_rows: int = Field(
        BROADCAST_MAX_ROWS,
        description="Up to this many raw rows read, the range's first copies are broadcast to "
        "probe the index (no shuffle of the index); above, a sort-merge join",
    )
    index_buckets: int = Field(
        0, description="Buckets of index hours built by this run (0 = sized from the rows)"
    )


def reconcile_params(config: ReconcileConfig, start_ms: int, end_ms: int):
    from streaming.config import StreamSettings

    ss = StreamSettings()
    horizon_h = config.dedup_horizon_hours
    horizon_ms = horizon_h * HOUR_MS if horizon_h is not None else ss.horizon_ms
    params = ReconcileParams(
        start_ms,
        end_ms,
        ip_rate_threshold=config.ip_rate_threshold or ss.ip_rate_threshold,
        out_of_orderness_ms=int((config.out_of_orderness_s or ss.out_of_orderness_s) * 1000),
        allowed_lateness_ms=int(
            (
                config.allowed_lateness_s
                if config.allowed_lateness_s is not None
                else ss.allowed_lateness_s
            )
            * 1000
        ),
    )
    return params, horizon_ms


def load_raw(spark, paths: list[str]):
    if not paths:
        return spark.createDataFrame(lake.RAW_SCHEMA.empty_table())
    return spark.read.parquet(*paths)


def _reconcile_files(
    files, params, spark, lake_store, settings, horizon, seen_urls, full, broadcast_max_rows
):
    """Spark result rows and the DuckDB recount over exactly these raw files (+ the index files
    of earlier hours, `seen_urls`). `horizon`: the files of the horizon's hours (watermark
    seeds; with `full`, the DuckDB recount reads all of them instead of the index)."""
    from pyspark.sql import functions as F

    seeds = watermark_seeds(files, horizon, lambda f: file_max_event_time(f, settings))
    # local copies: what the DuckDB recount reads (and Spark too, unless it reads s3a itself)
    with (
        lake_store.local_copies(files) as paths,
        lake_store.local_paths(seen_urls) as seen_paths,
        lake_store.local_copies(horizon if full else []) as horizon_paths,
    ):
        raw_in, seen_in = paths, seen_paths
        if lake_store.is_s3 and spark.s3a_on:  # executors read the lake themselves
            raw_in = [lake.s3a_url(f.url) for f in files]
            seen_in = [lake.s3a_url(u) for u in seen_urls]
        session = spark.session()
        seed_df = None
        if seeds:
            seed_df = session.createDataFrame(
                seeds, "kafka_partition int, first long, last long, seed_max_t long"
            )
        seen_df = session.read.parquet(*seen_in) if seen_in else None
        small = first_seen.rows_in(paths) <= broadcast_max_rows
        result = reconcile(load_raw(session, raw_in), params, seed_df, seen_df, small)
        rows = (
            result.withColumn("minute_ms", F.unix_millis("window_start"))
            .drop("window_start")
            .orderBy("minute_ms", "campaign_id", "ad_id", "advertiser_id")
            .collect()
        )
        if full:
            recount = duckdb_reconcile(horizon_paths, params)
        else:
            recount = duckdb_reconcile(paths, params, seen_files=seen_paths)
    return rows, recount


def _run_with_relist(list_files, run, log, attempts: int = 3):
    """The archiver replaces a partial file by its longer successor (and deletes the partial):
    a read can race with that. If a read fails and the listing changed meanwhile, list and
    read again; a failure on an unchanged listing is a real error."""
    files = list_files()
    for attempt in range(attempts):
        try:
            rows, recount = run(files)
            return files, rows, recount
        except Exception:
            again = list_files()
            if again == files or attempt == attempts - 1:
                raise
            log.warning("raw files changed during the read (archiver flush); reading again")
            files = again
    raise AssertionError("unreachable")


@dg.asset(
    partitions_def=hourly,
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=TRANSIENT,
    deps=[
        "raw_clicks",
        # lineage: an hour joins the index of the dedup horizon's earlier hours (24 by default)
        dg.AssetDep(
            "first_seen_index",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-24, end_offset=-1, allow_nonexistent_upstream_partitions=True
            ),
        ),
    ],
    kinds={"spark", "parquet", "clickhouse"},
    group_name="batch",
    check_specs=[TOTAL_CHECK, SCHEMA_CHECK],
)
def minute_aggregates(
    context: dg.AssetExecutionContext,
    config: ReconcileConfig,
    spark: SparkResource,
    lake_store: LakeResource,
    clickhouse: ClickHouseResource,
) -> dg.MaterializeResult:
    """Billable clicks per minute, campaign and ad: deduplicated, fraud excluded (the truth)."""
    window = context.partition_time_window
    start_ms, end_ms = ms(window.start), ms(window.end)
    params, horizon_ms = reconcile_params(config, start_ms, end_ms)
    settings = lake_store.settings()
    hours = hours_in(window.start, window.end)
    signatures = {
        str(h): signature(raw_files_for(lake_store.url, lake_store.topic, [h], settings))
        for h in hours
    }
    t0 = time.monotonic()
    root, topic = lake_store.url, lake_store.topic
    all_hours = horizon_hours(start_ms, end_ms, horizon_ms)
    earlier = [h for h in all_hours if h < start_ms]
    seen_urls, index_rows, rebuilt = [], 0, []
    if config.use_index:
        # the horizon's earlier hours come from the index (built here if missing or stale)
        pointers, rebuilt = first_seen.current(
            spark.session(),
            lake_store,
            settings,
            earlier,
            config.index_buckets,
            context.run_id,
            context.log,
            spark.s3a_on,
        )
        for h in earlier:
            seen_urls += first_seen.index_file_urls(root, topic, h, pointers[h], settings)
            index_rows += pointers[h].rows
        read_hours = hours
    else:
        read_hours = all_hours
    files, rows, recount = _run_with_relist(
        lambda: raw_files_for(root, topic, read_hours, settings),
        lambda files: _reconcile_files(
            files,
            params,
            spark,
            lake_store,
            settings,
            raw_files_for(root, topic, all_hours, settings),
            seen_urls,
            config.full_recount,
            config.broadcast_max_rows,
        ),
        context.log,
    )
    spark_s = time.monotonic() - t0
    got = {
        (r.minute_ms, r.advertiser_id, r.campaign_id, r.ad_id): (r.clicks, r.fraud_clicks)
        for r in rows
    }
    differ = sorted(
        k for k in set(got) | set(recount) if got.get(k, (0, 0)) != recount.get(k, (0, 0))
    )

    now = datetime.now(UTC).replace(microsecond=0)
    per_hour: dict[int, list] = {h: [] for h in hours}
    for r in rows:
        per_hour[r.minute_ms // HOUR_MS * HOUR_MS].append(r)
    written, schema_problems = {}, []
    for h, hrows in per_hour.items():
        billable = [r for r in hrows if r.clicks > 0]
        table = pa.table(
            {
                "window_start": pa.array([r.minute_ms for r in billable], pa.int64()).cast(
                    pa.timestamp("ms", tz="UTC")
                ),
                "advertiser_id": [r.advertiser_id for r in billable],
                "campaign_id": [r.campaign_id for r in billable],
                "ad_id": [r.ad_id for r in billable],
                "clicks": pa.array([r.clicks for r in billable], pa.int64()),
            },
            schema=MINUTE_AGG_SCHEMA,
        )
        url = minute_agg_url(lake_store.url, h)
        lake.write_table(url, table, settings)
        written[h] = lake_store.describe(url)
        schema_problems += _schema_problems(url, settings)
    ch_rows = [
        (
            utc(r.minute_ms // HOUR_MS * HOUR_MS),
            utc(r.minute_ms),
            r.advertiser_id,
            r.campaign_id,
            r.ad_id,
            r.clicks,
            r.fraud_clicks,
            r.stream_too_late,
            now,
            context.run_id,
        )
        for r in rows
    ]
    clickhouse.replace_partitions(
        "minute_aggregates_batch",
        [hour_pid(h) for h in hours],
        ["hour", *OUTPUT_COLUMNS, "reconciled_at", "run_id"],
        ch_rows,
    )
    clicks = sum(r.clicks for r in rows)
    hours_md = {
        utc(h).strftime("%Y-%m-%dT%H"): {
            "clicks": sum(r.clicks for r in per_hour[h]),
            "fraud_clicks": sum(r.fraud_clicks for r in per_hour[h]),
            "stream_too_late": sum(r.stream_too_late for r in per_hour[h]),
            **written[h],
        }
        for h in hours
    }
    return dg.MaterializeResult(
        metadata={
            "clicks": clicks,
            "fraud_clicks": sum(r.fraud_clicks for r in rows),
            "stream_too_late": sum(r.stream_too_late for r in rows),
            "keys": len(rows),
            "raw_files_read": len(files),
            "index_hours_joined": len(earlier) if config.use_index else 0,
            "index_ids_joined": index_rows,
            "index_hours_rebuilt": len(rebuilt),
            "recount": "full horizon" if config.full_recount else "same inputs",
            "horizon_hours": horizon_ms // HOUR_MS,
            "reconcile_seconds": round(spark_s, 2),  # Spark job + DuckDB recount
            "clicks_per_second": round(clicks / spark_s, 1) if spark_s else 0.0,
            "raw_signatures": dg.MetadataValue.json(signatures),
            "per_hour": dg.MetadataValue.json(hours_md),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="minute_aggregates_schema",
                passed=not schema_problems,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"problems": "; ".join(schema_problems) or "none"},
            ),
            dg.AssetCheckResult(
                check_name="batch_total_matches_raw",
                passed=not differ,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "spark_clicks": clicks,
                    "duckdb_clicks": sum(v[0] for v in recount.values()),
                    "keys_differing": len(differ),
                    "differing": "; ".join(
                        f"{c}/{a}@{utc(m):%Y-%m-%dT%H:%MZ}: spark={got.get(k, (0, 0))[0]} "
                        f"duckdb={recount.get(k, (0, 0))[0]}"
                        for k in differ[:20]
                        for (m, _adv, c, a) in [k]
                    )
                    or "none",
                },
            ),
        ],
    )
