"""Moving from the old CRC-32 placement to murmur2 without counting a click twice: a topic
written the old way is counted by a worker, fenced and re-keyed into a new topic
(`clickagg rekey-topic`), and the worker restarted on the new topic with the hot table reset
recounts everything while new traffic (with copies of old ids: replays, double-clicks) arrives.
The hot totals equal the placement-free recount of all the clicks sent; the same traffic
switched in place (no re-key) would have counted the copies twice, which the test also shows."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from confluent_kafka import Producer

from clickagg_platform import kafka_admin, rekey
from clickagg_platform.partitioner import crc32_partition, murmur2_partition
from tests.helpers import read_topic
from tests.integration.stream_harness import (
    Placed,
    Worker,
    delete_internal_topics,
    now_ms,
    produce,
    wait_equal,
)
from tests.unit.stream_sim import expected_billable, make_events

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stream_internal_topics")]


def test_rekey_cut_over_counts_every_click_once(
    settings, kafka_topic, ch_database, tmp_path, unique
):
    rng = random.Random(21)
    events = make_events(
        seed=21, n=4000, start_ms=now_ms() - 3_600_000, late_fraction=0, too_late_fraction=0
    )
    before, after = events[:2500], events[2500:]
    # after the switch: old clicks again (a JVM replay, a spool redelivery, double-clicks)
    for ev in rng.sample(before, 300):
        after.insert(rng.randrange(len(after) + 1), ev)
    # placement-free truth: with no late clicks the rule does not depend on partitions
    want_before = expected_billable({0: before})
    want = expected_billable({0: before + after})
    n = settings.clicks_partitions
    in_place: dict[int, list] = defaultdict(list)  # what switching the partitioner in place does
    for ev in before:
        in_place[crc32_partition(ev.event_id.encode(), n)].append(ev)
    for ev in after:
        in_place[murmur2_partition(ev.event_id.encode(), n)].append(ev)
    assert sum(expected_billable(in_place).values()) > sum(want.values()) + 200

    # the old world: CRC-32 placement, counted by a worker
    old = Placed()
    produce(settings, before, old, partitioner="consistent_random")
    assert all(
        p == crc32_partition(ev.event_id.encode(), n)
        for p, evs in old.by_partition().items()
        for ev in evs
    )
    app = f"t{unique}"
    worker = Worker(settings, tmp_path / "old", app).start()
    try:
        wait_equal(settings, want_before, timeout=90, workers=[worker])
    finally:
        worker.stop()

    # the cut-over: fence + copy, then the hot table reset
    new = settings.model_copy(update={"clicks_topic": f"{settings.clicks_topic}_m2"})
    try:
        result = rekey.rekey_topic(settings, settings.clicks_topic, new.clicks_topic)
        ends = rekey.end_offsets(settings, settings.clicks_topic)
        assert result.copied == sum(hi - lo for lo, hi in ends.values()) >= len(before)
        errors = []
        p = Producer({"bootstrap.servers": settings.bootstrap, "message.timeout.ms": 5000})
        p.produce(
            settings.clicks_topic, b"late write", b"k", on_delivery=lambda e, m: errors.append(e)
        )
        p.flush(10)
        assert [e.name() for e in errors] == ["MSG_SIZE_TOO_LARGE"]  # the old topic is fenced
        copied = read_topic(settings.bootstrap, new.clicks_topic, expected=result.copied)
        assert len(copied) == result.copied
        assert all(p == murmur2_partition(k, n) for k, _, p, _ in copied if k is not None)
        for part, (lo, hi) in rekey.end_offsets(settings, new.clicks_topic).items():
            stamps = [
                m.timestamp()[1]
                for m in rekey.partition_records(settings, new.clicks_topic, part, lo, hi)
            ]
            assert stamps == sorted(stamps) and len(stamps) == hi - lo  # merged by timestamp
        with pytest.raises(rekey.RekeyError, match="already written"):
            rekey.rekey_topic(settings, settings.clicks_topic, new.clicks_topic)
        rekey.reset_hot(settings)
        found = rekey.placement(settings, settings.clicks_topic, per_partition=100)
        assert found.verdict == "crc32" and found.sampled >= 590  # (a fence probe has no key)
        assert rekey.placement(settings, new.clicks_topic, per_partition=100).verdict == "murmur2"

        # the new world: capture (platform placement) writes the new topic after the copy
        produce(new, after, Placed())
        worker = Worker(new, tmp_path / "new", app).start()
        try:
            wait_equal(new, want, timeout=120, workers=[worker])
        finally:
            worker.stop()
    finally:
        delete_internal_topics(new, app)
        try:
            kafka_admin.delete_topic(settings, new.clicks_topic)
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
