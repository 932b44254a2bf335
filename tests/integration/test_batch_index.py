"""The first-seen index against the whole-range truth: hour-by-hour reconciles (random order,
re-runs, late files arriving between runs, the index sometimes built by its own asset and
sometimes on the fly) end exactly where one whole-range run ends, and both equal an independent
recount of the seeded clicks. Real Dagster, Spark, ClickHouse and lake dir."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from assets.common import signature
from assets.first_seen import read_pointer
from clickagg_platform import clickhouse as chm
from clickagg_platform import first_seen, lake
from clickagg_platform.model import ClickEvent
from tests.batch_support import (
    HOUR,
    MIN,
    hour_key,
    in_hours,
    place,
    reference_clicks,
    write_archive,
)
from tests.integration.test_batch_assets import checks, ranged, run
from tests.unit.stream_sim import make_events

pytestmark = pytest.mark.integration

DAY1 = 1_767_312_000_000  # 2026-01-02T00:00Z: the range crosses a day boundary
H0 = DAY1 - 3 * HOUR
HOURS = [H0 + i * HOUR for i in range(6)]
BLOCK = 50


def recaptured(events: list[ClickEvent], seed: int) -> list[ClickEvent]:
    """Send order with copies of earlier clicks captured again later (a double click, a retry
    after a timeout): same event_id, a later event time, often in a later hour or day."""
    rng = random.Random(seed)
    out = []
    for ev in events:
        out.append(ev)
        if out and rng.random() < 0.05:
            orig = rng.choice(out[-400:])
            later = max(orig.event_time, ev.event_time) + rng.randrange(1_000, 3 * 60_000)
            out.append(ClickEvent(**{**_fields(orig), "event_time": later, "received_at": later}))
    return out


def _fields(ev: ClickEvent) -> dict:
    return {name: getattr(ev, name) for name in ev.__struct_fields__}


def split_late(parts: dict[int, list[ClickEvent]], fraction: float) -> tuple[dict, dict, dict]:
    """Per partition: the records archived first, those archived later (higher offsets, written
    as late files), and where the later ones start. The cut is on a block boundary so the late
    files never supersede an early one (the archiver's block layout)."""
    early, late, base = {}, {}, {}
    for p, evs in parts.items():
        cut = int(len(evs) * (1 - fraction)) // BLOCK * BLOCK
        early[p], late[p], base[p] = evs[:cut], evs[cut:], cut
    return early, late, base


def batch_rows(settings) -> dict:
    c = chm.client(settings)
    try:
        rows = c.execute(
            "SELECT toUInt64(toUnixTimestamp(window_start)) * 1000, advertiser_id, campaign_id, "
            "ad_id, clicks, fraud_clicks, stream_too_late "
            f"FROM {settings.clickhouse_database}.minute_aggregates_batch"
        )
    finally:
        c.disconnect()
    return {(m, adv, c_, a): (n, f, late) for m, adv, c_, a, n, f, late in rows}


def clicks_of(rows: dict) -> Counter:
    return Counter({k: v[0] for k, v in rows.items() if v[0]})


def one_hour(settings, h: int, with_index_asset: bool):
    sel = ["first_seen_index", "minute_aggregates"] if with_index_asset else ["minute_aggregates"]
    res = run(settings, sel, partition_key=hour_key(h))
    assert all(checks(res).values()), checks(res)
    return res


def test_hour_by_hour_in_any_order_with_late_files_equals_one_whole_range_run(
    settings, ch_database
):
    events = recaptured(
        make_events(seed=77, n=2600, start_ms=H0 + 5 * MIN, rate_per_s=0.13, late_fraction=0.1),
        seed=78,
    )
    parts = place(events, 3)
    billable, fraud = reference_clicks(parts)
    want = in_hours(billable, HOURS[0], HOURS[-1] + HOUR)
    by_hour = Counter(m // HOUR * HOUR for (m, *_k) in want.elements())
    assert all(by_hour[h] > 100 for h in HOURS[:-1]), by_hour
    # the data exercises the index: copies of one click in different event hours and days
    hours_of = defaultdict(set)
    for evs in parts.values():
        for ev in evs:
            hours_of[ev.event_id].add(ev.event_time // HOUR)
    assert sum(len(s) > 1 for s in hours_of.values()) > 20

    early, late, base = split_late(parts, 0.15)
    root, topic = settings.lake_root, settings.clicks_topic
    write_archive(root, topic, early, block=BLOCK)

    rng = random.Random(5)
    order = HOURS[:]
    rng.shuffle(order)
    for h in order + rng.sample(HOURS, 2):  # every hour, then two re-runs
        one_hour(settings, h, with_index_asset=rng.random() < 0.5)

    # late files arrive (higher offsets: late clicks, later copies); the late-input sensor
    # re-runs the hours whose raw file set changed, here in random order
    before = {h: signature(lake.hour_files(root, topic, _dt(h))) for h in HOURS}
    write_archive(root, topic, late, block=BLOCK, offset_base=base)
    changed = [h for h in HOURS if signature(lake.hour_files(root, topic, _dt(h))) != before[h]]
    assert len(changed) >= 3
    rng.shuffle(changed)
    for h in changed:
        one_hour(settings, h, with_index_asset=rng.random() < 0.5)
    hourly_rows = batch_rows(settings)
    assert clicks_of(hourly_rows) == want

    # every index hour is current and agrees with its raw files' signature
    for h in HOURS:
        ptr = read_pointer(root, topic, h, settings)
        assert ptr is not None
        assert ptr.signature == signature(lake.hour_files(root, topic, _dt(h)))

    # one whole-range run (a single-run backfill) over the same lake gives the same rows
    res = run(
        settings,
        ["first_seen_index", "minute_aggregates"],
        tags=ranged(hour_key(HOURS[0]), hour_key(HOURS[-1])),
    )
    assert all(checks(res).values()), checks(res)
    whole_rows = batch_rows(settings)
    assert whole_rows == hourly_rows
    assert sum(v[1] for v in whole_rows.values()) == sum(
        in_hours(fraud, HOURS[0], HOURS[-1] + HOUR).values()
    )

    # the sort-merge join (what a large hour uses) instead of broadcasting the candidates
    cfg = {"ops": {"minute_aggregates": {"config": {"broadcast_max_rows": 0}}}}
    for h in rng.sample(HOURS, 2):
        res = run(settings, ["minute_aggregates"], cfg, partition_key=hour_key(h))
        assert all(checks(res).values()), checks(res)
    assert batch_rows(settings) == hourly_rows

    # and the same as the pre-index path (re-reading the whole horizon) with a full recount
    cfg = {"ops": {"minute_aggregates": {"config": {"use_index": False, "full_recount": True}}}}
    for h in rng.sample(HOURS, 2):
        res = run(settings, ["minute_aggregates"], cfg, partition_key=hour_key(h))
        assert all(checks(res).values()), checks(res)
    assert batch_rows(settings) == hourly_rows


def test_index_check_fails_on_a_tampered_index(settings, ch_database):
    import pyarrow.parquet as pq

    events = make_events(seed=91, n=400, start_ms=H0 + 2 * MIN, rate_per_s=0.2)
    parts = place(events, 3)
    root, topic = settings.lake_root, settings.clicks_topic
    write_archive(root, topic, parts, block=BLOCK)
    res = run(settings, ["first_seen_index"], partition_key=hour_key(H0))
    assert checks(res) == {"first_seen_index_matches_raw": True}
    ptr = read_pointer(root, topic, H0, settings)
    ids = len(
        {ev.event_id for evs in parts.values() for ev in evs if H0 <= ev.event_time < H0 + HOUR}
    )
    assert ptr.rows == ids
    # drop one row from one bucket file: the independent recount names the hour
    from assets.first_seen import index_file_urls

    url = index_file_urls(root, topic, H0, ptr, settings)[0]
    path = url.removeprefix("file://")
    t = pq.read_table(path)
    pq.write_table(t.slice(1), path)
    res = run(settings, ["first_seen_index"], partition_key=hour_key(H0), raise_on_error=False)
    assert checks(res) == {"first_seen_index_matches_raw": False}
    ev = res.get_asset_check_evaluations()[0]
    assert f"index {ids - 1}" in ev.metadata["problems"].value
    # a forced rebuild repairs it
    cfg = {"ops": {"first_seen_index": {"config": {"force": True}}}}
    res = run(settings, ["first_seen_index"], cfg, partition_key=hour_key(H0))
    assert checks(res) == {"first_seen_index_matches_raw": True}
    assert (
        len(lake._list(first_seen.hour_prefix(root, topic, H0), settings))
        == len(index_file_urls(root, topic, H0, read_pointer(root, topic, H0, settings), settings))
        + 1
    )  # the old version is gone: only the new files and _CURRENT


def _dt(h: int):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(h / 1000, UTC)
