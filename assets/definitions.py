"""The Dagster code location of the batch path (`dagster dev -w workspace.yaml`).

Built lazily inside a `@dg.definitions` function: importing this module touches no service and
parses no dbt project; resources connect only when a run uses them. This is the one place that
decides local vs production settings: each value is an `EnvVar` when the variable is set (so
secrets never show in the UI) and the local default otherwise.
"""

from __future__ import annotations

import os

import dagster as dg


def _env(name: str, default):
    return dg.EnvVar(name) if os.environ.get(name) else default


def _env_int(name: str, default: int):
    return dg.EnvVar.int(name) if os.environ.get(name) else default


def build_resources() -> dict:
    from dagster_aws.s3 import S3Resource

    from clickagg_platform.settings import REPO_ROOT
    from resources.clickhouse import ClickHouseResource
    from resources.kafka import KafkaResource
    from resources.lake import LakeResource
    from resources.spark import SparkResource

    local_dir = os.environ.get("CLICKAGG_LOCAL_DIR", str(REPO_ROOT / ".local"))
    bootstrap = os.environ.get("CLICKAGG_KAFKA_BOOTSTRAP") or (
        f"127.0.0.1:{os.environ.get('CLICKAGG_KAFKA_PORT', '19092')}"
    )
    return {
        "clickhouse": ClickHouseResource(
            host=_env("CLICKAGG_CLICKHOUSE_HOST", "127.0.0.1"),
            port=_env_int("CLICKAGG_CLICKHOUSE_PORT", 19000),
            user=_env("CLICKAGG_CLICKHOUSE_USER", "default"),
            password=_env("CLICKAGG_CLICKHOUSE_PASSWORD", ""),
            database=_env("CLICKAGG_CLICKHOUSE_DATABASE", "clickagg"),
        ),
        "lake_store": LakeResource(
            url=_env("CLICKAGG_LAKE_URL", f"file://{local_dir}/lake"),
            s3_endpoint_url=_env("CLICKAGG_S3_ENDPOINT_URL", ""),
            topic=_env("CLICKAGG_CLICKS_TOPIC", "clicks"),
            s3=S3Resource(
                endpoint_url=_env("CLICKAGG_S3_ENDPOINT_URL", None),
                region_name=_env("AWS_DEFAULT_REGION", "us-east-1"),
            ),
        ),
        "spark": SparkResource(
            master=_env("CLICKAGG_SPARK_MASTER", "local[*]"),
            remote=_env("CLICKAGG_SPARK_REMOTE", ""),
            conf=_env("CLICKAGG_SPARK_CONF", ""),
        ),
        "kafka": KafkaResource(
            bootstrap=bootstrap,
            topic=_env("CLICKAGG_CLICKS_TOPIC", "clicks"),
            security_protocol=_env("CLICKAGG_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            ssl_cafile=_env("CLICKAGG_KAFKA_SSL_CAFILE", ""),
            ssl_certfile=_env("CLICKAGG_KAFKA_SSL_CERTFILE", ""),
            ssl_keyfile=_env("CLICKAGG_KAFKA_SSL_KEYFILE", ""),
            ssl_key_password=_env("CLICKAGG_KAFKA_SSL_KEY_PASSWORD", ""),
            sasl_mechanism=_env("CLICKAGG_KAFKA_SASL_MECHANISM", ""),
            sasl_username=_env("CLICKAGG_KAFKA_SASL_USERNAME", ""),
            sasl_password=_env("CLICKAGG_KAFKA_SASL_PASSWORD", ""),
        ),
    }


def batch_assets() -> list:
    from assets.aggregates import minute_aggregates
    from assets.billing import billing_daily
    from assets.drift import drift_report
    from assets.first_seen import first_seen_index
    from assets.raw import campaign_catalog, hot_minute_aggregates, raw_clicks

    return [
        raw_clicks,
        hot_minute_aggregates,
        campaign_catalog,
        first_seen_index,
        minute_aggregates,
        drift_report,
        billing_daily,
    ]


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    from assets.automation import (
        bill_closed_days,
        billing_job,
        late_input_sensor,
        reconcile_closed_hours,
        reconcile_job,
    )
    from assets.raw import hot_table_fresh
    from assets.retention import retention_daily, retention_job

    assets = batch_assets()
    res = build_resources() if resources is None else dict(resources)
    try:
        from assets.dbt import dbt_assets_and_resources

        dbt_assets, dbt_resources = dbt_assets_and_resources()
        assets += list(dbt_assets)
        res.update(dbt_resources)
    except ImportError:
        pass
    return dg.Definitions(
        assets=assets,
        asset_checks=[hot_table_fresh],
        jobs=[reconcile_job, billing_job, retention_job],
        schedules=[reconcile_closed_hours, bill_closed_days, retention_daily],
        sensors=[late_input_sensor],
        resources=res,
        # one process per run: steps of a run share the Spark session (no JVM per step)
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
