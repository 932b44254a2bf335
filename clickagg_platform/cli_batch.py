"""Batch-path CLI commands as plain typer-compatible functions (registered by `cli.py`):

clickagg campaigns import PATH   -> campaigns_import
clickagg batch reconcile HOUR    -> reconcile_hour  (one hour through Dagster, in-process)
"""

from __future__ import annotations

from pathlib import Path

import typer


def campaigns_import(
    path: Path = typer.Argument(  # noqa: B008 - typer's declaration style
        ..., help="Load manifest (.json) or CSV: advertiser_id, campaign_id, cpc_micros[, name]"
    ),
) -> None:
    """Import the campaign catalog (CPCs) into the lake and ClickHouse; all or nothing."""
    from clickagg_platform import catalog
    from clickagg_platform.settings import get_settings

    try:
        entries = catalog.load_file(path)
    except (OSError, ValueError, KeyError) as err:
        typer.secho(f"error: {path}: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from err
    s = get_settings()
    catalog.write(entries, s)
    advertisers = len({e.advertiser_id for e in entries})
    typer.echo(
        f"imported {len(entries)} campaigns of {advertisers} advertisers -> "
        f"{catalog.catalog_url(s.lake_root)} and {s.clickhouse_database}.campaigns"
    )


def reconcile_hour(
    partition: str = typer.Argument(..., help="Hour partition key, e.g. 2026-01-01-05:00"),
) -> None:
    """Materialise raw_clicks, minute_aggregates and drift_report for one hour (in-process)."""
    import dagster as dg

    from assets.definitions import batch_assets, build_resources

    result = dg.materialize(
        batch_assets(),
        selection=["raw_clicks", "minute_aggregates", "drift_report"],
        resources=build_resources(),
        partition_key=partition,
        raise_on_error=False,
    )
    for ev in result.get_asset_check_evaluations():
        typer.echo(f"{ev.check_name}: {'passed' if ev.passed else 'FAILED'}")
    raise typer.Exit(0 if result.success else 1)
