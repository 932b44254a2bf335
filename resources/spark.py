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


def get_spark(
    master: str = "local[*]",
    remote: str = "",
    shuffle_partitions: int = 4,
    driver_memory: str = "3g",
    app_name: str = "clickagg-batch",
):
    """The process-wide SparkSession for these settings (created once, reused)."""
    key = (master, remote, shuffle_partitions, driver_memory)
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

    def session(self):
        return get_spark(self.master, self.remote, self.shuffle_partitions, self.driver_memory)
