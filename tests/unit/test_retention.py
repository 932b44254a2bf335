from datetime import date

from clickagg_platform.retention import DEFAULT_POLICY, Drop, partition_day, plan_drops


def test_partition_day_reads_day_and_hour_partition_ids():
    assert partition_day("20261120") == date(2026, 11, 20)
    assert partition_day("20261120100000") == date(2026, 11, 20)
    assert partition_day("all") is None and partition_day("20261340") is None


def test_only_partitions_past_the_tables_retention_are_dropped():
    parts = [
        ("hot_clicks", "20261001"),
        ("hot_clicks", "20261023"),
        ("hot_clicks", "20261022"),
        ("billing_daily", "20200101"),
        ("drift_report", "20260801000000"),
        ("unknown_table", "20000101"),
    ]
    drops = plan_drops(
        parts, today=date(2026, 11, 27), policy={"hot_clicks": 35, "drift_report": 90}
    )
    assert drops == [
        Drop("drift_report", "20260801000000", date(2026, 8, 1)),
        Drop("hot_clicks", "20261001", date(2026, 10, 1)),
        Drop("hot_clicks", "20261022", date(2026, 10, 22)),
    ]


def test_money_tables_are_never_in_the_default_policy():
    assert not {"billing_daily", "billing_adjustments", "campaigns"} & set(DEFAULT_POLICY)
