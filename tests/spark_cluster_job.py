"""The reconcile of a raw lake's hours in a process of its own, on the Spark that the
environment names (CLICKAGG_SPARK_MASTER / CLICKAGG_SPARK_REMOTE / CLICKAGG_SPARK_CONF, read by
the code location's own `build_resources`): classic PySpark allows one SparkContext per
process, and the pytest process keeps its shared local[*] session.

    python -m tests.spark_cluster_job LAKE_ROOT TOPIC START_MS END_MS OUT_JSON

writes {"master", "rows"} to OUT_JSON; `rows` as `result_rows` returns them."""

from __future__ import annotations

import json
import sys


def result_rows(spark, root: str, topic: str, start_ms: int, end_ms: int) -> list[list]:
    """Sorted [minute_ms, advertiser, campaign, ad, clicks, fraud_clicks, stream_too_late] of
    the reconcile over every raw file of the lake (the hours and their whole dedup horizon)."""
    from pyspark.sql import functions as F

    from clickagg_platform import lake
    from clickagg_platform.reconcile import ReconcileParams, reconcile

    paths = [f.url.removeprefix("file://") for f in lake.raw_files(root, topic)]
    if not paths:
        raise ValueError(f"no raw files under {root} for topic {topic}")
    out = reconcile(spark.read.parquet(*paths), ReconcileParams(start_ms, end_ms))
    rows = out.select(
        F.unix_millis("window_start").alias("minute_ms"),
        "advertiser_id",
        "campaign_id",
        "ad_id",
        "clicks",
        "fraud_clicks",
        "stream_too_late",
    ).collect()
    return sorted([list(r) for r in rows])


def main(argv: list[str]) -> None:
    import dagster as dg

    from assets.definitions import build_resources

    root, topic, start, end, out_path = argv
    with dg.build_resources({"spark": build_resources()["spark"]}) as res:
        spark = res.spark.session()
        rows = result_rows(spark, root, topic, int(start), int(end))
        master = spark.conf.get("spark.master")  # over Connect: the server's master
        spark.stop()
    with open(out_path, "w") as fh:
        json.dump({"master": master, "rows": rows}, fh)


if __name__ == "__main__":
    main(sys.argv[1:])
