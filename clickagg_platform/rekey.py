"""Move a clicks topic written with the old CRC-32 placement onto a new murmur2 topic, exactly.

Why a new topic: the stream dedups per partition, so one `event_id` must always be on one
partition. Before murmur2, producers placed keys with librdkafka's CRC-32 (`consistent_random`);
switching the partitioner in place would put a retry or a double-click of an id already counted
on another partition than its first copy, and the stream would count it again. So the topic
changes name, and the old one is copied into it first, re-placed by murmur2:

1. `fence`: the old topic refuses every write (`max.message.bytes=1`: a record batch is never
   that small, for any client and any `acks`; reads are untouched). The capture service answers
   clicks as before and spools them on disk (a produce error is a spool, never a lost click).
2. copy every record of the old topic into the new one, in timestamp order across the old
   partitions (each new partition then sees event times about as ordered as before, so the
   stream's watermarks hold), keeping key, value, timestamp and headers; the new placement is
   the platform producer's (`partitioner=murmur2_random`). The copy repeats until the old
   topic's end offsets stay put (a write accepted just before the fence is included).
3. (operator, docs/operations.md) restart the capture with `CLICKAGG_CLICKS_TOPIC=<new>` (its
   spool drains into the new topic, after the copy); restart the stream and the archiver on the
   new topic with the hot table reset: the stream recounts the whole history from the new topic,
   where every copy of an id is on one partition, so nothing is counted twice.

The copy refuses a target that was ever written (no half-applied second copy): after a failed
copy, delete and recreate the target and run it again.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from clickagg_platform import kafka_admin
from clickagg_platform.kafka_security import librdkafka_config, librdkafka_connection
from clickagg_platform.producer import producer_config
from clickagg_platform.settings import Settings

FENCE = ("max.message.bytes", "1")
_TS_NONE = 0  # confluent_kafka.TIMESTAMP_NOT_AVAILABLE


class RekeyError(RuntimeError):
    """The copy cannot start or did not complete; nothing about the source was changed except
    the fence (which stays: the old topic is retired)."""


@dataclass
class RekeyResult:
    copied: int = 0
    by_source: dict[int, int] = field(default_factory=dict)  # old partition -> records copied
    by_target: dict[int, int] = field(default_factory=dict)  # new partition -> records now
    rounds: int = 0


def set_fence(settings: Settings, topic: str, on: bool = True) -> None:
    """Refuse (or, `on=False`, allow again) every write to `topic`."""
    op = AlterConfigOpType.SET if on else AlterConfigOpType.DELETE
    entry = ConfigEntry(FENCE[0], FENCE[1] if on else None, incremental_operation=op)
    res = ConfigResource("TOPIC", topic, incremental_configs=[entry])
    admin = kafka_admin.admin(settings)  # kept alive until the broker answers
    admin.incremental_alter_configs([res])[res].result(timeout=30)


def wait_fenced(settings: Settings, topic: str, partitions: int, timeout_s: float = 30.0) -> None:
    """Until every partition's leader refuses a write: the fence is in force, not just stored.
    (A probe the broker still accepted is an undecodable record the stream skips.)"""
    p = Producer(librdkafka_connection(settings, {"message.timeout.ms": 5000}))
    deadline = time.monotonic() + timeout_s
    pending = set(range(partitions))
    results: dict[int, KafkaError | None] = {}
    while pending:
        results.clear()
        for part in pending:
            p.produce(topic, b"rekey-fence-probe", None, part, lambda e, m: _put(results, m, e))
        p.flush(10)
        pending = {part for part in pending if results.get(part) is None}
        if pending and time.monotonic() > deadline:
            raise RekeyError(f"{topic}: partitions {sorted(pending)} still accept writes")


def _put(results: dict, msg, err) -> None:
    results[msg.partition()] = err


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        librdkafka_connection(
            settings,
            {
                "group.id": "clickagg-rekey",  # never committed: offsets are given explicitly
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "queued.max.messages.kbytes": 8192,
            },
        )
    )


def end_offsets(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    c = _consumer(settings)
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            raise RekeyError(f"topic {topic!r} does not exist")
        return {p: _watermarks(c, TopicPartition(topic, p)) for p in sorted(md.partitions)}
    finally:
        c.close()


_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}


def _watermarks(c, tp: TopicPartition, wait_s: float = 30.0) -> tuple[int, int]:
    """A partition's (low, high) offsets, waiting out retriable errors such as
    NOT_LEADER_FOR_PARTITION just after a topic was created or a broker restarted (the client's
    metadata names no leader yet)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return c.get_watermark_offsets(tp, timeout=10)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            if code not in _TRANSIENT or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # (a leader election takes well under a second on one broker)


def partition_records(settings: Settings, topic: str, part: int, start: int, end: int):
    """Records [start, end) of one partition, in offset order."""
    c = _consumer(settings)
    try:
        c.assign([TopicPartition(topic, part, start)])
        at, idle_until = start, time.monotonic() + 60
        while at < end:
            msgs = c.consume(min(500, end - at), timeout=1.0)  # never waits past the range
            if not msgs and time.monotonic() > idle_until:
                raise RekeyError(f"{topic}[{part}]: no record past offset {at} for 60 s")
            for m in msgs:
                if m.error():
                    raise RekeyError(f"{topic}[{part}]: {m.error()}")
                if m.offset() >= end:
                    return
                at = m.offset() + 1
                idle_until = time.monotonic() + 60
                yield m
    finally:
        c.close()


def merged(settings: Settings, topic: str, ranges: dict[int, tuple[int, int]]) -> Iterator:
    """All records of the ranges, merged by (timestamp, partition, offset)."""
    streams = [
        partition_records(settings, topic, p, lo, hi) for p, (lo, hi) in ranges.items() if hi > lo
    ]
    return heapq.merge(*streams, key=lambda m: (m.timestamp()[1], m.partition(), m.offset()))


def rekey_topic(
    settings: Settings,
    source: str,
    target: str,
    fence: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> RekeyResult:
    """Copy `source` (old placement) into `target` (murmur2), see the module docstring."""
    if source == target:
        raise RekeyError("source and target are the same topic")
    src = end_offsets(settings, source)
    if target not in kafka_admin.admin(settings).list_topics(timeout=10).topics:
        kafka_admin.ensure_topic(settings, target, len(src))
    written = {p: hi for p, (_lo, hi) in end_offsets(settings, target).items() if hi}
    if written:
        raise RekeyError(
            f"target {target!r} was already written (end offsets {written}): delete and "
            "recreate it, then run again"
        )
    if fence:
        set_fence(settings, source)
        wait_fenced(settings, source, len(src))
    security = librdkafka_config(settings.kafka_security)
    producer = Producer(
        producer_config(settings.bootstrap, 20, **{"client.id": "clickagg-rekey", **security})
    )
    errors: list[str] = []

    def report(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    result = RekeyResult()
    done = {p: lo for p, (lo, _hi) in src.items()}
    while True:
        ends = {p: hi for p, (_lo, hi) in end_offsets(settings, source).items()}
        ranges = {p: (done[p], ends[p]) for p in done if ends[p] > done[p]}
        if not ranges:
            break
        result.rounds += 1
        total = sum(hi - lo for lo, hi in ranges.values()) + result.copied
        for m in merged(settings, source, ranges):
            kind, ts = m.timestamp()
            args = {"timestamp": ts} if kind != _TS_NONE else {}
            if m.headers():
                args["headers"] = m.headers()
            while True:
                try:
                    producer.produce(target, m.value(), m.key(), on_delivery=report, **args)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
            result.by_source[m.partition()] = result.by_source.get(m.partition(), 0) + 1
            result.copied += 1
            if progress is not None and result.copied % 10_000 == 0:
                progress(result.copied, total)
        done.update({p: hi for p, (_lo, hi) in ranges.items()})
    left = producer.flush(60)
    if left or errors:
        raise RekeyError(
            f"{left} records unacknowledged, {len(errors)} failed ({errors[:3]}): the target "
            "is partial; delete and recreate it, then run again"
        )
    result.by_target = {p: hi - lo for p, (lo, hi) in end_offsets(settings, target).items()}
    if sum(result.by_target.values()) != result.copied:
        raise RekeyError(
            f"target holds {sum(result.by_target.values())} records, {result.copied} were copied"
        )
    if progress is not None:
        progress(result.copied, result.copied)
    return result


@dataclass
class Placement:
    """Of a sample of keyed records: how many sit where each partitioner would put them."""

    sampled: int = 0
    murmur2: int = 0
    crc32: int = 0

    @property
    def verdict(self) -> str:
        if not self.sampled:
            return "empty"
        if self.murmur2 == self.sampled:
            return "murmur2"
        if self.crc32 == self.sampled:
            return "crc32"
        return "mixed"


def placement(settings: Settings, topic: str, per_partition: int = 1000) -> Placement:
    """Which partitioner wrote `topic`: the last `per_partition` keyed records of each partition
    checked against murmur2 and CRC-32 (a random key matches either with chance 1/partitions,
    so a few hundred records settle it). "mixed" means both wrote it: dedup was already broken."""
    from clickagg_platform.partitioner import crc32_partition, murmur2_partition

    ends = end_offsets(settings, topic)
    n, out = len(ends), Placement()
    for m in merged(
        settings, topic, {p: (max(lo, hi - per_partition), hi) for p, (lo, hi) in ends.items()}
    ):
        key = m.key()
        if key is None:
            continue
        out.sampled += 1
        out.murmur2 += murmur2_partition(key, n) == m.partition()
        out.crc32 += crc32_partition(key, n) == m.partition()
    return out


def reset_hot(settings: Settings) -> None:
    """Empty the hot table before the stream recounts the history from the new topic (its rows
    are keyed by source partition, and partition numbers mean other clicks there now)."""
    from clickagg_platform import clickhouse

    client = clickhouse.client(settings)
    try:
        client.execute(f"TRUNCATE TABLE {settings.clickhouse_database}.hot_clicks")
    finally:
        client.disconnect()
