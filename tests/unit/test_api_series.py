from datetime import UTC, datetime, timedelta

import pytest

from clickagg_platform.api.series import (
    Granularity,
    RangeError,
    make_range,
    merge_auto,
    zero_fill,
)

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def test_range_aligns_outward_and_counts_buckets():
    rng = make_range(
        T0 + timedelta(seconds=30), T0 + timedelta(minutes=3, seconds=1), Granularity.minute
    )
    assert rng.start == T0 and rng.end == T0 + timedelta(minutes=4)
    assert len(rng.buckets) == 4


def test_naive_datetimes_are_utc():
    rng = make_range(datetime(2026, 11, 27, 10), datetime(2026, 11, 27, 12), Granularity.hour)
    assert rng.start == T0 and len(rng.buckets) == 2


def test_too_many_points_is_a_clear_error():
    with pytest.raises(RangeError, match="at most 10000"):
        make_range(T0, T0 + timedelta(days=8), Granularity.minute)
    make_range(T0, T0 + timedelta(days=6), Granularity.minute)  # 8640 points: fine


def test_empty_or_reversed_range_is_refused():
    with pytest.raises(RangeError):
        make_range(T0, T0, Granularity.hour)


def test_zero_fill_keeps_every_bucket():
    rng = make_range(T0, T0 + timedelta(minutes=3), Granularity.minute)
    pts = zero_fill(rng, {T0 + timedelta(minutes=1): 5}, "hot")
    assert [(p.clicks, p.source) for p in pts] == [(0, "hot"), (5, "hot"), (0, "hot")]


def test_auto_takes_exact_only_for_reconciled_hours():
    rng = make_range(T0, T0 + timedelta(hours=2), Granularity.hour)
    hot = {T0: 10, T0 + timedelta(hours=1): 20}
    exact = {T0: 9}
    pts = merge_auto(rng, hot, exact, [T0])
    assert [(p.clicks, p.source) for p in pts] == [(9, "reconciled"), (20, "hot")]


def test_auto_day_bucket_needs_all_24_hours():
    day = datetime(2026, 11, 27, tzinfo=UTC)
    rng = make_range(day, day + timedelta(days=1), Granularity.day)
    hours = [day + timedelta(hours=h) for h in range(23)]
    assert merge_auto(rng, {day: 5}, {day: 4}, hours)[0].source == "hot"
    hours.append(day + timedelta(hours=23))
    assert merge_auto(rng, {day: 5}, {day: 4}, hours)[0].clicks == 4


def test_ttl_cache_loads_once_per_ttl_and_forgets_on_demand():
    from clickagg_platform.api.cache import TtlCache

    loads = []

    def load(key):
        loads.append(key)
        return None if key == "missing" else key.upper()

    cache = TtlCache(ttl_s=3600, max_entries=2)
    assert [cache.get("a", load), cache.get("a", load), cache.get("missing", load)] == [
        "A",
        "A",
        None,
    ]
    assert cache.get("missing", load) is None  # a miss is cached too
    assert loads == ["a", "missing"]
    cache.forget("a")
    assert cache.get("a", load) == "A" and loads[-1] == "a"
    cache.get("b", load)  # past max_entries: cleared, then b kept
    assert cache.get("b", load) == "B" and loads[-2:] == ["a", "b"]
    assert TtlCache(ttl_s=0).get("x", load) == "X" and loads[-1] == "x"
