"""Kafka's standard key partitioner: murmur2 of the key, made positive, modulo the partitions.

This is the Java client's `Utils.toPositive(Utils.murmur2(key)) % numPartitions` (also Kafka
Streams, Connect, Flink, Spark) and librdkafka's `murmur2` / `murmur2_random` partitioners, so a
record keyed by `event_id` lands on the same partition whichever standard client writes it. The
stream's dedup is partition-local: every producer of `clicks` must place keys this way.

`partition_for` is on the capture's per-click path. A pure-Python murmur2 costs ~4.8 us per
32-byte key (measured, docs/capture.md), a quarter of a click's budget at 21k clicks/s; so the hot
path calls librdkafka's own exported partitioner (`rd_kafka_msg_partitioner_murmur2`, public in
rdkafka.h) in the librdkafka that confluent-kafka already loaded: ~0.45 us, and bit-identical to
librdkafka by construction. `murmur2` below is the plain reference (and the fallback where no
librdkafka can be found); tests hold all three (reference, librdkafka, Java) to one answer.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import zlib
from collections.abc import Callable

log = logging.getLogger("clickagg.partitioner")

SEED = 0x9747B28C  # Kafka's murmur2 seed
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (32-bit MurmurHash2, seed 0x9747b28c, little-endian words) as a signed
    32-bit int, exactly what `org.apache.kafka.common.utils.Utils.murmur2` returns."""
    length = len(data)
    h = (SEED ^ length) & _MASK
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail == 3:
        h ^= data[end + 2] << 16
    if tail >= 2:
        h ^= data[end + 1] << 8
    if tail >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The reference placement (pure Python): `toPositive(murmur2(key)) % partitions`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's `consistent_random` (its old default, which this platform used before
    murmur2): only for reading or migrating a topic written that way (docs/operations.md)."""
    return zlib.crc32(key) % partitions


def _librdkafka_paths() -> list[str]:
    """The librdkafka confluent-kafka loaded (its wheel bundles one), else a system one."""
    import confluent_kafka  # noqa: F401 - loads librdkafka into this process

    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                if "librdkafka" in os.path.basename(path) and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    here = os.path.dirname(confluent_kafka.__file__)
    paths += sorted(glob.glob(os.path.join(here, os.pardir, "confluent_kafka.libs", "librdkafka*")))
    from ctypes.util import find_library

    found = find_library("rdkafka")
    return paths + ([found] if found else [])


def _native() -> Callable[[bytes, int], int] | None:
    for path in _librdkafka_paths():
        try:
            # PyDLL: keeps the GIL (a few hundred ns of pure C: releasing it costs more)
            fn = ctypes.PyDLL(path).rd_kafka_msg_partitioner_murmur2
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int32
        fn.argtypes = (
            ctypes.c_void_p,  # topic: not read by this partitioner
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_int32,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )

        def native(key: bytes, partitions: int, fn=fn) -> int:
            return fn(None, key, len(key), partitions, None, None)

        # the one key every test vector set starts with: refuse a library that disagrees
        if all(native(k, 1 << 30) == murmur2_partition(k, 1 << 30) for k in (b"", b"21", b"abc")):
            return native
    return None


def _select() -> tuple[Callable[[bytes, int], int], str]:
    native = _native()
    if native is not None:
        return native, "librdkafka"
    log.warning("librdkafka's murmur2 partitioner not found: using the pure-Python one (slower)")
    return murmur2_partition, "python"


_partition, IMPLEMENTATION = _select()


def partition_for(key: bytes, partitions: int) -> int:
    """Partition of a keyed record in a topic of `partitions` partitions (murmur2, like Java)."""
    if partitions <= 0:
        raise ValueError(f"partitions must be positive, got {partitions}")
    return _partition(key, partitions)
