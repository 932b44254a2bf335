"""The batch truth on a real Spark standalone cluster (a master and two workers on loopback,
from the installed pyspark: infra/spark.sh) and through Spark Connect on that cluster, selected
the way the code location selects it (CLICKAGG_SPARK_MASTER / CLICKAGG_SPARK_REMOTE):
`minute_aggregates` materialised there writes exactly local[*]'s rows, and local[*] equals the
independent recount of the seeded clicks. The cluster sides run in `dagster asset materialize`
subprocesses: classic PySpark allows one SparkContext per process, and the pytest process
keeps its shared local[*] session."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections import Counter

import pytest

from tests.batch_support import HOUR, MIN, place, reference_clicks, spark_cluster_up, write_archive
from tests.conftest import ROOT
from tests.unit.stream_sim import expected_billable, make_events

pytestmark = pytest.mark.integration

H0 = 1_767_225_600_000 + 5 * HOUR  # 2026-01-01T05:00Z
SPARK_SH = str(ROOT / "infra" / "spark.sh")
MASTER = f"spark://127.0.0.1:{os.environ.get('CLICKAGG_SPARK_MASTER_PORT', '17077')}"
MASTER_JSON = f"http://127.0.0.1:{os.environ.get('CLICKAGG_SPARK_MASTER_UI_PORT', '18090')}/json/"
REMOTE = f"sc://127.0.0.1:{os.environ.get('CLICKAGG_SPARK_CONNECT_PORT', '15012')}"
# small executors (1 core, 512 MiB) so this app gets one on each worker beside the Connect
# server's; the job starts only once both registered, so it really runs on two workers
CLUSTER_CONF = (
    "spark.driver.memory=1g spark.executor.memory=512m spark.executor.cores=1 "
    "spark.cores.max=2 spark.scheduler.minRegisteredResourcesRatio=1.0 "
    "spark.scheduler.maxRegisteredResourcesWaitingTime=90s"
)


@pytest.fixture(scope="session")
def spark_cluster():
    """The local standalone cluster + Connect server: started unless already up, stopped only
    if this fixture started it."""
    with spark_cluster_up(SPARK_SH):
        yield MASTER


@pytest.fixture(scope="module")
def lake_hours(tmp_path_factory):
    """~2.5 hours of seeded traffic (duplicates across hours, bots, IP bursts, too-late clicks)
    archived on 3 partitions; the range to reconcile and the independent recount."""
    root = f"file://{tmp_path_factory.mktemp('cluster_lake')}"
    events = make_events(seed=23, n=4500, start_ms=H0 + 20 * MIN, rate_per_s=0.5)
    parts = place(events, 3)
    write_archive(root, "clicks", parts, block=250)
    billable, fraud = reference_clicks(parts)
    hours = sorted({k[0] // HOUR * HOUR for k in billable})
    assert len(hours) >= 3
    return root, hours[0], hours[-1] + HOUR, billable, fraud, expected_billable(parts)


def result_rows(spark, root: str, topic: str, start_ms: int, end_ms: int) -> list[list]:
    """Sorted [minute_ms, advertiser, campaign, ad, clicks, fraud_clicks, stream_too_late] of
    the reconcile over every raw file of the lake (the hours and their whole dedup horizon)."""
    from pyspark.sql import functions as F

    from clickagg_platform import lake
    from clickagg_platform.reconcile import ReconcileParams, reconcile

    paths = [f.url.removeprefix("file://") for f in lake.raw_files(root, topic)]
    out = reconcile(spark.read.parquet(*paths), ReconcileParams(start_ms, end_ms))
    rows = out.select(
        F.unix_millis("window_start"),
        "advertiser_id",
        "campaign_id",
        "ad_id",
        "clicks",
        "fraud_clicks",
        "stream_too_late",
    ).collect()
    return sorted([list(r) for r in rows])


def master_apps() -> dict:
    with urllib.request.urlopen(MASTER_JSON, timeout=10) as resp:
        return json.load(resp)


@pytest.fixture(scope="module")
def local_rows(lake_hours):
    """The same reconcile on the pytest process's shared local[*] session."""
    from resources.spark import get_spark

    root, start, end, *_ = lake_hours
    return result_rows(get_spark(), root, "clicks", start, end)


def test_local_rows_match_independent_recount(lake_hours, local_rows):
    _root, _start, _end, billable, fraud, stream = lake_hours
    by_key = {(m, adv, c, a): (n, f, late) for m, adv, c, a, n, f, late in local_rows}
    assert Counter({k: v[0] for k, v in by_key.items() if v[0]}) == +billable
    assert Counter({k: v[1] for k, v in by_key.items() if v[1]}) == +fraud
    assert sum(fraud.values()) > 30 and sum(v[2] for v in by_key.values()) > 0
    # billable minus too-late-for-the-stream is what the stream's own rules count
    counted = Counter({(m, c, a): n - late for (m, _adv, c, a), (n, _f, late) in by_key.items()})
    assert +counted == +stream


@pytest.mark.parametrize("via", ["master", "connect"])
def test_minute_aggregates_on_cluster_equal_local(
    via, spark_cluster, tmp_path, lake_hours, local_rows, settings, ch_database
):
    """The code location itself (`dagster asset materialize -m assets.definitions`) with
    CLICKAGG_SPARK_MASTER=spark://... (or CLICKAGG_SPARK_REMOTE=sc://...): one run over the
    range's hours after the first, whose first copies come from the first-seen index (built by
    the first of these runs, on the cluster; reused by the second); the rows it swaps into
    ClickHouse equal local[*]'s for those hours in every column."""
    from clickagg_platform import clickhouse
    from tests.batch_support import hour_key

    root, start, end, *_ = lake_hours
    first, last = start + HOUR, end - HOUR
    home = tmp_path / "dagster_home"
    home.mkdir()
    began_ms = int(time.time() * 1000)
    spark_env = (
        {"CLICKAGG_SPARK_MASTER": spark_cluster, "CLICKAGG_SPARK_CONF": CLUSTER_CONF}
        if via == "master"
        else {"CLICKAGG_SPARK_REMOTE": REMOTE}
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CLICKAGG_SPARK_")}
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize"]
        + ["-m", "assets.definitions", "--select", "minute_aggregates"]
        + ["--partition-range", f"{hour_key(first)}...{hour_key(last)}"],
        cwd=ROOT,
        env={
            **environ,
            "DAGSTER_HOME": str(home),
            **spark_env,
            "CLICKAGG_LAKE_URL": root,
            "CLICKAGG_CLICKS_TOPIC": "clicks",
            "CLICKAGG_CLICKHOUSE_DATABASE": ch_database,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    apps = master_apps()
    if via == "master":
        # the run was an application of the cluster with two 1-core executors (one per worker)
        done = apps["completedapps"]
        ran = [a for a in done if a["name"] == "clickagg-batch" and a["starttime"] >= began_ms]
        assert [(a["cores"], a["state"]) for a in ran] == [(2, "FINISHED")], done
    else:
        # the Connect server (whose SparkContext ran the run's jobs) is an app of the cluster
        running = [(a["name"], a["cores"]) for a in apps["activeapps"]]
        assert ("clickagg-connect", 1) in running, running
    c = clickhouse.client(settings)
    try:
        got = c.execute(
            "SELECT toInt64(toUnixTimestamp(window_start)) * 1000, advertiser_id, campaign_id, "
            "ad_id, clicks, fraud_clicks, stream_too_late "
            f"FROM {ch_database}.minute_aggregates_batch ORDER BY 1, 2, 3, 4"
        )
    finally:
        c.disconnect()
    want = [r for r in local_rows if r[0] >= first]
    assert len(want) > 100
    assert sorted(list(r) for r in got) == want
