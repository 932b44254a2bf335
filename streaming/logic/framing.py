"""Framing of the stream's own payloads (checkpoint deltas, stage-1 -> stage-2 batches): zstd
level 1, compressed here rather than by the producer, whose zstd runs at level 3 with no knob
(measured on a 50,000-click delta: 0.34 us per click at level 1, 0.79 at level 3, both ~2.5x
smaller). Readers accept unframed msgpack too (records written before framing): a msgpack
array never starts with the zstd magic number."""

from __future__ import annotations

import cramjam

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LEVEL = 1


def pack(payload: bytes) -> bytes:
    return bytes(cramjam.zstd.compress(payload, level=LEVEL))


def unpack(data: bytes) -> bytes:
    if data[:4] == ZSTD_MAGIC:
        return bytes(cramjam.zstd.decompress(data))
    return data
