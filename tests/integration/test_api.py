"""The query API against real ClickHouse: hand-made hot, batch and billing rows, and answers
checked against numbers worked out here by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from clickagg_platform import clickhouse
from clickagg_platform.api.app import create_app
from clickagg_platform.api.keys import KeyStore
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

H0 = datetime(2026, 11, 20, 10, 0)  # naive = UTC, as ClickHouse takes it
M = timedelta(minutes=1)


@pytest.fixture
def seeded(settings, ch_database):
    db = ch_database
    c = clickhouse.client(settings)
    try:
        c.execute(
            f"INSERT INTO {db}.campaigns (advertiser_id, campaign_id, cpc_micros, name) VALUES",
            [
                ("adv1", "c1", 250_000, "Shoes"),
                ("adv1", "c2", 100_000, "Hats"),
                ("adv2", "c3", 50_000, "Rival"),
            ],
        )
        hot = [  # window_start, campaign, ad, source, source_partition, clicks, version
            (H0, "c1", "a1", 0, 0, 3, 10),
            (H0, "c1", "a1", 0, 0, 5, 12),  # latest: 5
            (H0, "c1", "a1", 0, 1, 2, 7),  # another source partition: +2
            (H0, "c1", "a1", 1, 1, -1, 9),  # a fraud correction: -1   => minute total 6
            (H0 + M, "c1", "a2", 0, 0, 4, 20),  # => 4
            (H0 + 60 * M, "c1", "a1", 0, 2, 7, 30),
            (H0 + 61 * M, "c1", "a1", 0, 2, 1, 31),
            (H0, "c3", "a9", 0, 0, 100, 1),  # another advertiser's campaign
        ]
        c.execute(
            f"INSERT INTO {db}.hot_clicks (window_start, campaign_id, ad_id, source, "
            "source_partition, clicks, version) VALUES",
            hot,
        )
        now = datetime(2026, 11, 21)
        c.execute(
            f"INSERT INTO {db}.minute_aggregates_batch (hour, window_start, advertiser_id, "
            "campaign_id, ad_id, clicks, fraud_clicks, stream_too_late, reconciled_at, "
            "run_id) VALUES",
            [
                (H0, H0, "adv1", "c1", "a1", 5, 1, 0, now, "r1"),
                (H0, H0 + M, "adv1", "c1", "a2", 4, 0, 0, now, "r1"),
            ],
        )
        c.execute(
            f"INSERT INTO {db}.drift_hours (hour, hot_total, batch_total, stream_too_late, "
            "unexplained_abs, unexplained_rel, keys, keys_missing_in_hot, "
            "keys_missing_in_batch, keys_differing, passed, computed_at, run_id) VALUES",
            [(H0, 10, 9, 0, 1, 1 / 9, 2, 0, 0, 1, 0, now, "r1")],
        )
        c.execute(
            f"INSERT INTO {db}.drift_report (hour, window_start, campaign_id, ad_id, "
            "hot_clicks, batch_clicks, stream_too_late, drift, rel_drift, unexplained, "
            "status, computed_at, run_id) VALUES",
            [
                (H0, H0, "c1", "a1", 6, 5, 0, 1, 0.2, 1, "differs", now, "r1"),
                (H0, H0 + M, "c1", "a2", 4, 4, 0, 0, 0.0, 0, "ok", now, "r1"),
            ],
        )
        c.execute(
            f"INSERT INTO {db}.billing_daily (day, advertiser_id, campaign_id, "
            "billable_clicks, cpc_micros, spend_micros, in_catalog, billed_at, version) "
            "VALUES",
            [
                (date(2026, 11, 20), "adv1", "c1", 9, 250_000, 2_250_000, 1, now, 1),
                (date(2026, 11, 20), "adv2", "c3", 1, 50_000, 50_000, 1, now, 1),
            ],
        )
        c.execute(
            f"INSERT INTO {db}.billing_adjustments (billed_day, advertiser_id, "
            "campaign_id, delta_clicks, delta_spend_micros, invoice_day, detected_at, "
            "version) VALUES",
            [(date(2026, 11, 20), "adv1", "c1", 2, 500_000, date(2026, 11, 22), now, 2)],
        )
    finally:
        c.disconnect()
    keys = KeyStore(lambda: clickhouse.client(settings), db)
    key1, key1_id = keys.create("adv1")
    key2, _ = keys.create("adv2")
    client = TestClient(create_app(settings))
    return client, keys, {"adv1": key1, "adv1_id": key1_id, "adv2": key2}


def _get(client, key, path, **params):
    return client.get(path, params=params, headers={"Authorization": f"Bearer {key}"})


RANGE = {"from": "2026-11-20T10:00:00Z", "to": "2026-11-20T12:00:00Z"}


def test_fast_series_sums_the_latest_version_per_partition(seeded):
    client, _, k = seeded
    r = _get(
        client, k["adv1"], "/v1/campaigns/c1/clicks", granularity="hour", accuracy="fast", **RANGE
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(p["clicks"], p["source"]) for p in body["points"]] == [(10, "hot"), (8, "hot")]
    minutes = _get(
        client, k["adv1"], "/v1/campaigns/c1/clicks", granularity="minute", accuracy="fast", **RANGE
    ).json()
    assert len(minutes["points"]) == 120  # zero-filled
    assert [p["clicks"] for p in minutes["points"][:3]] == [6, 4, 0]
    one_ad = _get(
        client,
        k["adv1"],
        "/v1/campaigns/c1/clicks",
        granularity="hour",
        accuracy="fast",
        ad_id="a2",
        **RANGE,
    ).json()
    assert one_ad["total"] == 4


def test_exact_and_auto_label_every_point(seeded):
    client, _, k = seeded
    exact = _get(
        client, k["adv1"], "/v1/campaigns/c1/clicks", granularity="hour", accuracy="exact", **RANGE
    ).json()
    assert [(p["clicks"], p["source"]) for p in exact["points"]] == [
        (9, "reconciled"),
        (0, "reconciled"),
    ]
    auto = _get(
        client, k["adv1"], "/v1/campaigns/c1/clicks", granularity="hour", accuracy="auto", **RANGE
    ).json()
    # hour 10 is reconciled (exact 9), hour 11 is not (hot 8)
    assert [(p["clicks"], p["source"]) for p in auto["points"]] == [(9, "reconciled"), (8, "hot")]


def test_other_advertisers_campaign_is_the_same_404_as_a_missing_one(seeded):
    client, _, k = seeded
    theirs = _get(client, k["adv1"], "/v1/campaigns/c3/clicks", **RANGE)
    missing = _get(client, k["adv1"], "/v1/campaigns/nope/clicks", **RANGE)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert [c["campaign_id"] for c in _get(client, k["adv1"], "/v1/campaigns").json()] == [
        "c1",
        "c2",
    ]


def test_bad_keys_and_revocation(seeded):
    client, keys, k = seeded
    assert client.get("/v1/campaigns").status_code == 401
    assert _get(client, "ck_000000000000_" + "x" * 43, "/v1/campaigns").status_code == 401
    assert client.get("/v1/campaigns", headers={"X-API-Key": k["adv1"]}).status_code == 200
    keys.revoke(k["adv1_id"])
    wait_until(
        lambda: _get(client, k["adv1"], "/v1/campaigns").status_code == 401,
        15,
        "the revocation to take effect",
    )


def test_too_many_points_is_a_400(seeded):
    client, _, k = seeded
    r = _get(
        client,
        k["adv1"],
        "/v1/campaigns/c1/clicks",
        granularity="minute",
        **{"from": "2026-01-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
    )
    assert r.status_code == 400 and "at most" in r.json()["detail"]


def test_summary_and_drift(seeded):
    client, _, k = seeded
    s = _get(client, k["adv1"], "/v1/summary", accuracy="auto", **RANGE).json()
    assert s["total"] == 17 and s["sources"] == ["hot", "reconciled"]  # 9 exact + 8 hot
    assert s["top_ads"][0] == {"campaign_id": "c1", "ad_id": "a1", "clicks": 13}
    d = _get(client, k["adv1"], "/v1/campaigns/c1/drift", **RANGE).json()
    assert d["hours"] == [
        {
            "hour": "2026-11-20T10:00:00Z",
            "hot_clicks": 10,
            "batch_clicks": 9,
            "stream_too_late": 0,
            "drift": 1,
            "relative_drift": 1 / 9,
        }
    ]


def test_statement_has_lines_and_adjustments_never_mixing_advertisers(seeded):
    client, _, k = seeded
    st = _get(
        client, k["adv1"], "/v1/billing/statement", **{"from": "2026-11-20", "to": "2026-11-22"}
    ).json()
    assert [(x["campaign_id"], x["billable_clicks"]) for x in st["lines"]] == [("c1", 9)]
    assert [(x["billed_day"], x["delta_clicks"], x["invoice_day"]) for x in st["adjustments"]] == [
        ("2026-11-20", 2, "2026-11-22")
    ]
    assert st["total_spend_micros"] == 2_250_000 + 500_000
    only_first_day = _get(
        client, k["adv1"], "/v1/billing/statement", **{"from": "2026-11-20", "to": "2026-11-20"}
    ).json()
    assert only_first_day["adjustments"] == []  # issued on the 22nd's statement


def test_api_reads_with_a_read_only_user(seeded):
    client, _, _ = seeded
    api = client.app.state.api
    with pytest.raises(Exception, match="readonly|Readonly|read only"):
        api.reader.execute(f"INSERT INTO {api.db}.campaigns (campaign_id) VALUES ('x')")


def test_batch_gauges_for_alerting(seeded):
    client, _, _ = seeded
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["clickagg_last_reconciled_hour_seconds"] == H0.replace(tzinfo=UTC).timestamp()
    # the only drift row is older than 24 h: no recent drift to report (not a fake zero)
    assert "clickagg_drift_max_relative" not in text


def test_requests_are_counted_per_route_template_and_status(seeded):
    client, _, k = seeded
    from prometheus_client.parser import text_string_to_metric_families

    assert _get(client, k["adv1"], "/v1/campaigns/c1/clicks", **RANGE).status_code == 200
    assert _get(client, k["adv1"], "/v1/campaigns/nope/clicks", **RANGE).status_code == 404
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/dashboard").status_code == 200
    text = client.get("/metrics").text
    counts = {
        (s.labels["route"], s.labels["status"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "clickagg_api_requests_total"
    }
    route = "/v1/campaigns/{campaign_id}/clicks"
    assert counts[(route, "200")] == 1 and counts[(route, "404")] == 1
    assert counts[("unmatched", "404")] == 1
    assert counts[("/dashboard", "200")] == 1
    latencies = {
        s.labels["route"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "clickagg_api_request_seconds_count"
    }
    assert latencies[route] == 2


def test_reconciled_hours_agree_from_rows_and_from_partition_metadata(
    seeded, settings, ch_database
):
    """Short ranges read the reconciled hours from rows, long ones from system.parts: both must
    give the same hours, including one reconciled with no click at all (drift_hours only) and
    one whose drift report is not written yet (batch rows only)."""
    from clickagg_platform.api import queries as q
    from clickagg_platform.api.series import Granularity, make_range

    c = clickhouse.client(settings)
    try:
        c.execute(
            f"INSERT INTO {ch_database}.drift_hours (hour, hot_total, batch_total, "
            "stream_too_late, unexplained_abs, unexplained_rel, keys, keys_missing_in_hot, "
            "keys_missing_in_batch, keys_differing, passed, computed_at, run_id) VALUES",
            [(H0 + 2 * 60 * M, 0, 0, 0, 0, 0.0, 0, 0, 0, 0, 1, H0, "r2")],
        )
        c.execute(
            f"INSERT INTO {ch_database}.minute_aggregates_batch (hour, window_start, "
            "advertiser_id, campaign_id, ad_id, clicks, fraud_clicks, stream_too_late, "
            "reconciled_at, run_id) VALUES",
            [(H0 + 5 * 60 * M, H0 + 301 * M, "adv1", "c2", "b1", 2, 0, 0, H0, "r3")],
        )
    finally:
        c.disconnect()
    api = seeded[0].app.state.api
    want = {H0.replace(tzinfo=UTC) + timedelta(hours=h) for h in (0, 2, 5)}
    first = H0.replace(tzinfo=UTC) - timedelta(days=3)
    end = H0.replace(tzinfo=UTC) + timedelta(days=3)
    by_rows = q.reconciled_hours_statement(api.db, first, first + timedelta(hours=72))
    assert "system.parts" not in by_rows[0]
    by_parts = q.reconciled_hours_statement(api.db, first, end)
    assert "system.parts" in by_parts[0]
    got_parts = q.reconciled_hours_of(api.reader.execute(*by_parts), first, end)
    assert got_parts == want
    for lo, hi in [(H0 - timedelta(hours=30), H0 + timedelta(hours=30)), (H0, H0 + 3 * 60 * M)]:
        lo, hi = lo.replace(tzinfo=UTC), hi.replace(tzinfo=UTC)
        sql, params = q.reconciled_hours_statement(api.db, lo, hi)
        assert "system.parts" not in sql
        got = q.reconciled_hours_of(api.reader.execute(sql, params), lo, hi)
        assert got == {h for h in want if lo <= h < hi}
    # and through the API, over 6 days by hour (the metadata path): labels follow the hours
    rng = make_range(first, end, Granularity.hour)
    assert api.reconciled_hours(rng) == want
    auto = _get(
        seeded[0],
        seeded[2]["adv1"],
        "/v1/campaigns/c1/clicks",
        granularity="hour",
        accuracy="auto",
        **{"from": first.isoformat(), "to": end.isoformat()},
    ).json()
    reconciled = {p["t"] for p in auto["points"] if p["source"] == "reconciled"}
    assert reconciled == {h.strftime("%Y-%m-%dT%H:%M:%SZ") for h in want}
    assert sum(p["clicks"] for p in auto["points"]) == 9 + 8  # exact hour 10 + hot hour 11


def test_apikey_cli_creates_lists_and_revokes_keys_the_api_honours(settings, ch_database):
    from typer.testing import CliRunner

    from clickagg_platform.cli import app as cli
    from clickagg_platform.settings import get_settings

    runner = CliRunner()
    env = {"CLICKAGG_CLICKHOUSE_DATABASE": ch_database}
    get_settings.cache_clear()
    try:
        made = runner.invoke(cli, ["apikey", "create", "-a", "adv7", "--label", "ci"], env=env)
        assert made.exit_code == 0, made.output
        full = made.output.split()[0]
        key_id = full.split("_")[1]
        store = KeyStore(lambda: clickhouse.client(settings), ch_database)
        assert store.verify(full).advertiser_id == "adv7"
        listed = runner.invoke(cli, ["apikey", "list"], env=env)
        assert key_id in listed.output and "active" in listed.output
        assert runner.invoke(cli, ["apikey", "revoke", key_id], env=env).exit_code == 0
        assert KeyStore(lambda: clickhouse.client(settings), ch_database).verify(full) is None
        unknown = runner.invoke(cli, ["apikey", "revoke", "000000000000"], env=env)
        assert unknown.exit_code == 2 and "no key with id" in unknown.output
        bad = runner.invoke(cli, ["apikey", "create", "-a", "bad id!"], env=env)
        assert bad.exit_code == 2 and "advertiser_id must be" in bad.output
    finally:
        get_settings.cache_clear()
