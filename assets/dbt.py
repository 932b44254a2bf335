"""The dbt project (dbt_project/, dbt-duckdb over the lake) as Dagster assets in the same lineage
graph as the batch path: the lake sources map to the assets that write them, so `raw_clicks`,
`minute_aggregates`, `billing_daily` and `campaign_catalog` are upstream of the staging models.

The manifest is built ahead of time (`python -m assets.dbt`, i.e. `dbt parse`), never at import:
`dbt_assets_and_resources()` returns nothing when it is missing, except under `dagster dev` where
it is prepared on the fly. The marts read the whole lake, so they are unpartitioned and
materialise eagerly after any upstream partition is updated (missing upstream partitions do not
block them: a fresh deployment has many, and the marts are correct over what exists).
"""

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from clickagg_platform.settings import Settings, get_settings

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
MANIFEST_PATH = DBT_PROJECT_DIR / "target" / "manifest.json"
GROUP_NAME = "analytics"
log = logging.getLogger(__name__)

# dbt source (source_name, table) -> the Dagster asset that writes it. Adjustments are written by
# the billing_daily asset too; the catalog is the external asset `campaign_catalog` (assets/raw.py,
# imported by the CLI).
SOURCE_ASSET_KEYS: dict[tuple[str, str], dg.AssetKey] = {
    ("lake", "raw_clicks"): dg.AssetKey("raw_clicks"),
    ("lake", "minute_aggregates"): dg.AssetKey("minute_aggregates"),
    ("lake", "billing_daily"): dg.AssetKey("billing_daily"),
    ("lake", "billing_adjustments"): dg.AssetKey("billing_daily"),
    ("lake", "campaigns"): dg.AssetKey("campaign_catalog"),
}

# Eager, except that missing upstream partitions do not block: an unpartitioned mart downstream
# of hourly/daily assets would otherwise wait until every partition since the start exists.
DBT_AUTOMATION = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .with_label("eager_allow_missing_deps")
)


class ClickAggDbtTranslator(DagsterDbtTranslator):
    """Lake sources -> upstream batch assets; models in one group, eagerly automated."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            key = (dbt_resource_props["source_name"], dbt_resource_props["name"])
            if key in SOURCE_ASSET_KEYS:
                return SOURCE_ASSET_KEYS[key]
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_group_name(dbt_resource_props)
        return GROUP_NAME

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        if dbt_resource_props["resource_type"] in ("model", "seed", "snapshot"):
            return DBT_AUTOMATION
        return None


def dbt_executable() -> str:
    """The dbt next to this interpreter (a venv need not be activated), else the one on PATH."""
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else (shutil.which("dbt") or "dbt")


def dbt_vars(settings: Settings) -> dict[str, str]:
    """What dbt reads from the platform settings (lake root, topic, DuckDB file)."""
    return {
        "lake_url": settings.lake_root,
        "clicks_topic": settings.clicks_topic,
        "duckdb_path": str(settings.local_dir / "analytics.duckdb"),
    }


def prepare_manifest(target_path: Path | None = None) -> Path:
    """`dbt parse` into dbt_project/target (or `target_path`); returns the manifest's path.

    Parsing touches neither the lake nor the DuckDB file, so it needs no running service.
    """
    target = target_path or MANIFEST_PATH.parent
    cmd = [
        dbt_executable(),
        "parse",
        "--quiet",
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target),
    ]
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    env.setdefault("DBT_LOG_PATH", str(target))
    subprocess.run(cmd, check=True, env=env, cwd=DBT_PROJECT_DIR)
    return target / "manifest.json"


def dbt_assets_and_resources(
    settings: Settings | None = None, manifest_path: Path = MANIFEST_PATH
) -> tuple[list, dict]:
    """The dbt multi-asset and its `dbt` resource, or ([], {}) when no manifest was prepared.

    `settings` (default: the process settings, resolved at run time) decide the lake and the
    DuckDB file the run uses.
    """
    if os.getenv("DAGSTER_IS_DEV_CLI") and manifest_path == MANIFEST_PATH:
        prepare_manifest()
    if not manifest_path.exists():
        log.warning(
            "no dbt manifest at %s (run `python -m assets.dbt`): no dbt assets", manifest_path
        )
        return [], {}

    project = DbtProject(project_dir=DBT_PROJECT_DIR, target_path=manifest_path.parent)
    translator = ClickAggDbtTranslator(
        settings=DagsterDbtTranslatorSettings(enable_duplicate_source_asset_keys=True)
    )

    @dbt_assets(
        manifest=manifest_path,
        project=project,
        dagster_dbt_translator=translator,
        name="analytics_dbt_models",
        # DuckDB has one writer per file: give this pool a limit of 1 in dagster.yaml
        pool="analytics_duckdb",
    )
    def analytics_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        """Staging views and marts (clicks per minute, billing, invoices) built by dbt."""
        s = settings or get_settings()
        s.local_dir.mkdir(parents=True, exist_ok=True)
        args = ["build", "--vars", json.dumps(dbt_vars(s))]
        # run artifacts next to the platform's other local state, not in the source tree
        target = s.local_dir / "dbt-runs" / context.run.run_id
        yield from dbt.cli(args, context=context, target_path=target).stream()

    resource = DbtCliResource(
        project_dir=project, profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
    )
    return [analytics_dbt_models], {"dbt": resource}


if __name__ == "__main__":
    print(prepare_manifest())
