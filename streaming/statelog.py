"""Durable state: a delta changelog in Kafka, mirrored in a local RocksDB (rocksdict).

One checkpoint of one partition is ONE Kafka record (the state delta between two source
offsets, `base` -> `end`), so the state and the offset it corresponds to are always saved
together, atomically, without transactions. Recovery applies the deltas in order; a delta whose
`base` is not the current `end` (a zombie or stale writer after a rebalance) is skipped. The
local RocksDB holds the same deltas keyed by changelog offset, so a restart on the same disk
only reads the changelog's tail from Kafka; a worker that never owned the partition reads it
all. Changelog partitions equal source partitions.
"""

from __future__ import annotations

import logging
import struct
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
        applied[tp], start[tp] = n, last + 1
    if not targets:
        return applied
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
        max_partition_fetch_bytes=32 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
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
                for msg in msgs:
                    applied[tp] += proc.apply(msg.value)
                    local.put(msg.offset, msg.value, proc.content_bound)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return applied
