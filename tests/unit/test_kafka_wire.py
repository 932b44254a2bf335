"""Kafka wire pieces of the loop producer, against byte layouts written out by hand from the
protocol guide (kafka.apache.org/protocol), not produced by the code under test."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickagg_platform import kafka_wire as wire


def _s(text: str) -> bytes:
    return struct.pack(">h", len(text)) + text.encode()


def test_request_frame_layout():
    raw = wire.frame(3, 1, 77, "cap", b"BODY")
    # size | api key | api version | correlation id | client id | body
    assert raw == struct.pack(">ihhi", 2 + 2 + 4 + 5 + 4, 3, 1, 77) + _s("cap") + b"BODY"


@given(st.lists(st.binary(max_size=50), max_size=8), st.integers(1, 40))
def test_split_frames_reassembles_any_chunking(payloads, chunk):
    stream = b"".join(struct.pack(">ii", len(p) + 4, i) + p for i, p in enumerate(payloads))
    buffer, got = bytearray(), []
    for start in range(0, len(stream), chunk):
        buffer += stream[start : start + chunk]
        got += wire.split_frames(buffer)
    assert buffer == b""
    assert got == [struct.pack(">i", i) + p for i, p in enumerate(payloads)]
    assert [wire.correlation_id(f) for f in got] == list(range(len(payloads)))


def test_split_frames_rejects_a_nonsense_size():
    with pytest.raises(wire.WireError):
        wire.split_frames(bytearray(struct.pack(">i", 2) + b"xx"))


def _metadata_response(partitions: list[tuple[int, int, int]], topic_error: int = 0) -> bytes:
    body = struct.pack(">i", 9)  # correlation id
    body += struct.pack(">i", 2)  # brokers
    body += struct.pack(">i", 1) + _s("h1") + struct.pack(">i", 9092) + struct.pack(">h", -1)
    body += struct.pack(">i", 2) + _s("h2") + struct.pack(">i", 9093) + _s("rack-b")
    body += struct.pack(">i", 1)  # controller
    body += struct.pack(">i", 2)  # topics: another one first, then ours
    body += struct.pack(">h", 0) + _s("other") + b"\x00" + struct.pack(">i", 0)
    body += struct.pack(">h", topic_error) + _s("clicks") + b"\x00"
    body += struct.pack(">i", len(partitions))
    for error, partition, leader in partitions:
        body += struct.pack(">hii", error, partition, leader)
        body += struct.pack(">ii", 1, leader) + struct.pack(">ii", 1, leader)  # replicas, isr
    return body


def test_metadata_v1_response():
    meta = wire.parse_metadata(_metadata_response([(0, 0, 1), (0, 1, 2), (5, 2, -1)]), "clicks")
    assert meta.brokers == {1: ("h1", 9092), 2: ("h2", 9093)}
    assert meta.error == 0
    assert meta.leaders == {0: 1, 1: 2, 2: -1}
    assert wire.metadata_request("clicks") == struct.pack(">i", 1) + _s("clicks")


def test_metadata_for_a_missing_topic_is_an_error_not_a_crash():
    meta = wire.parse_metadata(_metadata_response([], topic_error=3), "clicks")
    assert meta.error == 3 and meta.leaders == {}
    assert wire.error_name(3) == "UNKNOWN_TOPIC_OR_PARTITION"


def test_truncated_responses_raise_wire_error():
    full = _metadata_response([(0, 0, 1)])
    for cut in range(4, len(full) - 1, 7):
        with pytest.raises(wire.WireError):
            wire.parse_metadata(full[:cut], "clicks")


def test_produce_v3_request_and_response():
    body = wire.produce_request("clicks", -1, 1000, [(0, b"AAAA"), (4, bytearray(b"BB"))])
    assert body == (
        struct.pack(">hhi", -1, -1, 1000)  # null transactional id, acks=all, timeout
        + struct.pack(">i", 1)
        + _s("clicks")
        + struct.pack(">i", 2)
        + struct.pack(">ii", 0, 4)
        + b"AAAA"
        + struct.pack(">ii", 4, 2)
        + b"BB"
    )
    response = struct.pack(">i", 5) + struct.pack(">i", 1) + _s("clicks") + struct.pack(">i", 2)
    response += struct.pack(">ihqq", 0, 0, 120, -1) + struct.pack(">ihqq", 4, 46, -1, -1)
    response += struct.pack(">i", 0)  # throttle
    assert wire.parse_produce(response) == {0: 0, 4: wire.ERROR_DUPLICATE_SEQUENCE}


def test_init_producer_id_v0():
    assert wire.init_producer_id_request(60_000) == struct.pack(">hi", -1, 60_000)
    response = struct.pack(">iihqh", 3, 0, 0, 4242, 0)
    assert wire.parse_init_producer_id(response) == (0, 4242, 0)


def test_partition_is_kafkas_murmur2_of_the_key():
    # vectors of Kafka's own UtilsTest.testMurmur2 (Java's signed result), then toPositive % n
    assert wire.partition_for(b"21", 1 << 30) == (-973932308 & 0x7FFFFFFF) % (1 << 30)
    assert wire.partition_for(b"foobar", 6) == (-790332482 & 0x7FFFFFFF) % 6
