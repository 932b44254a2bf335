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
import contextlib
import logging
import shutil
import struct
import uuid
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
        self.path = path
        self._db = Rdict(str(path))
        self.lineage = uuid.uuid4().hex[:12]  # (snapshots name its files by it)

    def items(self):
        for key, value in self._db.items():
            yield _KEY.unpack(key)[0], value[_BOUND.size :]

    def last_offset(self) -> int | None:
        """The newest changelog offset held, if any."""
        newest = next(iter(self._db.keys(backwards=True)), None)
        return None if newest is None else _KEY.unpack(newest)[0]

    def checkpoint_to(self, target: Path) -> None:
        """A consistent on-disk copy (hard links) of the deltas held (for snapshots)."""
        from rocksdict import Checkpoint

        Checkpoint(self._db).create_checkpoint(str(target))

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
        if self._db is not None:
            self._db.close()
            self._db = None

    def destroy(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


_SLICE_BYTES = 8 << 20  # changelog bytes applied per thread hop


def _changelog_consumer(connection: dict) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **connection,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
        max_partition_fetch_bytes=32 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )


@contextlib.asynccontextmanager
async def _changelog(connection: dict, tps: list[TopicPartition]):
    """A consumer assigned to the changelog partitions, with their (begin, end) offsets."""
    consumer = _changelog_consumer(connection)
    await consumer.start()
    try:
        consumer.assign(tps)
        yield consumer, await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


def _apply_slice(counter, msgs) -> int:
    return sum(counter.apply(m.value, m.offset) for m in msgs)


async def recover_counters(
    connection: dict,
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
    async with _changelog(connection, list(targets)) as (consumer, begins, ends):
        starts = {}
        for tp in list(targets):
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
            starts[tp] = start
        await _read_to_end(
            consumer,
            starts,
            ends,
            lambda tp, msgs: _apply_slice(targets[tp], msgs),
            applied,
            progress,
        )
    return applied


async def _read_to_end(consumer, starts: dict, ends: dict, apply, applied: dict, progress=None):
    """Read each changelog partition from its start to the end offset taken at the start,
    handing `apply(tp, msgs)` (blocking: run in a thread) ~8 MiB at a time, so the event loop
    runs between slices."""
    pending = set()
    for tp, start in starts.items():
        if start < ends[tp]:
            consumer.seek(tp, start)
            pending.add(tp)
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=500)
        for tp, msgs in batch.items():
            for part in _slices(msgs, lambda m: len(m.value)):
                applied[tp] += await asyncio.to_thread(apply, tp, part)
            if progress is not None and msgs:
                progress(tp, msgs[-1].offset + 1, ends[tp])
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)


def _apply_local(proc, items) -> int:
    return sum(proc.apply(delta) for _offset, delta in items)


def _apply_and_keep(proc, local, msgs) -> int:
    n = 0
    for msg in msgs:
        n += proc.apply(msg.value)
        local.put(msg.offset, msg.value, proc.content_bound)
    return n


def _slices(items, size_of):
    """Consecutive slices of about `_SLICE_BYTES` each."""
    out, cur, size = [], [], 0
    for item in items:
        cur.append(item)
        size += size_of(item)
        if size >= _SLICE_BYTES:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


async def recover(
    connection: dict,
    targets: dict[TopicPartition, tuple[Recoverable, LocalDeltas]],
    reset: Callable[[TopicPartition, int, int], tuple[Recoverable, LocalDeltas]] | None = None,
) -> dict[TopicPartition, int]:
    """Rebuild each stage-2 processor from its local deltas + the changelog after them; returns
    deltas applied. Local deltas that the changelog no longer continues (retention passed them,
    or the topic was recreated), or none at all, are replaced by `reset(tp, begin, end)`
    (blocking: a snapshot's deltas, or an empty store). Applying runs in threads, a slice at a
    time (stage 2's deltas hold every changed (ip, minute): heavy)."""
    applied: dict[TopicPartition, int] = {tp: 0 for tp in targets}
    if not targets:
        return applied
    async with _changelog(connection, list(targets)) as (consumer, begins, ends):
        starts = {}
        for tp in list(targets):
            proc, local = targets[tp]
            last = local.last_offset()
            stale = last is not None and not begins[tp] <= last + 1 <= ends[tp]
            if reset is not None and (stale or (last is None and ends[tp] > begins[tp])):
                targets[tp] = await asyncio.to_thread(reset, tp, begins[tp], ends[tp])
                proc, local = targets[tp]
                last = local.last_offset()
            for part in _slices(list(local.items()), lambda item: len(item[1])):
                applied[tp] += await asyncio.to_thread(_apply_local, proc, part)
            starts[tp] = max(begins[tp], (last if last is not None else -1) + 1)
        await _read_to_end(
            consumer,
            starts,
            ends,
            lambda tp, msgs: _apply_and_keep(*targets[tp], msgs),
            applied,
        )
    return applied
