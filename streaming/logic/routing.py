"""Stage 1 -> stage 2 routing: which forward-topic partition owns an IP, and the batches."""

from __future__ import annotations

import zlib

from streaming.logic.counter import ClickCounter
from streaming.logic.iprate import encode_forwards
from streaming.logic.windows import NO_WATERMARK


def ip_partition(ip_hash: str, partitions: int) -> int:
    """Stable across processes and Python runs (never the salted built-in `hash`).
    `ClickCounter` routes each forward with this rule as it encodes it. CRC-32, not Kafka's
    murmur2, on purpose: the by-ip topic is written only by stage 1 with explicit partitions and
    read only by stage 2, so no Kafka partitioner or outside producer is involved, and CRC-32 is
    ~0.4 us per event cheaper (docs/streaming.md, "Assumptions and limits")."""
    return zlib.crc32(ip_hash.encode()) % partitions


def route_forwards(counter: ClickCounter) -> dict[int, bytes]:
    """Drain the counter's first occurrences into one encoded `ForwardBatch` per stage-2
    partition. Once the source has a watermark every target gets a batch, maybe empty: it
    carries the watermark to all of stage 2."""
    wm = counter.watermark
    return {
        q: encode_forwards(counter.partition, wm, n, rows)
        for q, (n, rows) in enumerate(counter.take_forwards())
        if n or wm != NO_WATERMARK
    }
