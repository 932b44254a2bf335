"""CLICKAGG_SPARK_CONF: key=value settings for the Spark session, bad input refused clearly."""

from __future__ import annotations

import pytest

from resources.spark import parse_conf


def test_pairs_split_on_spaces_and_commas():
    text = "spark.executor.memory=4g, spark.sql.shuffle.partitions=200\n spark.a.b=x=y"
    assert parse_conf(text) == (
        ("spark.executor.memory", "4g"),
        ("spark.sql.shuffle.partitions", "200"),
        ("spark.a.b", "x=y"),
    )
    assert parse_conf("") == ()


@pytest.mark.parametrize("bad", ["spark.executor.memory", "=4g", "spark.x="])
def test_not_key_value_is_an_error(bad):
    with pytest.raises(ValueError, match="is not key=value"):
        parse_conf(f"spark.ok=1 {bad}")
