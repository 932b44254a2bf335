"""Spark as a Dagster resource: one SparkSession per process, built on first use.

Runs in-process (the Dagster run worker's own JVM via py4j) with `local[*]` by default; a
`master` URL (spark://...) points the same driver at a cluster, and `remote` (sc://...) uses
Spark Connect instead of a local driver. Starting a JVM costs ~10 s, so the session is shared by
every asset of a run (and every test of a pytest process) rather than built per materialisation.
"""

from __future__ import annotations

import os
import sys
import threading

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

    def session(self):
        return get_spark(
            self.master,
            self.remote,
            self.shuffle_partitions,
            self.driver_memory,
            conf=parse_conf(self.conf),
        )
