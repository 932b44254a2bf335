"""The hot table DDL and the hot totals query also run on current ClickHouse (chdb), with the
same answers: latest version per (key, source, partition), summed; fraud rows subtract."""

from __future__ import annotations

import pytest

from clickagg_platform.clickhouse import load_migrations
from clickagg_platform.hot_queries import hot_totals_sql

chdb = pytest.importorskip("chdb")

ROWS = [
    # window_start, campaign, ad, source, partition, clicks, version
    ("2024-01-01 12:00:00", "c1", "a1", 0, 0, 5, 10),
    ("2024-01-01 12:00:00", "c1", "a1", 0, 0, 7, 12),  # newer version replaces 5
    ("2024-01-01 12:00:00", "c1", "a1", 0, 0, 5, 10),  # replay of an old row: ignored
    ("2024-01-01 12:00:00", "c1", "a1", 0, 1, 3, 4),  # another partition adds
    ("2024-01-01 12:00:00", "c1", "a1", 1, 0, -2, 9),  # fraud correction subtracts
    ("2024-01-01 12:01:00", "c2", "a1", 0, 0, 1, 1),
    ("2024-01-01 12:01:00", "c3", "a9", 0, 2, 2, 1),
    ("2024-01-01 12:01:00", "c3", "a9", 1, 2, -2, 3),  # all fraud: no row in the totals
]


def test_hot_ddl_and_queries_on_current_clickhouse():
    from chdb import session

    sess = session.Session()
    try:
        sess.query("CREATE DATABASE IF NOT EXISTS hotdb")
        for mig in load_migrations("hotdb"):
            for stmt in mig.statements:
                sess.query(stmt)
        values = ",".join(f"('{w}','{c}','{a}',{s},{p},{n},{v})" for w, c, a, s, p, n, v in ROWS)
        sess.query(
            "INSERT INTO hotdb.hot_clicks (window_start, campaign_id, ad_id, source, "
            f"source_partition, clicks, version) VALUES {values}"
        )
        sql = (
            hot_totals_sql("hotdb", with_range=True)
            .replace("%(start)s", "toDateTime('2024-01-01 00:00:00', 'UTC')")
            .replace("%(end)s", "toDateTime('2024-01-02 00:00:00', 'UTC')")
        )
        got = sess.query(sql, "CSV").bytes().decode().strip().splitlines()
        assert got == [
            '"2024-01-01 12:00:00","c1","a1",8',
            '"2024-01-01 12:01:00","c2","a1",1',
        ]
        sql_c = hot_totals_sql("hotdb", with_range=False, with_campaign=True)
        got_c = sess.query(sql_c.replace("%(campaign_id)s", "'c2'"), "CSV").bytes().decode()
        assert got_c.strip() == '"2024-01-01 12:01:00","c2","a1",1'
        view = sess.query(
            "SELECT campaign_id, clicks FROM hotdb.hot_totals ORDER BY campaign_id", "CSV"
        )
        assert view.bytes().decode().split() == ['"c1",8', '"c2",1', '"c3",0']
    finally:
        sess.close()
