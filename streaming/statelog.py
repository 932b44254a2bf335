"""Durable state: a delta changelog in Kafka, materialized in a local RocksDB (rocksdict).

One checkpoint of one partition is ONE Kafka record (the state delta between two source
offsets, `base` -> `end`), so the state and the offset it corresponds to are always saved
together, atomically, without transactions. Recovery applies the deltas in order; a delta whose
`base` is not the current `end` (a zombie or stale writer after a rebalance) is skipped.
Changelog partitions equal source partitions.

Stage 1 (`recover_counters`): the local store (`IdStore`) IS the state after one changelog
record (it records which), so a restart on the same disk reads only the changelog after it; a
store the changelog no longer continues (retention passed it, or the topic was recreated) is
discarded. Stage 2 (`recover`): its state is small (open minutes only); the local RocksDB keeps
its deltas keyed by changelog offset (`LocalDeltas`), pruned once expired.

Both run the CPU work of applying records in a thread, a bounded slice at a time: the event
loop keeps serving the consumer group's heartbeats, so a worker restoring a large state is
never taken out of the group (before this, a restore ran on the loop for longer than the
session timeout, was kicked out, and started again: issue 11).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

_KEY = struct.Struct(">Q")
_BOUND = struct.Struct(">q")


class Recoverable(Protocol):
    next_offset: int | None
    content_bound: int

    def apply(self, data: bytes) -> bool: ...


def expired_before(watermark: int, horizon_ms: int, lateness_ms: int) -> int:
    """Content bound below which a delta can no longer matter: its ids are past the dedup
    horizon and its windows past allowed lateness (plus two minutes of margin)."""
    return watermark - (3 * 60_000 + max(horizon_ms, lateness_ms))


class LocalDeltas:
    """The partition's deltas already read from (or written to) the changelog, on local disk.

    Each value is prefixed with the delta's content bound (the largest event time it can
    mention), so deltas whose whole content has expired can be pruned (`prune`)."""

    def __init__(self, path: Path) -> None:
        from rocksdict import Rdict

        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path))

    def items(self):
        for key, value in self._db.items():
            yield _KEY.unpack(key)[0], value[_BOUND.size :]

    def put(self, changelog_offset: int, delta: bytes, bound: int) -> None:
        self._db[_KEY.pack(changelog_offset)] = _BOUND.pack(bound) + delta

    def prune(self, expired_before: int) -> int:
        """Delete deltas whose content bound < `expired_before`, always keeping the newest:
        recovery starts from the oldest kept delta (everything older had expired anyway)."""
        doomed = []
        for key, value in self._db.items():
            if _BOUND.unpack(value[: _BOUND.size])[0] < expired_before:
                doomed.append(key)
        last = self._db.keys(backwards=True)
        newest = next(iter(last), None)
        for key in doomed:
            if key != newest:
                del self._db[key]
        return len(doomed)

    def close(self) -> None:
        self._db.close()


_SLICE_BYTES = 8 << 20  # changelog bytes applied per thread hop


def _changelog_consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
        max_partition_fetch_bytes=32 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )


def _apply_slice(counter, msgs) -> int:
    return sum(counter.apply(m.value, m.offset) for m in msgs)


async def recover_counters(
    bootstrap: str,
    targets: dict[TopicPartition, object],
    reset: Callable[[TopicPartition, int, int], object],
    progress: Callable[[TopicPartition, int, int], None] | None = None,
) -> dict[TopicPartition, int]:
    """Bring each stage-1 counter (keyed by its changelog partition) up to the changelog's end.

    A counter resumes after the changelog record its store last flushed. An empty store, or a
    stale one (the changelog no longer holds the records right after it, or ends before it:
    the topic was recreated), is replaced by `reset(tp, begin, end)` (blocking, run in a
    thread): a counter restored from a snapshot the changelog [begin, end) continues, or an
    empty one, which reads the changelog from its beginning. Returns deltas applied."""
    applied = {tp: 0 for tp in targets}
    if not targets:
        return applied
    consumer = _changelog_consumer(bootstrap)
    await consumer.start()
    try:
        tps = list(targets)
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        pending = set()
        for tp in tps:
            start = targets[tp].ids.meta.changelog_offset + 1
            stale = start < begins[tp] or start > ends[tp]
            if stale and start > 0:
                log.warning(
                    "%s: local state at changelog offset %d, changelog holds [%d, %d): discarded",
                    tp,
                    start - 1,
                    begins[tp],
                    ends[tp],
                )
            if stale or (start == 0 and ends[tp] > begins[tp]):
                targets[tp] = await asyncio.to_thread(reset, tp, begins[tp], ends[tp])
                start = max(targets[tp].ids.meta.changelog_offset + 1, begins[tp])
            if start < ends[tp]:
                consumer.seek(tp, start)
                pending.add(tp)
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=2000)
            for tp, msgs in batch.items():
                i = 0
                while i < len(msgs):  # a thread hop per slice: the loop runs in between
                    j, size = i, 0
                    while j < len(msgs) and size < _SLICE_BYTES:
                        size += len(msgs[j].value)
                        j += 1
                    applied[tp] += await asyncio.to_thread(_apply_slice, targets[tp], msgs[i:j])
                    i = j
                if progress is not None and msgs:
                    progress(tp, msgs[-1].offset + 1, ends[tp])
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return applied


async def recover(
    bootstrap: str,
    targets: dict[TopicPartition, tuple[Recoverable, LocalDeltas]],
) -> dict[TopicPartition, int]:
    """Rebuild each processor from local deltas + the changelog tail; returns deltas applied."""
    applied: dict[TopicPartition, int] = {}
    start: dict[TopicPartition, int] = {}
    for tp, (proc, local) in targets.items():
        last = -1
        n = 0
        for offset, delta in local.items():
            n += proc.apply(delta)
            last = offset
            if n % 64 == 0:
                await asyncio.sleep(0)  # heartbeats
        applied[tp], start[tp] = n, last + 1
    if not targets:
        return applied
    consumer = _changelog_consumer(bootstrap)
    await consumer.start()
    try:
        consumer.assign(list(targets))
        ends = await consumer.end_offsets(list(targets))
        pending = set()
        for tp in targets:
            if start[tp] < ends[tp]:
                consumer.seek(tp, start[tp])
                pending.add(tp)
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, msgs in batch.items():
                proc, local = targets[tp]
                for n, msg in enumerate(msgs):
                    applied[tp] += proc.apply(msg.value)
                    local.put(msg.offset, msg.value, proc.content_bound)
                    if n % 64 == 63:
                        await asyncio.sleep(0)  # heartbeats
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return applied
