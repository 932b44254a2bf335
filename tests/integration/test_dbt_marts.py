"""dbt marts over a tiny hand-made lake: exact contents computed by hand below, the data tests
and dbt unit tests pass, and an empty lake builds empty marts instead of crashing.

The lake (UTC, topic `clicks`):
  raw partition 0, block 0 archived twice: a partial file (offsets 0-2) superseded by the full
  one (0-4); offset 1 is a retry copy of e1, offset 3 is flagged bot_ua, offset 4 undecodable.
  raw partition 1: e4 (10:00:59.999), e5 (10:02), e6 (11:15, an hour not reconciled yet).
  batch minute aggregates of hour 10; billing of 2026-10-31 (v1 then re-billed v2), 11-26 and
  11-27; adjustments of 10-31 (lands on the November invoice), of 11-26 (twice the same row)
  and an adjustment-only (11-26, camp2).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.common import ADJUSTMENT_SCHEMA, BILLING_SCHEMA
from assets.common import MINUTE_AGG_SCHEMA as MINUTE_SCHEMA
from clickagg_platform.lake import RAW_SCHEMA

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DBT_DIR = ROOT / "dbt_project"
UTC = dt.UTC
MARTS = [
    "dim_campaign",
    "fct_billing_daily",
    "fct_advertiser_invoice_lines",
    "fct_advertiser_invoice",
    "fct_clicks_minute",
]


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)


def d(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


def _write(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _click(partition, offset, event_id, adv, camp, ad, at, fraud=None, decode_error=None):
    return {
        "event_id": event_id,
        "impression_id": event_id and f"imp-{event_id}",
        "advertiser_id": adv,
        "campaign_id": camp,
        "ad_id": ad,
        "publisher_id": event_id and "pub1",
        "event_time": at and ms(ts(at)),
        "received_at": at and ms(ts(at)) + 20,
        "ip_hash": "h",
        "user_agent": "Googlebot" if fraud else "Mozilla/5.0",
        "user_key": "u",
        "token_key_id": "k1",
        "schema_version": 1,
        "kafka_partition": partition,
        "kafka_offset": offset,
        "kafka_timestamp": ms(ts("2026-11-27T10:05:00")),
        "fraud_reason": fraud,
        "decode_error": decode_error,
        "raw_value": b"{}",
    }


CAMPAIGN_SCHEMA = pa.schema(
    [
        ("advertiser_id", pa.string()),
        ("campaign_id", pa.string()),
        ("cpc_micros", pa.int64()),
        ("name", pa.string()),
    ]
)


def _bill(day, adv, camp, clicks, cpc, version):
    return {
        "day": d(day),
        "advertiser_id": adv,
        "campaign_id": camp,
        "billable_clicks": clicks,
        "cpc_micros": cpc,
        "spend_micros": clicks * cpc,
        "billed_at": ts(day + "T23:59:59") + dt.timedelta(hours=2),
        "version": version,
    }


def _adjust(billed_day, adv, camp, clicks, spend, invoice_day, version):
    return {
        "billed_day": d(billed_day),
        "advertiser_id": adv,
        "campaign_id": camp,
        "delta_clicks": clicks,
        "delta_spend_micros": spend,
        "invoice_day": d(invoice_day),
        "detected_at": ts(invoice_day + "T01:00:00"),
        "version": version,
    }


def build_lake(lake: Path, topic: str = "clicks") -> None:
    """Write the known lake described in the module docstring under `lake`."""
    raw = lake / "raw" / f"topic={topic}"
    block0 = [
        _click(0, 0, "e1", "adv1", "camp1", "ad1", "2026-11-27T10:00:05"),
        _click(0, 1, "e1", "adv1", "camp1", "ad1", "2026-11-27T10:00:05"),
        _click(0, 2, "e2", "adv1", "camp1", "ad1", "2026-11-27T10:00:30"),
        _click(0, 3, "e3", "adv1", "camp1", "ad1", "2026-11-27T10:01:10", fraud="bot_ua"),
        _click(0, 4, None, None, None, None, None, decode_error="bad json"),
    ]
    p0 = raw / "partition=0"
    _write(p0 / "offsets=000000000000-000000000002.parquet", block0[:3], RAW_SCHEMA)
    _write(p0 / "offsets=000000000000-000000000004.parquet", block0, RAW_SCHEMA)
    _write(
        raw / "partition=1" / "offsets=000000000000-000000000002.parquet",
        [
            _click(1, 0, "e4", "adv1", "camp2", "ad2", "2026-11-27T10:00:59.999"),
            _click(1, 1, "e5", "adv2", "camp3", "ad3", "2026-11-27T10:02:00"),
            _click(1, 2, "e6", "adv2", "camp3", "ad3", "2026-11-27T11:15:00"),
        ],
        RAW_SCHEMA,
    )
    # an hour marker (not data) and an unfinished temp file: neither is a data file
    marker = raw.parent / "_hours" / f"topic={topic}" / "dt=2026-11-27" / "hour=10"
    marker.mkdir(parents=True)
    (marker / "partition=1-offsets=000000000000-000000000002").write_bytes(b"")
    (p0 / "offsets=000000000005-000000000005.parquet.tmp").write_bytes(b"garbage")

    _write(
        lake / "batch/minute_aggregates/dt=2026-11-27/hour=10/data.parquet",
        [
            {"window_start": ts("2026-11-27T10:00"), "advertiser_id": "adv1",
             "campaign_id": "camp1", "ad_id": "ad1", "clicks": 2},
            {"window_start": ts("2026-11-27T10:00"), "advertiser_id": "adv1",
             "campaign_id": "camp2", "ad_id": "ad2", "clicks": 1},
            {"window_start": ts("2026-11-27T10:02"), "advertiser_id": "adv2",
             "campaign_id": "camp3", "ad_id": "ad3", "clicks": 1},
        ],
        MINUTE_SCHEMA,
    )  # fmt: skip
    billing = lake / "batch/billing_daily"
    _write(
        billing / "day=2026-10-31/data.parquet",
        [_bill("2026-10-31", "adv1", "camp1", 9, 250_000, 1),
         _bill("2026-10-31", "adv1", "camp1", 10, 250_000, 2)],
        BILLING_SCHEMA,
    )  # fmt: skip
    _write(
        billing / "day=2026-11-26/data.parquet",
        [_bill("2026-11-26", "adv2", "camp3", 4, 500_000, 1)],
        BILLING_SCHEMA,
    )
    _write(
        billing / "day=2026-11-27/data.parquet",
        [_bill("2026-11-27", "adv1", "camp1", 3, 250_000, 1),
         _bill("2026-11-27", "adv1", "camp2", 1, 100_000, 1),
         _bill("2026-11-27", "adv2", "camp3", 1, 500_000, 1)],
        BILLING_SCHEMA,
    )  # fmt: skip
    adjustments = lake / "batch/billing_adjustments"
    _write(
        adjustments / "day=2026-10-31/data.parquet",
        [_adjust("2026-10-31", "adv1", "camp1", 2, 500_000, "2026-11-02", 2)],
        ADJUSTMENT_SCHEMA,
    )
    _write(
        adjustments / "day=2026-11-26/data.parquet",
        [_adjust("2026-11-26", "adv2", "camp3", 1, 500_000, "2026-11-27", 2),
         _adjust("2026-11-26", "adv2", "camp3", 1, 500_000, "2026-11-27", 2),
         _adjust("2026-11-26", "adv1", "camp2", 1, 100_000, "2026-11-27", 1)],
        ADJUSTMENT_SCHEMA,
    )  # fmt: skip
    _write(
        lake / "ref/campaigns/campaigns.parquet",
        [{"advertiser_id": "adv1", "campaign_id": "camp1", "cpc_micros": 250_000,
          "name": "Spring sale"},
         {"advertiser_id": "adv1", "campaign_id": "camp2", "cpc_micros": 100_000,
          "name": "Retargeting"},
         {"advertiser_id": "adv2", "campaign_id": "camp3", "cpc_micros": 500_000,
          "name": "Launch"}],
        CAMPAIGN_SCHEMA,
    )  # fmt: skip


@dataclass
class DbtRun:
    returncode: int
    output: str
    statuses: dict[str, str]  # "<resource_type>:<name>" -> status

    def of_type(self, resource_type: str) -> dict[str, str]:
        prefix = resource_type + ":"
        return {k[len(prefix) :]: v for k, v in self.statuses.items() if k.startswith(prefix)}


def _node_name(unique_id: str) -> str:
    # model.<project>.<name> | unit_test.<project>.<model>.<name> | test.<project>.<name>.<hash>
    kind, _, *rest = unique_id.split(".")
    return rest[0] if kind == "test" else rest[-1]


def run_dbt(work: Path, lake_url: str, *args: str) -> DbtRun:
    """dbt (default `build`) in a subprocess over `lake_url`, with its own DuckDB file, target
    and log dirs under `work`; statuses come from run_results.json."""
    from assets.dbt import DBT_PROJECT_DIR, dbt_executable

    target = work / "target"
    dbt_vars = {"lake_url": lake_url, "duckdb_path": str(work / "analytics.duckdb")}
    cmd = [
        dbt_executable(),
        *(args or ("build",)),
        "--project-dir", str(DBT_PROJECT_DIR),
        "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(target),
        "--log-path", str(work / "logs"),
        "--vars", json.dumps(dbt_vars),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKAGG_")}
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    results_file = target / "run_results.json"
    assert results_file.exists(), proc.stdout + proc.stderr
    statuses = {
        f"{r['unique_id'].split('.')[0]}:{_node_name(r['unique_id'])}": r["status"]
        for r in json.loads(results_file.read_text())["results"]
    }
    return DbtRun(proc.returncode, proc.stdout + proc.stderr, statuses)


def query(work: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(work / "analytics.duckdb"), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        return con.execute(sql).fetchall()
    finally:
        con.close()


UNIT_TESTS = {
    "test_stg_raw_clicks_drops_superseded_partial_file_copies",
    "test_stg_billing_daily_keeps_latest_version",
    "test_fct_billing_daily_adds_adjustments_of_the_day",
    "test_invoice_lines_adjustment_lands_on_invoice_day_period",
    "test_invoice_lines_daily_period",
    "test_invoice_totals_billed_plus_adjustments",
    "test_clicks_minute_counts_copies_and_fraud_next_to_batch",
}
INVARIANTS = {
    "fct_billing_daily_spend_is_clicks_times_cpc",
    "fct_billing_daily_adjusted_totals_add_up",
    "fct_advertiser_invoice_total_is_billed_plus_adjustments",
    "fct_advertiser_invoice_lines_billed_amount_is_clicks_times_cpc",
    "fct_clicks_minute_raw_records_are_clicks_plus_duplicates",
    "assert_invoice_totals_match_lines",
    "relationships_fct_billing_daily_campaign_id__campaign_id__ref_dim_campaign_",
}


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> tuple[Path, DbtRun]:
    """The known lake, built once with `dbt build` (models, data tests, unit tests)."""
    work = tmp_path_factory.mktemp("dbt_known")
    build_lake(work / "lake")
    run = run_dbt(work, f"file://{work / 'lake'}")
    assert run.returncode == 0, run.output
    return work, run


STAGING = {
    "stg_lake__raw_clicks",
    "stg_lake__minute_aggregates",
    "stg_lake__billing_daily",
    "stg_lake__billing_adjustments",
    "stg_lake__campaigns",
}


def test_build_runs_every_model_data_test_and_unit_test(known):
    _, run = known
    assert run.of_type("model") == dict.fromkeys(set(MARTS) | STAGING, "success")
    assert run.of_type("unit_test") == dict.fromkeys(UNIT_TESTS, "pass")
    data_tests = run.of_type("test")
    assert INVARIANTS <= set(data_tests), INVARIANTS - set(data_tests)
    assert len(data_tests) >= 70
    assert set(data_tests.values()) == {"pass"}


def test_staging_keeps_each_log_record_once(known):
    work, _ = known
    rows = query(
        work,
        "select kafka_partition, kafka_offset, event_id from stg_lake__raw_clicks order by 1, 2",
    )
    assert rows == [
        (0, 0, "e1"), (0, 1, "e1"), (0, 2, "e2"), (0, 3, "e3"), (0, 4, None),
        (1, 0, "e4"), (1, 1, "e5"), (1, 2, "e6"),
    ]  # fmt: skip


def test_fct_clicks_minute(known):
    work, _ = known
    rows = query(
        work,
        """select strftime(minute_start, '%H:%M'), campaign_id, ad_id, billable_clicks,
                  raw_records, raw_clicks, raw_duplicate_copies, raw_fraud_flagged, is_reconciled
           from fct_clicks_minute order by minute_start, campaign_id""",
    )
    assert rows == [
        ("10:00", "camp1", "ad1", 2, 3, 2, 1, 0, True),  # e1 twice (retry), e2
        ("10:00", "camp2", "ad2", 1, 1, 1, 0, 0, True),  # e4 at 10:00:59.999
        ("10:01", "camp1", "ad1", 0, 1, 1, 0, 1, True),  # e3 bot_ua: not billable
        ("10:02", "camp3", "ad3", 1, 1, 1, 0, 0, True),
        ("11:15", "camp3", "ad3", 0, 1, 1, 0, 0, False),  # hour 11 not reconciled yet
    ]


def test_fct_billing_daily(known):
    work, _ = known
    rows = query(
        work,
        """select strftime(billed_day, '%Y-%m-%d'), campaign_id, billable_clicks, cpc_micros,
                  spend_micros, billing_version, adjustment_count, adjustment_clicks,
                  adjustment_spend_micros, adjusted_clicks, adjusted_spend_micros
           from fct_billing_daily order by billed_day, campaign_id""",
    )
    assert rows == [
        ("2026-10-31", "camp1", 10, 250_000, 2_500_000, 2, 1, 2, 500_000, 12, 3_000_000),
        ("2026-11-26", "camp2", 0, 100_000, 0, None, 1, 1, 100_000, 1, 100_000),
        ("2026-11-26", "camp3", 4, 500_000, 2_000_000, 1, 1, 1, 500_000, 5, 2_500_000),
        ("2026-11-27", "camp1", 3, 250_000, 750_000, 1, 0, 0, 0, 3, 750_000),
        ("2026-11-27", "camp2", 1, 100_000, 100_000, 1, 0, 0, 0, 1, 100_000),
        ("2026-11-27", "camp3", 1, 500_000, 500_000, 1, 0, 0, 0, 1, 500_000),
    ]


def test_fct_advertiser_invoice(known):
    work, _ = known
    rows = query(
        work,
        """select advertiser_id, strftime(invoice_period_start, '%Y-%m-%d'),
                  strftime(invoice_period_end, '%Y-%m-%d'), billed_clicks, billed_micros,
                  adjustment_line_count, adjustment_clicks, adjustment_micros, total_clicks,
                  total_micros
           from fct_advertiser_invoice order by all""",
    )
    assert rows == [
        ("adv1", "2026-10-01", "2026-10-31", 10, 2_500_000, 0, 0, 0, 10, 2_500_000),
        # Nov 27 camp1 3 + camp2 1 billed; late Oct 31 clicks (2) and the adjustment-only
        # (Nov 26, camp2) land on November
        ("adv1", "2026-11-01", "2026-11-30", 4, 850_000, 2, 3, 600_000, 7, 1_450_000),
        # the adjustment row written twice counts once
        ("adv2", "2026-11-01", "2026-11-30", 5, 2_500_000, 1, 1, 500_000, 6, 3_000_000),
    ]


def test_fct_advertiser_invoice_lines(known):
    work, _ = known
    rows = query(
        work,
        """select invoice_id, line_type, campaign_id, strftime(service_day, '%Y-%m-%d'),
                  clicks, cpc_micros, amount_micros
           from fct_advertiser_invoice_lines order by all""",
    )
    assert rows == [
        ("adv1|2026-10-01", "billed", "camp1", "2026-10-31", 10, 250_000, 2_500_000),
        ("adv1|2026-11-01", "adjustment", "camp1", "2026-10-31", 2, None, 500_000),
        ("adv1|2026-11-01", "adjustment", "camp2", "2026-11-26", 1, None, 100_000),
        ("adv1|2026-11-01", "billed", "camp1", "2026-11-27", 3, 250_000, 750_000),
        ("adv1|2026-11-01", "billed", "camp2", "2026-11-27", 1, 100_000, 100_000),
        ("adv2|2026-11-01", "adjustment", "camp3", "2026-11-26", 1, None, 500_000),
        ("adv2|2026-11-01", "billed", "camp3", "2026-11-26", 4, 500_000, 2_000_000),
        ("adv2|2026-11-01", "billed", "camp3", "2026-11-27", 1, 500_000, 500_000),
    ]


def test_dim_campaign(known):
    work, _ = known
    rows = query(
        work,
        """select campaign_id, advertiser_id, campaign_name, cpc_micros,
                  strftime(first_billed_day, '%Y-%m-%d'), strftime(last_billed_day, '%Y-%m-%d')
           from dim_campaign order by campaign_id""",
    )
    assert rows == [
        ("camp1", "adv1", "Spring sale", 250_000, "2026-10-31", "2026-11-27"),
        ("camp2", "adv1", "Retargeting", 100_000, "2026-11-27", "2026-11-27"),
        ("camp3", "adv2", "Launch", 500_000, "2026-11-26", "2026-11-27"),
    ]


def test_money_columns_are_exact_integers(known):
    work, _ = known
    types = dict(
        query(
            work,
            """select table_name || '.' || column_name, data_type from information_schema.columns
               where column_name like '%micros' or column_name like '%clicks'""",
        )
    )
    assert types and set(types.values()) == {"BIGINT"}, types


def test_empty_lake_builds_empty_marts(tmp_path):
    run = run_dbt(tmp_path, f"file://{tmp_path / 'no-lake-yet'}")
    assert run.returncode == 0, run.output
    assert "no file matches" in run.output
    assert set(run.of_type("unit_test").values()) == {"pass"}
    assert set(run.of_type("test").values()) == {"pass"}
    for mart in MARTS:
        assert query(tmp_path, f"select count(*) from {mart}") == [(0,)], mart


def test_data_tests_catch_broken_invariants(tmp_path):
    """A billing row whose spend is not clicks x CPC, for a campaign missing from the catalog."""
    lake = tmp_path / "lake"
    build_lake(lake)
    _write(
        lake / "batch/billing_daily/day=2026-11-28/data.parquet",
        [{**_bill("2026-11-28", "adv9", "camp9", 3, 100_000, 1), "spend_micros": 1}],
        BILLING_SCHEMA,
    )
    run = run_dbt(tmp_path, f"file://{lake}")
    assert run.returncode != 0
    failed = {name for name, status in run.of_type("test").items() if status == "fail"}
    assert failed == {
        "fct_billing_daily_spend_is_clicks_times_cpc",
        "relationships_fct_billing_daily_campaign_id__campaign_id__ref_dim_campaign_",
        "fct_advertiser_invoice_lines_billed_amount_is_clicks_times_cpc",
        "relationships_fct_advertiser_invoice_lines_campaign_id__campaign_id__ref_dim_campaign_",
    }, failed
