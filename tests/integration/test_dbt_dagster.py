"""The dbt project as Dagster assets: a manifest prepared ahead of time (as `make dbt-prepare`
does), the models in the batch path's lineage graph, and a Dagster run that builds the marts
over a known lake with every dbt test reported as a passing asset check."""

from pathlib import Path

import dagster as dg
import pytest

from assets.dbt import dbt_assets_and_resources, prepare_manifest
from clickagg_platform.settings import Settings
from tests.integration.test_dbt_marts import MARTS, STAGING, build_lake, query

pytestmark = pytest.mark.integration

UPSTREAM = {
    "stg_lake__raw_clicks": {"raw_clicks"},
    "stg_lake__minute_aggregates": {"minute_aggregates"},
    "stg_lake__billing_daily": {"billing_daily"},
    "stg_lake__billing_adjustments": {"billing_daily"},
    "stg_lake__campaigns": {"campaign_catalog"},
    "fct_clicks_minute": {"stg_lake__raw_clicks", "stg_lake__minute_aggregates"},
    "fct_billing_daily": {
        "stg_lake__billing_daily",
        "stg_lake__billing_adjustments",
        "stg_lake__campaigns",
    },
    "fct_advertiser_invoice_lines": {"stg_lake__billing_daily", "stg_lake__billing_adjustments"},
    "fct_advertiser_invoice": {"fct_advertiser_invoice_lines"},
    "dim_campaign": {"stg_lake__campaigns", "stg_lake__billing_daily"},
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path = prepare_manifest(tmp_path_factory.mktemp("dbt_target"))
    assert path.exists()
    return path


def test_dbt_assets_join_the_batch_lineage(manifest):
    assets, resources = dbt_assets_and_resources(manifest_path=manifest)
    assert set(resources) == {"dbt"}
    (dbt_models,) = assets
    keys = {k.to_user_string() for k in dbt_models.keys}
    assert keys == set(MARTS) | STAGING
    deps = {
        k.to_user_string(): {d.to_user_string() for d in dbt_models.asset_deps[k]}
        for k in dbt_models.keys
    }
    assert deps == UPSTREAM
    assert {dbt_models.group_names_by_key[k] for k in dbt_models.keys} == {"analytics"}

    checks = {(c.asset_key.to_user_string(), c.name) for c in dbt_models.check_specs}
    assert ("fct_billing_daily", "fct_billing_daily_spend_is_clicks_times_cpc") in checks
    defs = dg.Definitions(assets=assets, resources=resources)
    graph = defs.resolve_asset_graph()
    external = {k.to_user_string() for k in graph.get_all_asset_keys()} - keys
    assert external == {"raw_clicks", "minute_aggregates", "billing_daily", "campaign_catalog"}
    dg.Definitions.validate_loadable(defs)


def test_dagster_run_builds_the_marts(manifest, tmp_path):
    build_lake(tmp_path / "lake")
    settings = Settings(local_dir=tmp_path, lake_url=f"file://{tmp_path / 'lake'}")
    assets, resources = dbt_assets_and_resources(settings, manifest_path=manifest)
    result = dg.materialize(assets, resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == set(MARTS) | STAGING
    assert list((tmp_path / "dbt-runs").glob("*/run_results.json"))  # artifacts out of the repo
    checks = result.get_asset_check_evaluations()
    assert len(checks) >= 70
    assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    assert query(
        tmp_path,
        "select advertiser_id, total_micros from fct_advertiser_invoice"
        " order by advertiser_id, invoice_period_start",
    ) == [("adv1", 2_500_000), ("adv1", 1_450_000), ("adv2", 3_000_000)]


def test_platform_definitions_connect_dbt_to_the_batch_assets():
    """With the manifest prepared where `make dbt-prepare` puts it, the platform's definitions
    hold the dbt models downstream of the real (materialisable) batch assets."""
    prepare_manifest()
    build_definitions = pytest.importorskip("assets.definitions").build_definitions
    graph = build_definitions().resolve_asset_graph()
    for model, upstream in [
        ("stg_lake__raw_clicks", "raw_clicks"),
        ("stg_lake__minute_aggregates", "minute_aggregates"),
        ("stg_lake__billing_daily", "billing_daily"),
        ("stg_lake__billing_adjustments", "billing_daily"),
    ]:
        assert dg.AssetKey(upstream) in graph.get(dg.AssetKey(model)).parent_keys
        assert graph.get(dg.AssetKey(upstream)).is_materializable, upstream
    assert graph.get(dg.AssetKey("stg_lake__campaigns")).parent_keys == {
        dg.AssetKey("campaign_catalog")
    }
