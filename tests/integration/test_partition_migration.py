"""Moving from the old CRC-32 placement to murmur2 without counting a click twice: a topic
written the old way is counted by a worker, fenced and re-keyed into a new topic
(`clickagg rekey-topic`), and the worker restarted on the new topic with the hot table reset
recounts everything while new traffic (with copies of old ids: replays, double-clicks) arrives.
The hot totals equal the placement-free recount of all the clicks sent; the same traffic
switched in place (no re-key) would have counted the copies twice, which the test also shows."""

from __future__ import annotations

import random
from collections import defaultdict

import httpx
import pytest
from confluent_kafka import Producer

from clickagg_platform import kafka_admin, rekey
from clickagg_platform.partitioner import crc32_partition, murmur2_partition
from tests.conftest import wait_until
from tests.helpers import capture_server, read_topic
from tests.integration.stream_harness import (
    Placed,
    Worker,
    delete_internal_topics,
    now_ms,
    produce,
    wait_equal,
)
from tests.integration.test_capture import expected_event_id, make_links
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


def _spool_depth(base: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith("clickagg_capture_spool_depth "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("clickagg_capture_spool_depth not exported")


@pytest.mark.parametrize("client", ["loop", "librdkafka"])
def test_capture_spools_under_the_fence_and_drains_into_the_new_topic(
    settings, kafka_topic, tmp_path, client
):
    """Runbook steps 2-3 with the real capture service: while the old topic is fenced every
    click is still answered 302 and spooled; restarted on the new topic, the capture drains its
    spool there, each click on its murmur2 partition, and the old topic got nothing more."""
    old = settings.model_copy(update={"capture_producer": client, "produce_timeout_ms": 500})
    new = old.model_copy(update={"clicks_topic": f"{old.clicks_topic}_m2"})
    links = make_links(old, 150, seed=31)
    before, during = links[:50], links[50:]

    def click_all(base: str, batch: list[dict]) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            assert [http.get(f"/c/{link['token']}").status_code for link in batch] == [302] * len(
                batch
            )

    try:
        with capture_server(old, tmp_path / f"capture-old-{client}.log") as (base, _):
            click_all(base, before)
            wait_until(lambda: _spool_depth(base) == 0, 30, "the first clicks in Kafka")
            result = rekey.rekey_topic(old, old.clicks_topic, new.clicks_topic)
            click_all(base, during)  # the fence refuses them: spooled, answered all the same
            assert _spool_depth(base) == len(during)
        ends = rekey.end_offsets(old, old.clicks_topic)
        assert sum(hi - lo for lo, hi in ends.values()) == result.copied  # nothing written since
        with capture_server(new, tmp_path / f"capture-new-{client}.log") as (base, _):
            wait_until(lambda: _spool_depth(base) == 0, 60, "the spool to drain into the new topic")
        records = read_topic(new.bootstrap, new.clicks_topic, expected=len(links))
        keys = [k for k, _, _, _ in records if k is not None]
        assert {k.decode() for k in keys} == {
            expected_event_id(link["impression_id"]) for link in links
        }
        n = new.clicks_partitions
        assert all(p == murmur2_partition(k, n) for k, _, p, _ in records if k is not None)
    finally:
        try:
            kafka_admin.delete_topic(settings, new.clicks_topic)
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
