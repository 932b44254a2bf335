"""Kafka's murmur2 partitioner: the reference against Kafka's own test vectors, the fast
(librdkafka) path against the reference on many keys. Java itself is asked in
tests/integration/test_partitioning.py."""

from __future__ import annotations

import random

import pytest

from clickagg_platform import partitioner as P

# org.apache.kafka.common.utils.UtilsTest.testMurmur2: key -> Utils.murmur2(key)
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_reference_matches_kafkas_vectors():
    assert {k: P.murmur2(k) for k in KAFKA_VECTORS} == KAFKA_VECTORS


def test_fast_path_is_librdkafka_and_agrees_with_the_reference():
    assert P.IMPLEMENTATION == "librdkafka"  # confluent-kafka is a dependency: it must be found
    rng = random.Random(13)
    keys = [rng.randbytes(n) for n in range(41) for _ in range(50)]  # lengths 0..40, any byte
    keys += ["événement-ü-日本-🙂".encode()[:n] for n in range(30)]  # non-ASCII UTF-8
    keys += [f"{rng.getrandbits(128):032x}".encode() for _ in range(2000)]  # event ids
    for n in (1, 2, 3, 6, 7, 12, 64, 1000, (1 << 31) - 1):
        got = [P.partition_for(k, n) for k in keys]
        assert got == [P.murmur2_partition(k, n) for k in keys], n


def test_spread_is_uniform_over_event_ids():
    rng = random.Random(5)
    counts = [0] * 6
    for _ in range(60_000):
        counts[P.partition_for(f"{rng.getrandbits(128):032x}".encode(), 6)] += 1
    assert max(counts) - min(counts) < 600  # ~10k each; binomial sd ~91


def test_bad_partition_count_is_refused():
    with pytest.raises(ValueError, match="partitions must be positive"):
        P.partition_for(b"k", 0)


def test_legacy_crc32_placement_for_migration():
    # CRC-32 check value from the CRC catalogue: crc32("123456789") = 0xCBF43926
    assert P.crc32_partition(b"123456789", 6) == 0xCBF43926 % 6
