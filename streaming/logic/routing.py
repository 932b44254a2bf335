"""Stage 1 -> stage 2 routing: which forward-topic partition owns an IP, and the batches."""

from __future__ import annotations

import zlib

from streaming.logic.counter import ClickCounter
from streaming.logic.iprate import ForwardBatch


def ip_partition(ip_hash: str, partitions: int) -> int:
    """Stable across processes and Python runs (never the salted built-in `hash`)."""
    return zlib.crc32(ip_hash.encode()) % partitions


def route_forwards(counter: ClickCounter, partitions: int) -> dict[int, ForwardBatch]:
    """Drain the counter's first occurrences into one batch per target partition. Every target
    gets a batch (maybe empty): it carries this source's watermark to all of stage 2."""
    wm = counter.watermark
    batches = {q: ForwardBatch(counter.partition, wm, []) for q in range(partitions)}
    for fwd in counter.take_forwards():
        batches[ip_partition(fwd.ip_hash, partitions)].records.append(fwd)
    return batches
