"""The first-seen index's pure parts: layout, pointer, staleness, retention, and the Spark
transform on generated records against a plain-Python statement of the rule."""

from __future__ import annotations

import random

import pytest

from clickagg_platform import first_seen as fs

H0 = 1_767_225_600_000  # 2026-01-01T00:00Z
HOUR = 3_600_000


def test_layout_and_hour_parsing():
    url = fs.pointer_url("file:///lake/", "clicks", H0 + 13 * HOUR)
    assert url == "file:///lake/index/first_seen/topic=clicks/dt=2026-01-01/hour=13/_CURRENT"
    v = fs.version_prefix("s3://b/p", "clicks", H0, "abc-1")
    assert v == "s3://b/p/index/first_seen/topic=clicks/dt=2026-01-01/hour=00/v=abc-1"
    assert fs.parse_hour(url) == H0 + 13 * HOUR
    assert fs.parse_hour(v + "/bucket=3/part-0.parquet") == H0
    assert fs.parse_hour("file:///lake/raw/topic=clicks/partition=0") is None


def test_pointer_round_trip_ignores_unknown_fields():
    p = fs.Pointer("v1", "sig", 12, 16, "2026-01-01T00:00:00+00:00", "run")
    assert fs.Pointer.loads(p.dumps()) == p
    assert (
        fs.Pointer.loads(
            b'{"version":"v","signature":"s","rows":0,"buckets":4,"built_at":"t","future":1}'
        ).rows
        == 0
    )


def test_stale_hours_missing_or_other_signature():
    hours = [H0, H0 + HOUR, H0 + 2 * HOUR]
    ptrs = {
        H0: fs.Pointer("v", "a", 1, 16, "t"),
        H0 + HOUR: fs.Pointer("v", "old", 1, 16, "t"),
        H0 + 2 * HOUR: None,
    }
    sigs = {H0: "a", H0 + HOUR: "new", H0 + 2 * HOUR: "x"}
    assert fs.stale_hours(hours, ptrs, sigs) == [H0 + HOUR, H0 + 2 * HOUR]


def test_expired_hours_keep_whole_hours_inside_the_window():
    hours = [H0 + i * HOUR for i in range(5)]
    now = H0 + 4 * HOUR + 30 * 60_000
    # keep 2 h: cutoff 02:30 -> hours 00 and 01 (ending by 02:00) go, 02 (ends 03:00) stays
    assert fs.expired_hours(hours, now, 2 * HOUR) == [H0, H0 + HOUR]
    assert fs.expired_hours(hours, now, 48 * HOUR) == []


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    from resources.spark import get_spark

    return get_spark()


def test_index_rows_equal_the_plain_rule(spark):
    import pyarrow as pa

    from clickagg_platform import lake

    rng = random.Random(3)
    ids = [f"{i:032x}" for i in range(300)]
    recs = []
    offsets = {p: 0 for p in range(3)}
    for _ in range(1500):
        eid = rng.choice(ids)
        p = int(eid, 16) % 3
        t = H0 + rng.randrange(-HOUR // 2, 2 * HOUR + HOUR // 2)
        recs.append((eid, p, offsets[p], t, None))
        offsets[p] += 1
        if rng.random() < 0.05:  # the same Kafka record archived twice
            recs.append((eid, p, offsets[p] - 1, t, None))
    recs.append((None, 0, offsets[0], H0, "bad json"))
    cols = {n: [None] * len(recs) for n in lake.RAW_SCHEMA.names}
    for i, (eid, p, o, t, err) in enumerate(recs):
        cols["event_id"][i], cols["kafka_partition"][i], cols["kafka_offset"][i] = eid, p, o
        cols["event_time"][i], cols["decode_error"][i] = t, err
    raw = spark.createDataFrame(pa.table(cols, schema=lake.RAW_SCHEMA))

    got = {
        (r.hour, r.event_id): (r.kafka_partition, r.kafka_offset, r.event_time, r.bucket)
        for r in fs.index_rows(raw, H0, H0 + 2 * HOUR, buckets=8).collect()
    }
    want: dict = {}
    for eid, p, o, t, err in recs:
        if err or not (H0 <= t < H0 + 2 * HOUR):
            continue
        key = (t // HOUR * HOUR, eid)
        if key not in want or (p, o) < want[key][:2]:
            want[key] = (p, o, t)
    assert {k: v[:3] for k, v in got.items()} == want
    assert len({v[3] for v in got.values()}) == 8  # spread over every bucket
    # one id always lands in one bucket, whichever hour
    by_id: dict = {}
    for (_h, eid), v in got.items():
        by_id.setdefault(eid, set()).add(v[3])
    assert all(len(b) == 1 for b in by_id.values())


def test_auto_buckets_grow_in_powers_of_two_with_the_hour():
    assert fs.auto_buckets(0) == 1
    assert fs.auto_buckets(2_000_000) == 1
    assert fs.auto_buckets(2_000_001) == 2
    assert fs.auto_buckets(30_000_000) == 16
    assert fs.auto_buckets(3.6e9) == fs.MAX_BUCKETS  # 1 M clicks/s: capped
