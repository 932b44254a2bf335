"""An s3:// lake read by the Spark executors themselves (s3a://), on the local standalone cluster
(infra/spark.sh) and through its Spark Connect server: moto's S3 server on loopback holds a
few hours of seeded raw archive; `dagster asset materialize` of `minute_aggregates` with
CLICKAGG_SPARK_S3A=1 builds the first-seen index of the earlier hours and reconciles the later
ones reading s3a:// (jars of `infra/spark.sh jars`), and the rows it swaps into ClickHouse equal
the independent recount exactly. The S3 server's request log shows the S3A connector (its
user agent) fetching every raw file read and writing the index, so the test fails if the run
fell back to local copies."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.batch_support import (
    HOUR,
    MIN,
    hour_key,
    place,
    reference_clicks,
    spark_cluster_up,
    write_archive,
)
from tests.conftest import ROOT
from tests.integration.stream_harness import free_port
from tests.unit.stream_sim import expected_billable, make_events

pytestmark = pytest.mark.integration

H0 = 1_767_225_600_000 + 9 * HOUR  # 2026-01-01T09:00Z
SPARK_SH = str(ROOT / "infra" / "spark.sh")
MASTER = f"spark://127.0.0.1:{os.environ.get('CLICKAGG_SPARK_MASTER_PORT', '17077')}"
MASTER_JSON = f"http://127.0.0.1:{os.environ.get('CLICKAGG_SPARK_MASTER_UI_PORT', '18090')}/json/"
# two 1-core executors (one per worker, beside the Connect server's): the job waits for both
CLUSTER_CONF = (
    "spark.driver.memory=1g spark.executor.memory=512m spark.executor.cores=1 "
    "spark.cores.max=2 spark.scheduler.minRegisteredResourcesRatio=1.0 "
    "spark.scheduler.maxRegisteredResourcesWaitingTime=90s"
)
S3A_AGENT = "Hadoop 3.4.1"  # S3A's user agent prefix (hadoop-aws of infra/spark/pom.xml)


class RecordingMotoServer:
    """moto's S3 server (its own WSGI app, a real HTTP S3 API) behind a recorder of (method,
    path, user agent) of every request."""

    def __init__(self):
        self.port = free_port()
        self.requests: list[tuple[str, str, str]] = []
        self._server = None

    def start(self) -> str:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)

        def recorded(environ, start_response):
            ua = environ.get("HTTP_USER_AGENT", "")
            self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), ua))
            return app(environ, start_response)

        self._server = make_server(
            "127.0.0.1", self.port, recorded, True, request_handler=MotoRequestHandler
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture(scope="module")
def s3a_jars():
    """The S3A jars, fetched once (a no-op when `.complete` is there)."""
    subprocess.run([SPARK_SH, "jars"], check=True, timeout=600)


@pytest.fixture(scope="module")
def spark_cluster(s3a_jars):
    """The local standalone cluster + Connect server: started unless already up (then its
    Connect server gets the S3A jars), stopped only if this fixture started it."""
    with spark_cluster_up(SPARK_SH):
        yield MASTER


@pytest.fixture(scope="module")
def s3_lake(tmp_path_factory):
    """moto on loopback, a bucket, ~3.5 hours of seeded traffic (duplicates across hours, bots,
    IP bursts, too-late clicks) archived there on 3 partitions, and the independent recount.
    Credentials: a shared-credentials file (moto takes any key), named by path only, so the
    keys are in neither a Spark setting nor a log."""
    import logging

    import boto3

    from clickagg_platform.settings import Settings

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log lines
    tmp = tmp_path_factory.mktemp("s3a")
    creds = tmp / "credentials"
    creds.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    server = RecordingMotoServer()
    endpoint = server.start()
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        bucket = f"clickagg-s3a-{uuid.uuid4().hex[:8]}"  # a fresh bucket: no cached S3A client
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        root = f"s3://{bucket}/lake"
        settings = Settings(lake_url=root, s3_endpoint_url=endpoint)
        events = make_events(seed=31, n=5000, start_ms=H0 + 25 * MIN, rate_per_s=0.45)
        parts = place(events, 3)
        write_archive(root, "clicks", parts, block=250, settings=settings)
        billable, fraud = reference_clicks(parts)
        hours = sorted({k[0] // HOUR * HOUR for k in billable})
        assert len(hours) >= 3
        yield {
            "server": server,
            "endpoint": endpoint,
            "bucket": bucket,
            "root": root,
            "env": env,
            "start": hours[0],
            "end": hours[-1] + HOUR,
            "billable": billable,
            "fraud": fraud,
            "stream": expected_billable(parts),
        }
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3a_connect(spark_cluster, s3_lake, tmp_path):
    """A Connect server of its own on the cluster (`infra/spark.sh start-connect`, own dir and
    port), started with the S3A jars and credentials in its environment, as a deployed one has
    its role: the cluster's shared Connect server may predate the lake's credentials."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLICKAGG_SPARK_")},
        **s3_lake["env"],
        "CLICKAGG_SPARK_DIR": str(tmp_path / "connect"),
        "CLICKAGG_SPARK_CONNECT_PORT": str(free_port()),
        # its executors (launched by the workers, not by it) find the credentials by path too
        "CLICKAGG_SPARK_CONNECT_CONF": "spark.executorEnv.AWS_SHARED_CREDENTIALS_FILE="
        + s3_lake["env"]["AWS_SHARED_CREDENTIALS_FILE"]
        + " spark.executorEnv.AWS_EC2_METADATA_DISABLED=true",
    }
    try:
        subprocess.run([SPARK_SH, "start-connect"], check=True, timeout=180, env=env)
        yield f"sc://127.0.0.1:{env['CLICKAGG_SPARK_CONNECT_PORT']}"
    finally:
        subprocess.run([SPARK_SH, "stop"], check=True, timeout=120, env=env)


# a horizon covering the whole seeded range (same rows as 24 h), so the index has 6 hours
RUN_CONFIG = json.dumps({"ops": {"minute_aggregates": {"config": {"dedup_horizon_hours": 6}}}})


def _materialize(env: dict, home: Path, first: int, last: int) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CLICKAGG_SPARK_")}
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize"]
        + ["-m", "assets.definitions", "--select", "minute_aggregates"]
        + ["--partition-range", f"{hour_key(first)}...{hour_key(last)}"]
        + ["--config-json", RUN_CONFIG],
        cwd=ROOT,
        env={**environ, "DAGSTER_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("via", ["master", "connect"])
def test_minute_aggregates_read_s3a_on_cluster(
    via, request, spark_cluster, s3_lake, tmp_path, settings, ch_database
):
    """One run over the hours after the first (their first copies come from the index of the
    earlier hours, built by this run through s3a): executors read the raw files and write the
    index with S3A; the rows swapped into ClickHouse equal the independent recount."""
    import urllib.request

    from clickagg_platform import clickhouse

    remote = request.getfixturevalue("s3a_connect") if via == "connect" else ""
    lake, server = s3_lake, s3_lake["server"]
    first, last = lake["start"] + HOUR, lake["end"] - HOUR
    home = tmp_path / "dagster_home"
    home.mkdir()
    topic = f"clicks_{via}"  # own raw copy and index per run: each run builds it through s3a
    _copy_raw(lake, "clicks", topic)
    creds = lake["env"]["AWS_SHARED_CREDENTIALS_FILE"]
    spark_env = (
        {
            "CLICKAGG_SPARK_MASTER": spark_cluster,
            # executors find the credentials file by path (in production: the instance role)
            "CLICKAGG_SPARK_CONF": CLUSTER_CONF
            + f" spark.executorEnv.AWS_SHARED_CREDENTIALS_FILE={creds}"
            + " spark.executorEnv.AWS_EC2_METADATA_DISABLED=true",
        }
        if via == "master"
        else {"CLICKAGG_SPARK_REMOTE": remote}
    )
    began_ms = int(time.time() * 1000)
    n_before = len(server.requests)
    proc = _materialize(
        {
            **lake["env"],
            **spark_env,
            "CLICKAGG_SPARK_S3A": "1",
            "CLICKAGG_LAKE_URL": lake["root"],
            "CLICKAGG_S3_ENDPOINT_URL": lake["endpoint"],
            "CLICKAGG_CLICKS_TOPIC": topic,
            "CLICKAGG_CLICKHOUSE_DATABASE": ch_database,
        },
        home,
        first,
        last,
    )
    (Path("/tmp") / f"s3a-{via}.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    # no key in the run's output (settings are logged on failure only, but check anyway)
    assert "aws_secret_access_key" not in proc.stdout + proc.stderr

    # the S3A connector read every raw file of the range's hours and wrote the index
    reqs = server.requests[n_before:]
    s3a_gets = {p for m, p, ua in reqs if m == "GET" and S3A_AGENT in ua}
    raw_prefix = f"/{lake['bucket']}/lake/raw/topic={topic}/"
    raw_read = {p for p in s3a_gets if p.startswith(raw_prefix) and p.endswith(".parquet")}
    assert raw_read, f"no S3A GET of a raw file; user agents seen: {sorted({r[2] for r in reqs})}"
    hours_files = _raw_keys_of_hours(lake, topic, first, last + HOUR)
    assert hours_files <= raw_read, sorted(hours_files - raw_read)[:5]
    index_prefix = f"/{lake['bucket']}/lake/index/first_seen/topic={topic}/_staging/"
    assert any(
        m == "PUT" and p.startswith(index_prefix) and S3A_AGENT in ua for m, p, ua in reqs
    ), "the index was not written through S3A"
    staging = _keys(lake, f"lake/index/first_seen/topic={topic}/_staging/")
    assert not [k for k in staging if not k.endswith("/")]  # removed (directory markers aside)

    with urllib.request.urlopen(MASTER_JSON, timeout=10) as resp:
        apps = json.load(resp)
    if via == "master":
        ran = [
            (a["cores"], a["state"])
            for a in apps["completedapps"]
            if a["name"] == "clickagg-batch" and a["starttime"] >= began_ms
        ]
        assert ran == [(2, "FINISHED")], apps["completedapps"]
    else:
        # the Connect server that ran the jobs (its driver) is a running app of the master
        assert len([a for a in apps["activeapps"] if a["name"] == "clickagg-connect"]) >= 1

    c = clickhouse.client(settings)
    try:
        got = c.execute(
            "SELECT toInt64(toUnixTimestamp(window_start)) * 1000, advertiser_id, campaign_id, "
            "ad_id, clicks, fraud_clicks, stream_too_late "
            f"FROM {ch_database}.minute_aggregates_batch ORDER BY 1, 2, 3, 4"
        )
    finally:
        c.disconnect()
    in_range = lambda k: first <= k[0] < last + HOUR  # noqa: E731
    by_key = {(m, adv, cmp, ad): (n, f, late) for m, adv, cmp, ad, n, f, late in got}
    assert len(by_key) > 100
    want_billable = Counter({k: v for k, v in lake["billable"].items() if in_range(k)})
    want_fraud = Counter({k: v for k, v in lake["fraud"].items() if in_range(k)})
    assert Counter({k: v[0] for k, v in by_key.items() if v[0]}) == +want_billable
    assert Counter({k: v[1] for k, v in by_key.items() if v[1]}) == +want_fraud
    assert sum(v[2] for v in by_key.values()) > 0  # some clicks too late for the stream
    counted = Counter({(m, c_, a): n - late for (m, _adv, c_, a), (n, _f, late) in by_key.items()})
    want_stream = Counter({k: v for k, v in lake["stream"].items() if in_range(k)})
    assert +counted == +want_stream


def _keys(lake: dict, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=lake["endpoint"], region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=lake["bucket"], Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _copy_raw(lake: dict, src: str, dest: str) -> None:
    """The raw archive (files + hour markers) of topic `src` also under topic `dest`."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=lake["endpoint"], region_name="us-east-1")
    for key in _keys(lake, "lake/raw/"):
        if f"topic={src}/" in key:
            new = key.replace(f"topic={src}/", f"topic={dest}/")
            s3.copy_object(Bucket=lake["bucket"], Key=new, CopySource=f"{lake['bucket']}/{key}")


def _raw_keys_of_hours(lake: dict, topic: str, start: int, end: int) -> set[str]:
    """Request paths of the raw files holding the clicks of [start, end) (hour markers)."""
    from datetime import UTC, datetime

    from clickagg_platform import lake as lake_

    out = set()
    for h in range(start, end, HOUR):
        d = datetime.fromtimestamp(h / 1000, UTC)
        for key in _keys(lake, f"lake/raw/_hours/topic={topic}/dt={d:%Y-%m-%d}/hour={d:%H}/"):
            f = lake_.parse_raw_name(key.rsplit("/", 1)[-1])
            if f is None:  # the directory marker object of the prefix
                continue
            url = lake_.raw_file_url(lake["root"], topic, f.partition, f.first, f.last)
            out.add("/" + url.removeprefix("s3://"))
    return out
