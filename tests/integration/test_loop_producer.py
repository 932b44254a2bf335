"""The capture's loop producer against a real broker: every acked record is in the topic on the
partition Kafka's standard murmur2 partitioner picks (the Java client's and librdkafka's, both
asked here); a dead or frozen broker fails records within the ack timeout
and the producer comes back with the broker."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from clickagg_platform import kafka_admin
from clickagg_platform.loop_producer import LoopProducer
from clickagg_platform.partitioner import murmur2_partition
from clickagg_platform.producer import producer_config
from clickagg_platform.settings import REPO_ROOT
from tests.conftest import async_wait_until
from tests.helpers import private_kafka, read_topic

pytestmark = pytest.mark.integration


async def produce_until_acked(producer: LoopProducer, key: bytes, value: bytes) -> None:
    """A just-created partition answers NOT_LEADER_OR_FOLLOWER for a moment (its metadata is
    out before its leader is); the producer then fails and reconnects, by design. Retry."""
    deadline = time.monotonic() + 30
    while True:
        if await producer.ready(5) and (await producer.produce(key, value)) is None:
            return
        assert time.monotonic() < deadline, producer.down_reason


async def warm_up(producer: LoopProducer, partitions: int) -> None:
    """One acked record on every partition (keys b"warm-up-<n>")."""
    for p in range(partitions):
        key = next(
            k
            for k in (b"warm-up-%d" % i for i in range(10_000))
            if murmur2_partition(k, partitions) == p
        )
        await produce_until_acked(producer, key, b"warm-up")


JAVA_PLACEMENT = Path(__file__).parent / "java" / "KafkaPlacement.java"


def java_placement(keys: list[bytes], partitions: int, bootstrap="", topic="") -> dict:
    """key -> (Utils.toPositive(Utils.murmur2(key)) % n, BuiltInPartitioner.partitionForKey,
    partition of the record a real KafkaProducer sent, or -1 without a topic): the Java client,
    from the Kafka jars the broker runs on."""
    libs = Path(os.environ.get("CLICKAGG_LOCAL_DIR", REPO_ROOT / ".local")) / "kafka" / "libs"
    args = [str(partitions)] + ([bootstrap, topic] if topic else [])
    out = subprocess.run(
        ["java", "-cp", f"{libs}/*", str(JAVA_PLACEMENT), *args],
        input="".join(f"k{k.hex()}\n" for k in keys),  # "k": the empty key is a line too
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines()]
    assert len(rows) == len(keys), out[-2000:]
    return {bytes.fromhex(h[1:]): (int(a), int(b), int(c)) for h, a, b, c in rows}


def placement_keys(n: int, seed: int) -> list[bytes]:
    """Event-id-like keys, any bytes of lengths 1..40, and non-ASCII UTF-8."""
    rng = random.Random(seed)
    keys = [f"event-{i:05d}".encode() for i in range(n)]
    keys += [rng.randbytes(length) for length in range(1, 41) for _ in range(5)]
    keys += [f"clic-é-{i}-日本-🙂".encode() for i in range(50)]
    return list(dict.fromkeys(keys))


def test_java_client_hashes_like_the_reference_for_any_key():
    rng = random.Random(7)
    keys = [b""] + [rng.randbytes(length) for length in range(41) for _ in range(40)]
    keys += ["événement-ü-日本-🙂".encode()[:n] for n in range(1, 30)]
    keys = list(dict.fromkeys(keys))
    for n in (6, 7, 1000):
        java = java_placement(keys, n)
        assert {k: java[k][:2] for k in keys} == {k: (murmur2_partition(k, n),) * 2 for k in keys}


def test_acked_records_land_once_on_the_java_clients_partition(settings, kafka_topic):
    keys = placement_keys(3000, seed=11)

    async def run():
        producer = LoopProducer(settings.bootstrap, kafka_topic, linger_ms=2, ack_timeout_s=10)
        await producer.start()
        await warm_up(producer, settings.clicks_partitions)
        futures = []
        for i, key in enumerate(keys):
            futures.append(producer.produce(key, b"value-%d" % i))
            if i % 500 == 499:
                producer._flush()  # as the linger timer would: several requests
        results = await asyncio.gather(*futures)
        assert await producer.close() == 0
        return results

    assert asyncio.run(run()) == [None] * len(keys)
    records = read_topic(settings.bootstrap, kafka_topic, expected=len(keys) + 6)
    records = [r for r in records if not r[0].startswith(b"warm-up")]
    assert sorted((k, v) for k, v, _, _ in records) == sorted(
        (k, b"value-%d" % i) for i, k in enumerate(keys)
    )
    # the partition is Kafka's murmur2 of the key (the plain reference, not the fast path)
    partitions = settings.clicks_partitions
    placed = {k: p for k, _, p, _ in records}
    assert placed == {k: murmur2_partition(k, partitions) for k in keys}
    # librdkafka as the platform configures it (murmur2_random: the spool drain's librdkafka
    # client, the load generator) agrees: one event_id, one partition, whoever writes it
    seen = {}
    lib = Producer(producer_config(settings.bootstrap))
    for key in keys:
        lib.produce(kafka_topic, b"again", key, on_delivery=lambda e, m: seen.update({m.key(): m}))
    assert lib.flush(30) == 0
    assert {k: m.partition() for k, m in seen.items()} == placed
    # and so does the Java client, really sending the records (a JVM replay tool, Connect, ...)
    java = java_placement(keys, partitions, settings.bootstrap, kafka_topic)
    assert {k: java[k] for k in keys} == {k: (p, p, p) for k, p in placed.items()}


def test_broker_outage_fails_in_time_and_producer_returns(settings, tmp_path):
    with private_kafka(tmp_path / "kafka") as (bootstrap, kafka):
        s = settings.model_copy(update={"kafka_bootstrap": bootstrap})
        kafka_admin.wait_for_broker(s)
        kafka_admin.ensure_topic(s)
        pid = int(Path(tmp_path / "kafka" / "local" / "kafka" / "kafka.pid").read_text())

        async def frozen_broker():
            producer = LoopProducer(bootstrap, s.clicks_topic, linger_ms=2, ack_timeout_s=1.0)
            await producer.start()
            await produce_until_acked(producer, b"k0", b"before")
            os.kill(pid, signal.SIGSTOP)  # the broker still holds the connection, answers nothing
            try:
                started = time.monotonic()
                results = await asyncio.gather(
                    *(producer.produce(b"k%d" % i, b"x") for i in range(50))
                )
                waited = time.monotonic() - started
                assert set(results) == {"no ack within 1s"}
                assert 0.9 <= waited < 5, waited
                with pytest.raises(BufferError):
                    producer.produce(b"k", b"while down")  # the caller spools instead
            finally:
                os.kill(pid, signal.SIGCONT)
            await produce_until_acked(producer, b"k1", b"after thaw")
            return producer

        failures = []

        async def killed_broker():
            producer = LoopProducer(
                bootstrap,
                s.clicks_topic,
                linger_ms=2,
                ack_timeout_s=1.0,
                on_failure=failures.append,
            )
            await producer.start()
            await produce_until_acked(producer, b"k2", b"before kill")
            await asyncio.to_thread(kafka, "kill")
            await async_wait_until(lambda: not producer.up, 10, "the dead broker to be noticed")
            assert (
                "connection lost" in producer.down_reason or "unreachable" in producer.down_reason
            )
            await asyncio.to_thread(kafka, "start")
            await produce_until_acked(producer, b"k3", b"after restart")
            await producer.close()

        asyncio.run(frozen_broker())
        asyncio.run(killed_broker())
        records = read_topic(bootstrap, s.clicks_topic, expected=4, timeout=60)
    values = [v for _, v, _, _ in records]
    # each acked record is there exactly once; the 50 failed while the broker was frozen may
    # or may not have been written when it thawed (the capture spools them: dedup drops those)
    for v in (b"before", b"after thaw", b"before kill", b"after restart"):
        assert values.count(v) >= 1  # more only if a failed attempt was written anyway
    assert values.count(b"x") <= 50


def test_unreachable_cluster_at_start_is_not_fatal():
    async def run():
        producer = LoopProducer("127.0.0.1:9", "nowhere", ack_timeout_s=0.5)
        await producer.start(wait_s=0.5)
        assert not producer.up
        assert "unreachable" in producer.down_reason
        with pytest.raises(BufferError, match="unreachable"):
            producer.produce(b"k", b"v")
        assert await producer.close() == 0

    asyncio.run(run())


def test_added_partitions_are_picked_up(settings, kafka_topic):
    from confluent_kafka.admin import NewPartitions

    async def run():
        producer = LoopProducer(settings.bootstrap, kafka_topic, metadata_refresh_s=0.2)
        await producer.start()
        await produce_until_acked(producer, b"a", b"1")
        assert producer._partitions == settings.clicks_partitions
        grown = settings.clicks_partitions + 2
        admin = kafka_admin.admin(settings)  # kept alive until the request is answered
        futures = admin.create_partitions([NewPartitions(kafka_topic, grown)])
        await asyncio.to_thread(futures[kafka_topic].result, 30)
        await async_wait_until(
            lambda: producer.up and producer._partitions == grown, 30, "the new partitions"
        )
        key = next(k for k in (b"k%d" % i for i in range(1000)) if murmur2_partition(k, grown) >= 6)
        await produce_until_acked(producer, key, b"2")
        await producer.close()
        return key

    key = asyncio.run(run())
    records = read_topic(settings.bootstrap, kafka_topic, expected=2)
    # (a retried record may be there twice: failed, yet written)
    assert {(k, p) for k, _, p, _ in records} == {
        (b"a", murmur2_partition(b"a", settings.clicks_partitions)),
        (key, murmur2_partition(key, settings.clicks_partitions + 2)),
    }


def test_a_partition_error_loses_nothing_and_duplicates_nothing(settings):
    from confluent_kafka.admin import NewTopic

    topic = settings.clicks_topic + "_small"
    admin = kafka_admin.admin(settings)
    futures = admin.create_topics(
        [NewTopic(topic, 6, 1, config={"max.message.bytes": "4096"})], operation_timeout=30
    )
    futures[topic].result(30)

    async def run():
        producer = LoopProducer(settings.bootstrap, topic, linger_ms=2, ack_timeout_s=10)
        await producer.start()
        await warm_up(producer, 6)
        results = {}

        def send(key, value):
            try:
                results[key] = producer.produce(key, value)
            except BufferError as exc:  # refused once the error came back (the caller spools)
                results[key] = str(exc)

        for burst in range(5):
            for i in range(300):
                send(b"b%d-%d" % (burst, i), b"small")
            if burst == 0:  # one record over the topic's limit: MESSAGE_TOO_LARGE for its batch
                send(b"big", b"x" * 8000)
            # send now, as the linger timer would: all five requests are on the wire before
            # the loop reads the first answer, so four are in flight when the error comes back
            producer._flush()
        assert [len(c.pending) for c in producer._conns.values()] == [5]
        for key, fut in results.items():
            if isinstance(fut, asyncio.Future):
                results[key] = await fut
        await producer.close()
        return results

    try:
        results = asyncio.run(run())
        assert results[b"big"] == "MESSAGE_TOO_LARGE"
        acked = {k for k, r in results.items() if r is None}
        assert acked  # the other partitions of the same request were written
        records = read_topic(settings.bootstrap, topic, expected=len(acked) + 6)
        keys = [k for k, _, _, _ in records if not k.startswith(b"warm-up")]
        # exactly the acked records, once each: a failed one was not written, and no request
        # that was in flight when the error came back was failed (which would spool, and later
        # duplicate, records the broker had in fact written)
        assert sorted(keys) == sorted(acked), (
            sorted(set(keys) - acked)[:5],
            sorted(acked - set(keys))[:5],
            {results[k] for k in set(keys) - acked},
        )
    finally:
        admin.delete_topics([topic])


def test_a_large_spool_drains_in_chunks_through_the_loop_producer(settings, kafka_topic):
    from clickagg_platform.capture import CaptureMetrics
    from clickagg_platform.durable import DRAIN_CHUNK, DurableSink
    from clickagg_platform.spool import Spool

    n = 2 * DRAIN_CHUNK + 123  # three chunks, the last one partial
    spool = Spool(settings.spool_path, segment_bytes=64 * 1024)  # several segments too
    spool.append_many([(b"sp-%05d" % i, b"spooled %d" % i) for i in range(n)])
    spool.close()  # as a crashed capture process leaves it

    async def run():
        sink = DurableSink(settings, CaptureMetrics())
        await sink.start()
        try:
            await async_wait_until(lambda: sink.spool_depth == 0, 60, "the spool to drain")
            assert sink.kafka_healthy
        finally:
            await sink.stop()

    asyncio.run(run())
    records = read_topic(settings.bootstrap, kafka_topic, expected=n)
    # every spooled click is in the topic (a chunk that failed on a just-created partition is
    # replayed with its segment: duplicates of the same key are allowed, losses are not)
    assert {k for k, _, _, _ in records} == {b"sp-%05d" % i for i in range(n)}
