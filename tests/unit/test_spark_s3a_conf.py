"""The pure pieces of reading an s3:// lake through Spark's S3A connector: the s3 -> s3a URL
mapping, the Spark settings (no credentials in them), the fetched-jars check."""

from __future__ import annotations

import pytest

from clickagg_platform.lake import s3a_url
from clickagg_platform.settings import Settings
from resources.spark import S3A_CREDENTIALS, SparkResource, s3a_conf, s3a_jars


def test_s3a_url_maps_bucket_and_key():
    assert s3a_url("s3://bkt/lake/raw/topic=clicks/partition=0/offsets=1-2.parquet") == (
        "s3a://bkt/lake/raw/topic=clicks/partition=0/offsets=1-2.parquet"
    )
    assert s3a_url("s3://bkt") == "s3a://bkt"


@pytest.mark.parametrize("url", ["file:///tmp/lake/x.parquet", "s3a://bkt/x", "s3:///x", "/x"])
def test_s3a_url_refuses_other_urls(url):
    with pytest.raises(ValueError):
        s3a_url(url)


def test_conf_for_aws_has_jars_pool_and_default_chain_only():
    conf = dict(s3a_conf(["/j/hadoop-aws-3.4.1.jar", "/j/s3-2.24.6.jar"]))
    assert conf["spark.jars"] == "/j/hadoop-aws-3.4.1.jar,/j/s3-2.24.6.jar"
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"] == S3A_CREDENTIALS
    assert int(conf["spark.hadoop.fs.s3a.connection.maximum"]) >= int(
        conf["spark.hadoop.fs.s3a.threads.max"]
    )
    # AWS itself: no endpoint override, virtual-host style, TLS as S3A defaults
    assert not [k for k in conf if k.endswith((".endpoint", "path.style.access", "ssl.enabled"))]
    assert not [k for k in conf if "key" in k.lower() or "secret" in k.lower()]


def test_conf_for_custom_endpoint_is_path_style():
    conf = dict(s3a_conf([], "http://127.0.0.1:9000", "eu-west-1"))
    assert "spark.jars" not in conf
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    https = dict(s3a_conf([], "https://minio.internal"))
    assert "spark.hadoop.fs.s3a.connection.ssl.enabled" not in https


def test_connect_conf_is_session_settings_without_jars():
    conf = dict(s3a_conf(["/j/a.jar"], "http://h:1", prefix=""))
    assert "spark.jars" not in conf  # static: the Connect server gets them at start
    assert conf["fs.s3a.endpoint"] == "http://h:1"
    assert all(k.startswith("fs.s3a.") for k in conf)


def test_jars_must_be_fetched(tmp_path):
    (tmp_path / "hadoop-aws-3.4.1.jar").write_bytes(b"")
    with pytest.raises(RuntimeError, match="infra/spark.sh jars"):
        s3a_jars(tmp_path)  # no .complete marker: a fetch was interrupted or never ran
    (tmp_path / ".complete").touch()
    (tmp_path / "s3-2.24.6.jar").write_bytes(b"")
    assert s3a_jars(tmp_path) == [
        str(tmp_path / "hadoop-aws-3.4.1.jar"),
        str(tmp_path / "s3-2.24.6.jar"),
    ]


def test_switch_from_environment_unless_configured(monkeypatch, tmp_path):
    monkeypatch.delenv("CLICKAGG_SPARK_S3A", raising=False)
    assert not SparkResource().s3a_on
    monkeypatch.setenv("CLICKAGG_SPARK_S3A", "1")
    assert SparkResource().s3a_on
    assert not SparkResource(s3a=False).s3a_on
    monkeypatch.setenv("CLICKAGG_LOCAL_DIR", str(tmp_path))
    assert Settings().spark_jars_path == tmp_path / "spark" / "jars"
