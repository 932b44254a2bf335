"""`clickagg campaigns import PATH` (cli_batch.campaigns_import): manifest or CSV -> the lake
file and the ClickHouse table; bad input is rejected before anything is written."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import typer

from clickagg_platform import catalog as cat
from clickagg_platform import clickhouse as chm
from clickagg_platform.cli_batch import campaigns_import
from clickagg_platform.loadgen import LoadPlan, build_catalog

pytestmark = pytest.mark.integration


def test_import_manifest_then_csv_replaces_catalog(settings, ch_database, tmp_path, monkeypatch):
    monkeypatch.setenv("CLICKAGG_LAKE_URL", settings.lake_root)
    monkeypatch.setenv("CLICKAGG_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    from clickagg_platform.settings import get_settings

    get_settings.cache_clear()
    try:
        catalog = build_catalog(LoadPlan(seed=3))
        manifest = tmp_path / "manifest.json"
        manifest.write_text(json.dumps({"catalog": catalog.to_json()}))
        campaigns_import(manifest)
        want = {c.campaign_id: (c.advertiser_id, c.cpc_micros) for c in catalog.campaigns}
        lake_rows = pq.read_table(
            cat.catalog_url(settings.lake_root).removeprefix("file://")
        ).to_pylist()
        assert {r["campaign_id"]: (r["advertiser_id"], r["cpc_micros"]) for r in lake_rows} == want

        def ch_rows():
            c = chm.client(settings)
            try:
                return c.execute(
                    f"SELECT campaign_id, advertiser_id, cpc_micros FROM "
                    f"{settings.clickhouse_database}.campaigns"
                )
            finally:
                c.disconnect()

        assert {c: (a, p) for c, a, p in ch_rows()} == want

        bad = tmp_path / "bad.csv"
        bad.write_text("advertiser_id,campaign_id,cpc_micros\nadv1,c1,12x\n")
        with pytest.raises(typer.Exit):
            campaigns_import(bad)
        assert {c: (a, p) for c, a, p in ch_rows()} == want  # nothing half-applied

        good = tmp_path / "c.csv"
        good.write_text("advertiser_id,campaign_id,cpc_micros,name\nadv1,c1,50000,Spring\n")
        campaigns_import(good)
        assert ch_rows() == [("c1", "adv1", 50000)]
        assert cat.read(settings)["c1"].name == "Spring"
    finally:
        get_settings.cache_clear()
