"""The campaign catalog (advertiser, campaign, CPC) that prices billable clicks.

Imported from the load generator's manifest (`manifest["catalog"]`) or a CSV with columns
advertiser_id, campaign_id, cpc_micros[, name]; written to the lake
(`{lake}/ref/campaigns/campaigns.parquet`, read by billing and dbt) and to ClickHouse
(`{db}.campaigns`, replaced as a whole). Bad input is rejected before anything is written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clickagg_platform import lake
from clickagg_platform.billing import CatalogEntry
from clickagg_platform.settings import Settings, get_settings

SCHEMA = pa.schema(
    [
        ("advertiser_id", pa.string()),
        ("campaign_id", pa.string()),
        ("cpc_micros", pa.int64()),
        ("name", pa.string()),
    ]
)


def catalog_url(root: str) -> str:
    return f"{root.rstrip('/')}/ref/campaigns/campaigns.parquet"


def from_manifest(manifest: dict) -> list[CatalogEntry]:
    out = []
    for adv in manifest["catalog"]["advertisers"]:
        for c in adv["campaigns"]:
            out.append(
                CatalogEntry(
                    adv["advertiser_id"], c["campaign_id"], int(c["cpc_micros"]), c.get("name", "")
                )
            )
    return validate(out)


def from_csv(path: Path) -> list[CatalogEntry]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"advertiser_id", "campaign_id", "cpc_micros"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        rows = []
        for i, r in enumerate(reader, start=2):
            try:
                cpc = int(r["cpc_micros"])
            except ValueError as exc:
                raise ValueError(
                    f"{path}:{i}: cpc_micros {r['cpc_micros']!r} is not an integer"
                ) from exc
            rows.append(
                CatalogEntry(r["advertiser_id"], r["campaign_id"], cpc, r.get("name") or "")
            )
    return validate(rows)


def load_file(path: str | Path) -> list[CatalogEntry]:
    p = Path(path)
    if p.suffix == ".json":
        return from_manifest(json.loads(p.read_text()))
    return from_csv(p)


def validate(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    seen: dict[str, CatalogEntry] = {}
    for e in entries:
        if not e.advertiser_id or not e.campaign_id:
            raise ValueError(f"empty advertiser or campaign id in {e}")
        if e.cpc_micros < 0:
            raise ValueError(f"negative cpc for campaign {e.campaign_id}")
        if e.campaign_id in seen and seen[e.campaign_id] != e:
            raise ValueError(f"campaign {e.campaign_id} listed twice with different values")
        seen[e.campaign_id] = e
    if not seen:
        raise ValueError("empty catalog")
    return sorted(seen.values(), key=lambda e: e.campaign_id)


def to_table(entries: list[CatalogEntry]) -> pa.Table:
    return pa.table(
        {
            "advertiser_id": [e.advertiser_id for e in entries],
            "campaign_id": [e.campaign_id for e in entries],
            "cpc_micros": [e.cpc_micros for e in entries],
            "name": [e.name for e in entries],
        },
        schema=SCHEMA,
    )


def write(entries: list[CatalogEntry], settings: Settings | None = None, client=None) -> None:
    """Lake file (atomic replace) then ClickHouse table (staged insert + table swap)."""
    from clickagg_platform import clickhouse

    s = settings or get_settings()
    lake.write_table(catalog_url(s.lake_root), to_table(entries), s)
    db = s.clickhouse_database
    c = client or clickhouse.client(s)
    try:
        c.execute(f"TRUNCATE TABLE IF EXISTS {db}.campaigns_staging")
        c.execute(
            f"INSERT INTO {db}.campaigns_staging "
            "(advertiser_id, campaign_id, cpc_micros, name) VALUES",
            [(e.advertiser_id, e.campaign_id, e.cpc_micros, e.name) for e in entries],
        )
        c.execute(
            f"RENAME TABLE {db}.campaigns TO {db}.campaigns_old, "
            f"{db}.campaigns_staging TO {db}.campaigns"
        )
        c.execute(f"RENAME TABLE {db}.campaigns_old TO {db}.campaigns_staging")
    finally:
        if client is None:
            c.disconnect()


def read(settings: Settings | None = None) -> dict[str, CatalogEntry]:
    """The catalog from the lake, by campaign_id ({} if none was imported yet)."""
    s = settings or get_settings()
    fs, path = lake.filesystem(catalog_url(s.lake_root), s)
    try:
        t = pq.read_table(path, filesystem=fs)
    except (FileNotFoundError, OSError):
        return {}
    return {
        r["campaign_id"]: CatalogEntry(
            r["advertiser_id"], r["campaign_id"], r["cpc_micros"], r["name"] or ""
        )
        for r in t.to_pylist()
    }
