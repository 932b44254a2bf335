from datetime import UTC, date, datetime

import pytest

from clickagg_platform import clickhouse
from clickagg_platform.retention import apply_retention

pytestmark = pytest.mark.integration


def test_old_hot_partitions_are_dropped_and_recent_ones_kept(settings, ch_database):
    today = date(2026, 11, 27)
    old, recent = datetime(2026, 10, 1, 12), datetime(2026, 11, 26, 12)
    c = clickhouse.client(settings)
    try:
        c.execute(
            f"INSERT INTO {ch_database}.hot_clicks (window_start, campaign_id, ad_id, "
            "source, source_partition, clicks, version) VALUES",
            [(old, "c", "a", 0, 0, 5, 1), (recent, "c", "a", 0, 0, 7, 1)],
        )
        planned = apply_retention(c, ch_database, today, {"hot_clicks": 35}, dry_run=True)
        assert [(d.table, d.day) for d in planned] == [("hot_clicks", date(2026, 10, 1))]
        assert c.execute(f"SELECT count() FROM {ch_database}.hot_clicks")[0][0] == 2
        dropped = apply_retention(c, ch_database, today, {"hot_clicks": 35})
        assert dropped == planned
        rows = c.execute(f"SELECT window_start, clicks FROM {ch_database}.hot_clicks")
        assert rows == [(recent.replace(tzinfo=UTC), 7)]
        assert apply_retention(c, ch_database, today, {"hot_clicks": 35}) == []  # idempotent
    finally:
        c.disconnect()


def test_retention_job_runs_in_dagster(settings, ch_database):
    from assets.retention import retention_job
    from resources.clickhouse import ClickHouseResource

    c = clickhouse.client(settings)
    try:
        c.execute(
            f"INSERT INTO {ch_database}.hot_clicks (window_start, campaign_id, ad_id, "
            "source, source_partition, clicks, version) VALUES",
            [(datetime(2020, 1, 1), "c", "a", 0, 0, 1, 1)],
        )
    finally:
        c.disconnect()
    res = retention_job.execute_in_process(
        resources={"clickhouse": ClickHouseResource.from_settings(settings)},
        run_config={"ops": {"drop_expired_partitions": {"config": {"dry_run": False}}}},
    )
    assert res.success
    assert res.output_for_node("drop_expired_partitions") == ["hot_clicks:20200101"]
