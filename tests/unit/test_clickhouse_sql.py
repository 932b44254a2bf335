"""Every migration must run on current ClickHouse too (chdb, in-process), not only on 18.16."""

from __future__ import annotations

import pytest

from clickagg_platform.clickhouse import load_migrations, split_statements


def test_split_statements_ignores_comments_and_blank_parts():
    sql = "-- a comment; with a semicolon\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nSELECT 1;\n"
    assert split_statements(sql) == ["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1"]


def test_migrations_are_numbered_uniquely_and_start_with_bookkeeping():
    migs = load_migrations("db")
    assert migs[0].name == "schema_migrations"
    assert [m.version for m in migs] == sorted({m.version for m in migs})


def test_all_migrations_run_on_current_clickhouse(tmp_path):
    from chdb import session

    sess = session.Session(str(tmp_path / "chdb"))
    try:
        sess.query("CREATE DATABASE IF NOT EXISTS clickagg_chdb")
        for mig in load_migrations("clickagg_chdb"):
            for stmt in mig.statements:
                sess.query(stmt)
            for stmt in mig.statements:  # idempotent: a second run changes nothing
                sess.query(stmt)
        tables = sess.query(
            "SELECT name FROM system.tables WHERE database = 'clickagg_chdb'", "CSV"
        ).data()
        assert "schema_migrations" in tables
    finally:
        sess.close()


@pytest.mark.integration
def test_migrations_apply_idempotently_on_the_local_server(settings, ch_database):
    from clickagg_platform import clickhouse

    assert clickhouse.migrate(settings, log=lambda _m: None) == []  # already applied by fixture
    c = clickhouse.client(settings)
    try:
        rows = c.execute(f"SELECT version FROM {ch_database}.schema_migrations ORDER BY version")
    finally:
        c.disconnect()
    assert [r[0] for r in rows] == [m.version for m in load_migrations(ch_database)]
