"""Pure parts of the dbt <-> Dagster wiring: source -> upstream asset mapping, the run vars, and
no manifest means no dbt assets (nothing parses dbt at load time)."""

from pathlib import Path

import dagster as dg
import pytest

from assets.dbt import (
    DBT_AUTOMATION,
    ClickAggDbtTranslator,
    dbt_assets_and_resources,
    dbt_vars,
)
from clickagg_platform.settings import Settings


def _source(name: str) -> dict:
    return {
        "resource_type": "source",
        "source_name": "lake",
        "name": name,
        "fqn": ["clickagg", "staging", "lake", name],
        "meta": {},
        "config": {},
    }


def test_lake_sources_map_to_the_batch_assets_that_write_them():
    t = ClickAggDbtTranslator()
    assert t.get_asset_key(_source("raw_clicks")) == dg.AssetKey("raw_clicks")
    assert t.get_asset_key(_source("minute_aggregates")) == dg.AssetKey("minute_aggregates")
    assert t.get_asset_key(_source("billing_daily")) == dg.AssetKey("billing_daily")
    assert t.get_asset_key(_source("billing_adjustments")) == dg.AssetKey("billing_daily")
    assert t.get_asset_key(_source("campaigns")) == dg.AssetKey("campaign_catalog")


def test_models_are_grouped_and_automated_sources_are_not():
    t = ClickAggDbtTranslator()
    model = {"resource_type": "model", "name": "fct_billing_daily", "fqn": [], "config": {}}
    assert t.get_group_name(model) == "analytics"
    assert t.get_automation_condition(model) is DBT_AUTOMATION
    assert t.get_automation_condition(_source("raw_clicks")) is None


def _requested(condition: dg.AutomationCondition) -> list[int]:
    """Mart requests over 3 ticks: after the mart first exists, after one hour of an hourly
    upstream is materialised (all the other hours missing), and with nothing new."""
    hourly = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00")

    @dg.asset(partitions_def=hourly)
    def raw_clicks() -> None: ...

    @dg.asset(deps=[raw_clicks], automation_condition=condition)
    def mart() -> None: ...

    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([mart], instance=instance).success
    counts, cursor = [], None
    for tick in range(3):
        if tick == 1:
            dg.materialize([raw_clicks], instance=instance, partition_key="2026-11-01-05:00")
        result = dg.evaluate_automation_conditions(
            defs=[raw_clicks, mart], instance=instance, cursor=cursor
        )
        counts.append(result.get_num_requested(mart.key))
        cursor = result.cursor
    return counts


@pytest.mark.filterwarnings("ignore::dagster.BetaWarning")
def test_marts_follow_an_upstream_update_although_other_partitions_are_missing():
    assert _requested(DBT_AUTOMATION) == [0, 1, 0]
    assert _requested(dg.AutomationCondition.eager()) == [0, 0, 0]  # why not plain eager()


def test_dbt_vars_follow_the_settings(tmp_path):
    s = Settings(local_dir=tmp_path, lake_url="s3://bucket/lake", clicks_topic="clicks_x")
    assert dbt_vars(s) == {
        "lake_url": "s3://bucket/lake",
        "clicks_topic": "clicks_x",
        "duckdb_path": str(tmp_path / "analytics.duckdb"),
    }
    local = Settings(local_dir=tmp_path)
    assert dbt_vars(local)["lake_url"] == f"file://{tmp_path / 'lake'}"


def test_no_manifest_means_no_dbt_assets(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_IS_DEV_CLI", raising=False)
    assert dbt_assets_and_resources(manifest_path=Path(tmp_path / "manifest.json")) == ([], {})
