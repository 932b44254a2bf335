"""The batch DDL (migration 003) and the batch's ClickHouse statements also run on current
ClickHouse (chdb, in-process): partition swap via REPLACE PARTITION ID, the drift and billing
reads. The same statements run against 18.16 in tests/integration/test_batch_assets.py."""

import pytest

from clickagg_platform.clickhouse import load_migrations

chdb = pytest.importorskip("chdb")


def q(sess, sql):
    return sess.query(sql, "CSV").data().strip()


def test_batch_ddl_partition_swap_and_reads_on_current_clickhouse():
    from chdb import session

    sess = session.Session()
    try:
        sess.query("CREATE DATABASE IF NOT EXISTS b")
        for mig in load_migrations("b"):
            for stmt in mig.statements:
                sess.query(stmt)
        cols = "hour, window_start, advertiser_id, campaign_id, ad_id, clicks, fraud_clicks, "
        cols += "stream_too_late, reconciled_at, run_id"
        sess.query(
            f"INSERT INTO b.minute_aggregates_batch ({cols}) VALUES "
            "('2026-01-01 05:00:00','2026-01-01 05:01:00','a','c1','x',5,0,1,now(),'r1'),"
            "('2026-01-01 06:00:00','2026-01-01 06:01:00','a','c1','x',3,0,0,now(),'r1')"
        )
        parts = q(
            sess,
            "SELECT DISTINCT partition_id FROM system.parts WHERE database='b' "
            "AND table='minute_aggregates_batch' AND active ORDER BY 1",
        )
        assert parts.replace('"', "").split() == ["20260101050000", "20260101060000"]
        # the resource's swap: stage copy, insert, REPLACE PARTITION ID, drop the stage
        sess.query("CREATE TABLE b.minute_aggregates_batch_stage_x AS b.minute_aggregates_batch")
        sess.query(
            f"INSERT INTO b.minute_aggregates_batch_stage_x ({cols}) VALUES "
            "('2026-01-01 05:00:00','2026-01-01 05:02:00','a','c1','x',7,0,0,now(),'r2')"
        )
        sess.query(
            "ALTER TABLE b.minute_aggregates_batch REPLACE PARTITION ID '20260101050000' "
            "FROM b.minute_aggregates_batch_stage_x"
        )
        # 06 has no new rows: dropped (REPLACE from an empty source is refused nowadays)
        sess.query("ALTER TABLE b.minute_aggregates_batch DROP PARTITION ID '20260101060000'")
        sess.query("ALTER TABLE b.minute_aggregates_batch DROP PARTITION ID '20990101060000'")
        sess.query("DROP TABLE IF EXISTS b.minute_aggregates_batch_stage_x")
        assert q(sess, "SELECT sum(clicks), count() FROM b.minute_aggregates_batch") == "7,1"
        # the drift asset's batch read
        got = q(
            sess,
            """SELECT window_start, campaign_id, ad_id, sum(clicks), sum(stream_too_late)
            FROM b.minute_aggregates_batch
            WHERE hour >= toDateTime('2026-01-01 05:00:00', 'UTC')
              AND hour < toDateTime('2026-01-01 06:00:00', 'UTC')
            GROUP BY window_start, campaign_id, ad_id""",
        )
        assert got == '"2026-01-01 05:02:00","c1","x",7,0'
        # billing's drift gate read
        sess.query(
            "INSERT INTO b.drift_hours (hour, hot_total, batch_total, stream_too_late, "
            "unexplained_abs, unexplained_rel, keys, keys_missing_in_hot, keys_missing_in_batch, "
            "keys_differing, passed, computed_at, run_id) VALUES "
            "('2026-01-01 05:00:00',7,7,0,0,0,1,0,0,0,1,now(),'r')"
        )
        assert q(
            sess,
            """SELECT hour, argMax(passed, computed_at), argMax(unexplained_abs,
            computed_at) FROM b.drift_hours WHERE hour >= toDateTime('2026-01-01 00:00:00')
            AND hour < toDateTime('2026-01-02 00:00:00') GROUP BY hour""",
        ).endswith("1,0")
        # the catalog swap
        sess.query("TRUNCATE TABLE IF EXISTS b.campaigns_staging")
        sess.query("INSERT INTO b.campaigns_staging VALUES ('a','c1',50000,'n')")
        sess.query(
            "RENAME TABLE b.campaigns TO b.campaigns_old, b.campaigns_staging TO b.campaigns"
        )
        sess.query("RENAME TABLE b.campaigns_old TO b.campaigns_staging")
        assert q(sess, "SELECT campaign_id, cpc_micros FROM b.campaigns") == '"c1",50000'
    finally:
        sess.close()
