"""The query API's statements (clickagg_platform/api/queries.py) also run on current ClickHouse
(chdb, in-process), with the same parameter escaping clickhouse-driver applies. The same
statements run against 18.16 in tests/integration/test_api.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest
from clickhouse_driver.util.escape import escape_param

from clickagg_platform.api import queries as q
from clickagg_platform.api.series import Granularity
from clickagg_platform.clickhouse import load_migrations

chdb = pytest.importorskip("chdb")

H0 = datetime(2026, 11, 20, 10, 0)
M = timedelta(minutes=1)
_CONTEXT = SimpleNamespace(server_info=SimpleNamespace(get_timezone=lambda: "UTC"))


def lit(value) -> str:
    return str(escape_param(value, _CONTEXT))


@pytest.fixture(scope="module")
def sess():
    from chdb import session

    s = session.Session()
    s.query("CREATE DATABASE IF NOT EXISTS api")
    for mig in load_migrations("api"):
        for stmt in mig.statements:
            s.query(stmt)
    inserts = {
        "campaigns (advertiser_id, campaign_id, cpc_micros, name)": [
            ("adv1", "c1", 250_000, "Shoes"),
            ("adv2", "c3", 50_000, "Rival"),
        ],
        "hot_clicks (window_start, campaign_id, ad_id, source, source_partition, clicks, "
        "version)": [
            (H0, "c1", "a1", 0, 0, 3, 10),
            (H0, "c1", "a1", 0, 0, 5, 12),
            (H0, "c1", "a1", 1, 1, -1, 9),
            (H0 + 60 * M, "c1", "a1", 0, 2, 7, 30),
        ],
        "minute_aggregates_batch (hour, window_start, advertiser_id, campaign_id, ad_id, "
        "clicks, fraud_clicks, stream_too_late, reconciled_at, run_id)": [
            (H0, H0, "adv1", "c1", "a1", 5, 1, 0, H0, "r1"),
        ],
        "drift_hours (hour, hot_total, batch_total, stream_too_late, unexplained_abs, "
        "unexplained_rel, keys, keys_missing_in_hot, keys_missing_in_batch, keys_differing, "
        "passed, computed_at, run_id)": [
            (H0, 4, 5, 0, 1, 0.2, 1, 0, 0, 1, 0, H0, "r1"),
            (H0 + 120 * M, 0, 0, 0, 0, 0.0, 0, 0, 0, 0, 1, H0, "r1"),
        ],
        "drift_report (hour, window_start, campaign_id, ad_id, hot_clicks, batch_clicks, "
        "stream_too_late, drift, rel_drift, unexplained, status, computed_at, run_id)": [
            (H0, H0, "c1", "a1", 4, 5, 0, -1, -0.2, 1, "differs", H0, "r1"),
        ],
        "billing_daily (day, advertiser_id, campaign_id, billable_clicks, cpc_micros, "
        "spend_micros, in_catalog, billed_at, version)": [
            (date(2026, 11, 20), "adv1", "c1", 5, 250_000, 1_250_000, 1, H0, 1),
        ],
        "billing_adjustments (billed_day, advertiser_id, campaign_id, delta_clicks, "
        "delta_spend_micros, invoice_day, detected_at, version)": [
            (date(2026, 11, 20), "adv1", "c1", 2, 500_000, date(2026, 11, 22), H0, 2),
        ],
    }
    for table, rows in inserts.items():
        values = ", ".join(f"({', '.join(lit(v) for v in r)})" for r in rows)
        s.query(f"INSERT INTO api.{table} VALUES {values}")
    yield s
    s.cleanup()


def run(sess, sql: str, params: dict | None = None) -> list[list[str]]:
    """Substitute like clickhouse-driver does, run, and return CSV cells."""
    escaped = {k: lit(v) for k, v in (params or {}).items()}
    text = sess.query(sql % escaped if params else sql, "CSV").data().strip()
    return [[c.strip('"') for c in line.split(",")] for line in text.splitlines() if line]


RANGE = {"campaign_id": "c1", "ad_id": None, "start": H0, "start_hour": H0, "end": H0 + 180 * M}


def test_series_statements(sess):
    hot = run(sess, q.hot_series_sql("api", Granularity.hour), RANGE)
    assert hot == [["2026-11-20 10:00:00", "4"], ["2026-11-20 11:00:00", "7"]]
    by_ad = run(
        sess,
        q.hot_series_sql("api", Granularity.minute, by_ad=True, ad=True),
        {**RANGE, "ad_id": "a1"},
    )
    assert by_ad == [["2026-11-20 10:00:00", "a1", "4"], ["2026-11-20 11:00:00", "a1", "7"]]
    exact = run(sess, q.exact_series_sql("api", Granularity.day), RANGE)
    assert exact == [["2026-11-20 00:00:00", "5"]]


def test_reconciled_hours_from_rows_and_from_metadata_agree(sess):
    first, end = H0.replace(tzinfo=UTC), (H0 + 180 * M).replace(tzinfo=UTC)
    want = {first, first + timedelta(hours=2)}
    sql, params = q.reconciled_hours_statement("api", first, end)
    assert "system.parts" not in sql
    assert q.reconciled_hours_of(_typed_hours(run(sess, sql, params)), first, end) == want
    long_first = first - timedelta(days=5)
    sql, params = q.reconciled_hours_statement("api", long_first, end)
    assert "system.parts" in sql
    ids = [(row[0],) for row in run(sess, sql, params)]
    assert q.reconciled_hours_of(ids, long_first, end) == want


def _typed_hours(rows: list[list[str]]) -> list[tuple[datetime]]:
    return [(datetime.fromisoformat(r[0]).replace(tzinfo=UTC),) for r in rows]


def test_advertiser_drift_billing_and_health_statements(sess):
    params = {"advertiser_id": "adv1", "start": H0, "start_hour": H0, "end": H0 + 180 * M}
    assert run(sess, q.advertiser_campaigns_sql("api"), params) == [["c1", "Shoes", "250000"]]
    assert run(sess, q.campaign_owner_sql("api"), {"campaign_id": "c3"}) == [["adv2"]]
    hot = run(sess, q.advertiser_totals_sql("api", "hot"), params)
    assert sorted(hot) == [
        ["2026-11-20 10:00:00", "c1", "a1", "4"],
        ["2026-11-20 11:00:00", "c1", "a1", "7"],
    ]
    batch = run(sess, q.advertiser_totals_sql("api", "batch"), params)
    assert batch == [["2026-11-20 10:00:00", "c1", "a1", "5"]]
    drift = run(sess, q.campaign_drift_sql("api"), {**params, "campaign_id": "c1"})
    assert drift == [["2026-11-20 10:00:00", "4", "5", "0"]]
    day = {"advertiser_id": "adv1", "start": date(2026, 11, 20), "end": date(2026, 11, 22)}
    assert run(sess, q.billing_sql("api"), day) == [
        ["2026-11-20", "c1", "5", "250000", "1250000", "1"]
    ]
    adj = run(sess, q.adjustments_sql("api"), day)
    assert [r[:5] for r in adj] == [["2026-11-20", "c1", "2", "500000", "2026-11-22"]]
    [[last, _drift, _recent]] = run(sess, q.batch_health_sql("api"))
    assert last == "2026-11-20 12:00:00"
