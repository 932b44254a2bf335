"""Spark as a Dagster resource: one SparkSession per process, built on first use.

Runs in-process (the Dagster run worker's own JVM via py4j) with `local[*]` by default; a
`master` URL (spark://...) points the same driver at a cluster, and `remote` (sc://...) uses
Spark Connect instead of a local driver. Starting a JVM costs ~10 s, so the session is shared by
every asset of a run (and every test of a pytest process) rather than built per materialisation.

With `s3a` on (CLICKAGG_SPARK_S3A=1) the session gets the S3A connector (the jars fetched by
`infra/spark.sh jars`, as `spark.jars`: shipped to every executor) and its settings, and the
assets hand Spark `s3a://` URLs of an `s3://` lake instead of copies downloaded on the run worker
(docs/batch.md "Running on a cluster").
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import dagster as dg
from pydantic import Field

_lock = threading.Lock()
_sessions: dict[tuple, object] = {}


def parse_conf(text: str) -> tuple[tuple[str, str], ...]:
    """`key=value` pairs separated by whitespace or commas (CLICKAGG_SPARK_CONF) -> pairs.
    A value cannot hold a comma or a space; settings that need one belong in the cluster's
    spark-defaults.conf."""
    pairs = []
    for item in text.replace(",", " ").split():
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value:
            raise ValueError(f"Spark setting {item!r} is not key=value (in {text!r})")
        pairs.append((key.strip(), value))
    return tuple(pairs)


# the SDK's default chain: env vars, system properties, web identity (IRSA, needs the sts jar),
# profile files, container/instance roles; S3A never sees a key in its configuration
S3A_CREDENTIALS = "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"


def s3a_conf(
    jars: list[str], endpoint_url: str = "", region: str = "", prefix: str = "spark.hadoop."
) -> tuple[tuple[str, str], ...]:
    """Spark settings that let driver and executors read/write s3a:// with these jars.
    `prefix`: `spark.hadoop.` for a SparkConf (classic), empty for session settings (Spark
    Connect: the server already has the jars; `fs.s3a.*` session settings reach the Hadoop
    configuration of its reads and writes). A custom endpoint (MinIO, moto) gets path-style
    access; credentials come from the default chain of each JVM, never from this conf."""
    p = prefix
    pairs = [] if not jars or not prefix else [("spark.jars", ",".join(jars))]
    pairs += [
        (f"{p}fs.s3a.aws.credentials.provider", S3A_CREDENTIALS),
        # many small raw files per run: enough pooled connections for every executor thread
        (f"{p}fs.s3a.connection.maximum", "64"),
        (f"{p}fs.s3a.threads.max", "32"),
    ]
    if endpoint_url:
        pairs += [(f"{p}fs.s3a.endpoint", endpoint_url), (f"{p}fs.s3a.path.style.access", "true")]
        if endpoint_url.startswith("http://"):
            pairs.append((f"{p}fs.s3a.connection.ssl.enabled", "false"))
    if region:
        pairs.append((f"{p}fs.s3a.endpoint.region", region))
    return tuple(pairs)


def s3a_jars(directory: Path) -> list[str]:
    """The fetched S3A jars (`infra/spark.sh jars` marks a complete fetch with `.complete`)."""
    if not (directory / ".complete").exists():
        raise RuntimeError(
            f"S3A jars missing in {directory}: run `infra/spark.sh jars` "
            "(or set CLICKAGG_SPARK_S3A=0 to read local copies)"
        )
    return sorted(str(p) for p in directory.glob("*.jar"))


def get_spark(
    master: str = "local[*]",
    remote: str = "",
    shuffle_partitions: int = 4,
    driver_memory: str = "3g",
    app_name: str = "clickagg-batch",
    conf: tuple[tuple[str, str], ...] = (),
):
    """The process-wide SparkSession for these settings (created once, reused). `conf`: extra
    settings applied last, so they override the local defaults set here."""
    key = (master, remote, shuffle_partitions, driver_memory, tuple(conf))
    with _lock:
        spark = _sessions.get(key)
        if spark is not None:
            return spark
        from pyspark.sql import SparkSession

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder.appName(app_name)
        if remote:
            builder = builder.remote(remote)
        else:
            builder = (
                builder.master(master)
                .config("spark.driver.memory", driver_memory)
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.adaptive.enabled", "true")
                .config("spark.driver.extraJavaOptions", "-Dlog4j2.level=ERROR")
            )
        builder = builder.config("spark.sql.session.timeZone", "UTC").config(
            "spark.sql.shuffle.partitions", str(shuffle_partitions)
        )
        for name, value in conf:
            builder = builder.config(name, value)
        spark = builder.getOrCreate()
        if not remote:
            spark.sparkContext.setLogLevel("ERROR")
        _sessions[key] = spark
        return spark


class SparkResource(dg.ConfigurableResource):
    """Where the reconcile transform runs: local threads, a Spark master or Spark Connect."""

    master: str = Field("local[*]", description="Spark master URL (local[*], spark://host:7077)")
    remote: str = Field("", description="Spark Connect URL (sc://host:15002); overrides master")
    shuffle_partitions: int = Field(4, description="spark.sql.shuffle.partitions")
    driver_memory: str = Field("3g", description="Driver JVM heap (local mode)")
    conf: str = Field(
        "",
        description="Extra Spark settings, key=value separated by spaces or commas, applied "
        "last (e.g. spark.executor.memory=4g spark.sql.shuffle.partitions=200)",
    )
    s3a: bool | None = Field(
        None,
        description="Read/write an s3:// lake through s3a:// (S3A jars + settings); "
        "unset = CLICKAGG_SPARK_S3A",
    )

    @property
    def s3a_on(self) -> bool:
        from clickagg_platform.settings import Settings

        return self.s3a if self.s3a is not None else Settings().spark_s3a

    def _s3a_conf(self) -> tuple[tuple[str, str], ...]:
        from clickagg_platform.settings import Settings

        s = Settings()
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
        if self.remote:  # the Connect server has the jars (infra/spark.sh start adds them)
            return s3a_conf([], s.s3_endpoint_url or "", region, prefix="")
        return s3a_conf(s3a_jars(s.spark_jars_path), s.s3_endpoint_url or "", region)

    def session(self):
        extra = self._s3a_conf() if self.s3a_on else ()
        return get_spark(
            self.master,
            self.remote,
            self.shuffle_partitions,
            self.driver_memory,
            conf=extra + parse_conf(self.conf),
        )
