"""The reconcile transform on small frames (pyspark.testing.assertDataFrameEqual) and on seeded
traffic against an independent recount: duplicates across hours, bots, IP bursts, lateness."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from clickagg_platform import lake
from clickagg_platform.model import ClickEvent
from clickagg_platform.reconcile import ReconcileParams, duckdb_reconcile, horizon_hours, reconcile
from tests.batch_support import HOUR, MIN, place, reference_clicks
from tests.unit.stream_sim import expected_billable, make_events

pyspark = pytest.importorskip("pyspark")

H0 = 1_767_225_600_000  # 2026-01-01T00:00Z
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
BOT = "python-requests/2.31.0"


@pytest.fixture(scope="module")
def spark():
    from resources.spark import get_spark

    return get_spark()


def ev(eid: str, t: int, camp="c1", ad="a1", ip="10.0.0.1", ua=UA) -> ClickEvent:
    return ClickEvent(
        event_id=eid.ljust(32, "0"),
        impression_id=f"imp-{eid}",
        advertiser_id="adv1",
        campaign_id=camp,
        ad_id=ad,
        publisher_id="pub1",
        event_time=t,
        received_at=t,
        ip_hash=ip,
        user_agent=ua,
        user_key="u",
        token_key_id="k1",
    )


def raw_table(records: list[tuple[int, int, ClickEvent | None]]) -> pa.Table:
    """(partition, offset, event or None for an undecodable record) -> RAW_SCHEMA table."""
    cols: dict[str, list] = {n: [] for n in lake.RAW_SCHEMA.names}
    for p, off, e in records:
        for name in ClickEvent.__struct_fields__:
            cols[name].append(getattr(e, name) if e else None)
        cols["kafka_partition"].append(p)
        cols["kafka_offset"].append(off)
        cols["kafka_timestamp"].append(e.received_at if e else 0)
        cols["fraud_reason"].append(None)
        cols["decode_error"].append(None if e else "bad json")
        cols["raw_value"].append(None if e else b"{oops")
    return pa.table(cols, schema=lake.RAW_SCHEMA)


def frame(spark, records):
    return spark.createDataFrame(raw_table(records))


def test_small_frame_rules(spark):
    from pyspark.sql import Row
    from pyspark.testing import assertDataFrameEqual

    h1 = H0 + HOUR
    a = ev("a", h1 + 5 * MIN)
    burst = [ev(f"b{i:02d}", h1 + 7 * MIN + i, camp="c2", ip="198.18.0.1") for i in range(21)]
    records = [
        (0, 0, ev("x", H0 + 59 * MIN)),  # previous hour: not counted in h1
        (0, 1, a),
        (0, 2, a),  # duplicate copy
        (0, 2, a),  # the same Kafka record archived twice
        (0, 3, ev("bot", h1 + 5 * MIN, ua=BOT)),
        (0, 4, None),  # undecodable
        (1, 0, ev("y", H0 + 59 * MIN + 59_999)),
        (1, 1, ev("y", h1 + MIN)),  # a later copy in the next hour: still a duplicate
        (1, 2, ev("late", h1 + 20 * MIN)),
        (1, 3, ev("vlate", h1 + 5 * MIN, ad="a2")),  # 15 min behind partition 1: too late
        *[(2, i, e) for i, e in enumerate(burst)],  # 21 clicks of one ip in a minute
        (2, 21, ev("c", h1 + 7 * MIN, camp="c2", ip="10.0.0.9")),
    ]
    got = reconcile(frame(spark, records), ReconcileParams(h1, h1 + HOUR))
    ts = lambda ms: datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)  # noqa: E731
    want = spark.createDataFrame(
        [
            Row(ts(h1 + 5 * MIN), "adv1", "c1", "a1", 1, 1, 0),
            Row(ts(h1 + 5 * MIN), "adv1", "c1", "a2", 1, 0, 1),
            Row(ts(h1 + 7 * MIN), "adv1", "c2", "a1", 1, 21, 0),
            Row(ts(h1 + 20 * MIN), "adv1", "c1", "a1", 1, 0, 0),
        ],
        got.schema,
    )
    assertDataFrameEqual(got, want)
    # the same frame one hour earlier: x and the first copy of y belong there
    prev = reconcile(frame(spark, records), ReconcileParams(H0, h1)).collect()
    assert sorted((r.window_start.minute, r.clicks) for r in prev) == [(59, 2)]


def test_ip_threshold_counts_distinct_ids_and_bots(spark):
    h = H0
    # 20 distinct ids + 5 copies of one of them: not above the threshold
    twenty = [ev(f"t{i:02d}", h + 10, ip="198.18.1.1") for i in range(20)]
    recs = [(0, i, e) for i, e in enumerate(twenty)] + [(0, 20 + i, twenty[0]) for i in range(5)]
    # 20 normal + 1 bot from one ip: 21 distinct -> all flagged, the bot counts toward the rate
    ip2 = [ev(f"u{i:02d}", h + 10, ip="198.18.1.2") for i in range(20)]
    ip2.append(ev("ubot", h + 10, ip="198.18.1.2", ua=BOT))
    recs += [(1, i, e) for i, e in enumerate(ip2)]
    rows = reconcile(frame(spark, recs), ReconcileParams(h, h + HOUR)).collect()
    assert [(r.clicks, r.fraud_clicks) for r in rows] == [(20, 21)]


def test_seeded_traffic_matches_independent_recount(spark):
    start = H0 + 3 * HOUR + 40 * MIN
    events = make_events(seed=7, n=3000, start_ms=start, rate_per_s=1.0)
    parts = place(events, 3)
    records = [(p, i, e) for p, evs in parts.items() for i, e in enumerate(evs)]
    billable, fraud = reference_clicks(parts)
    stream = expected_billable(parts)  # what the stream can count within its lateness
    hours = sorted({k[0] // HOUR * HOUR for k in billable})
    assert len(hours) >= 2
    df = frame(spark, records).cache()
    params = ReconcileParams(hours[0], hours[-1] + HOUR)
    got = {
        (
            int(r.window_start.replace(tzinfo=UTC).timestamp() * 1000),
            r.advertiser_id,
            r.campaign_id,
            r.ad_id,
        ): (r.clicks, r.fraud_clicks, r.stream_too_late)
        for r in reconcile(df, params).collect()
    }
    assert Counter({k: v[0] for k, v in got.items() if v[0]}) == +billable
    assert Counter({k: v[1] for k, v in got.items() if v[1]}) == +fraud
    assert sum(fraud.values()) > 30 and sum(v[2] for v in got.values()) > 0
    # billable minus too-late-for-the-stream is exactly what the stream counts
    by_stream_key = Counter({(m, c, a): n - late for (m, _adv, c, a), (n, _f, late) in got.items()})
    assert +by_stream_key == +stream
    # per hour gives the same as the whole range
    for h in hours:
        one = reconcile(df, ReconcileParams(h, h + HOUR)).collect()
        assert sum(r.clicks for r in one) == sum(
            v for k, v in billable.items() if h <= k[0] < h + HOUR
        )


def test_duckdb_recount_agrees(tmp_path, spark):
    start = H0 + 40 * MIN
    events = make_events(seed=11, n=1500, start_ms=start, rate_per_s=1.0)
    parts = place(events, 2)
    records = [(p, i, e) for p, evs in parts.items() for i, e in enumerate(evs)]
    import pyarrow.parquet as pq

    pq.write_table(raw_table(records), tmp_path / "a.parquet")
    pq.write_table(raw_table(records[:10]), tmp_path / "b.parquet")  # re-archived records
    billable, fraud = reference_clicks(parts)
    got = duckdb_reconcile(
        [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")],
        ReconcileParams(H0 - 2 * HOUR, H0 + 3 * HOUR),
    )
    assert Counter({k: v[0] for k, v in got.items() if v[0]}) == +billable
    assert Counter({k: v[1] for k, v in got.items() if v[1]}) == +fraud


def test_horizon_hours():
    assert horizon_hours(H0 + HOUR, H0 + 2 * HOUR, 2 * HOUR) == [H0 - HOUR, H0, H0 + HOUR]
    assert len(horizon_hours(H0, H0 + 24 * HOUR, 24 * HOUR)) == 48


def test_watermark_seeds_cover_unread_files_before_and_between_the_read_ones():
    from clickagg_platform.lake import RawFile
    from clickagg_platform.reconcile import watermark_seeds

    def f(p, first, last):
        return RawFile(p, first, last, f"p{p}-{first}")

    maxes = {"p0-0": 100, "p0-10": 500, "p0-20": 300, "p0-30": 900, "p1-0": 50, "p1-10": 70}
    all_files = [f(0, 0, 9), f(0, 10, 19), f(0, 20, 29), f(0, 30, 39), f(1, 0, 9), f(1, 10, 19)]
    read = [f(0, 20, 29), f(0, 40, 49), f(1, 0, 9)]
    seeds = watermark_seeds(read, all_files, lambda g: maxes.get(g.url))
    # p0: before 20 the unread 0 and 10 (max 500); before 40 also 30 (900); p1: nothing before
    assert sorted(seeds) == [(0, 20, 29, 500), (0, 40, 49, 900)]
