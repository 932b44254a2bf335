"""The few pieces of Kafka's wire protocol the capture's loop producer speaks (pure: no I/O).

Versions: Metadata v1, InitProducerId v0 and Produce v3 (record batches v2, the idempotent
producer's fields). Brokers from 0.11 up to 4.x answer all three (KIP-896 dropped only older
versions in 4.0). Responses of these versions use the plain v0 header: the correlation id, then
the body. Record batches themselves are built by aiokafka's C builder (CRC-32C and varints in C).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from clickagg_platform.partitioner import partition_for  # noqa: F401 - murmur2, like Java

API_PRODUCE = 0
API_METADATA = 3
API_INIT_PRODUCER_ID = 22

PRODUCE_VERSION = 3
METADATA_VERSION = 1
INIT_PRODUCER_ID_VERSION = 0

ERROR_NONE = 0
ERROR_DUPLICATE_SEQUENCE = 46  # the batch was already written: an ack, not a failure

ERROR_NAMES = {
    1: "OFFSET_OUT_OF_RANGE",
    2: "CORRUPT_MESSAGE",
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    5: "LEADER_NOT_AVAILABLE",
    6: "NOT_LEADER_OR_FOLLOWER",
    7: "REQUEST_TIMED_OUT",
    10: "MESSAGE_TOO_LARGE",
    15: "COORDINATOR_NOT_AVAILABLE",
    19: "NOT_ENOUGH_REPLICAS",
    20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    29: "TOPIC_AUTHORIZATION_FAILED",
    45: "OUT_OF_ORDER_SEQUENCE_NUMBER",
    46: "DUPLICATE_SEQUENCE_NUMBER",
    47: "INVALID_PRODUCER_EPOCH",
    53: "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    59: "UNKNOWN_PRODUCER_ID",
}

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_HEADER = struct.Struct(">ihhi")  # size, api key, api version, correlation id
_PART_HEAD = struct.Struct(">ii")  # partition, record set size
_PRODUCE_HEAD = struct.Struct(">hhi")  # null transactional id, acks, timeout


class WireError(ValueError):
    """A response that does not parse: the connection is no longer trustworthy."""


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"KAFKA_ERROR_{code}")


def _string(value: str) -> bytes:
    raw = value.encode()
    return _I16.pack(len(raw)) + raw


def frame(api_key: int, version: int, correlation_id: int, client_id: str, body: bytes) -> bytes:
    """A request on the wire: size, request header v1, body."""
    client = _string(client_id)
    size = _HEADER.size - 4 + len(client) + len(body)
    return _HEADER.pack(size, api_key, version, correlation_id) + client + body


def split_frames(buffer: bytearray) -> list[bytes]:
    """Remove the complete response frames from the front of `buffer`; return their payloads
    (correlation id first)."""
    frames = []
    start, end = 0, len(buffer)
    while end - start >= 4:
        (size,) = _I32.unpack_from(buffer, start)
        if size < 4:
            raise WireError(f"bad frame size {size}")
        if end - start - 4 < size:
            break
        frames.append(bytes(buffer[start + 4 : start + 4 + size]))
        start += 4 + size
    if start:
        del buffer[:start]
    return frames


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def _take(self, fmt: str, size: int):
        if self.pos + size > len(self.data):
            raise WireError("response truncated")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def i8(self) -> int:
        return self._take(">b", 1)

    def i16(self) -> int:
        return self._take(">h", 2)

    def i32(self) -> int:
        return self._take(">i", 4)

    def i64(self) -> int:
        return self._take(">q", 8)

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        if self.pos + n > len(self.data):
            raise WireError("response truncated")
        value = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return value

    def count(self) -> int:
        n = self.i32()
        if n < -1 or n > 1_000_000:
            raise WireError(f"bad array length {n}")
        return max(n, 0)


# Metadata v1 -------------------------------------------------------------------------------


class TopicMetadata(NamedTuple):
    brokers: dict[int, tuple[str, int]]  # node id -> (host, port)
    error: int  # the topic's error code
    leaders: dict[int, int]  # partition -> leader node id (-1: none right now)


def metadata_request(topic: str) -> bytes:
    return _I32.pack(1) + _string(topic)


def parse_metadata(payload: bytes, topic: str) -> TopicMetadata:
    r = _Reader(payload, 4)
    brokers = {}
    for _ in range(r.count()):
        node, host, port = r.i32(), r.string(), r.i32()
        r.string()  # rack
        brokers[node] = (host or "", port)
    r.i32()  # controller id
    error, leaders = 3, {}
    for _ in range(r.count()):
        t_error, name = r.i16(), r.string()
        r.i8()  # is internal
        parts = {}
        for _ in range(r.count()):
            p_error, partition, leader = r.i16(), r.i32(), r.i32()
            for _ in range(r.count()):  # replicas
                r.i32()
            for _ in range(r.count()):  # isr
                r.i32()
            parts[partition] = leader if p_error in (0, 9) else -1  # 9: replica not available
        if name == topic:
            error, leaders = t_error, parts
    return TopicMetadata(brokers, error, leaders)


# InitProducerId v0 -------------------------------------------------------------------------


def init_producer_id_request(transaction_timeout_ms: int = 60_000) -> bytes:
    return _I16.pack(-1) + _I32.pack(transaction_timeout_ms)  # no transactional id


def parse_init_producer_id(payload: bytes) -> tuple[int, int, int]:
    """(error code, producer id, producer epoch)."""
    r = _Reader(payload, 4)
    r.i32()  # throttle
    return r.i16(), r.i64(), r.i16()


# Produce v3 --------------------------------------------------------------------------------


def produce_request(
    topic: str, acks: int, timeout_ms: int, batches: list[tuple[int, bytes | bytearray]]
) -> bytes:
    """One request carrying a record batch for each of several partitions of one topic."""
    parts = [_PRODUCE_HEAD.pack(-1, acks, timeout_ms), _I32.pack(1), _string(topic)]
    parts.append(_I32.pack(len(batches)))
    for partition, records in batches:
        parts.append(_PART_HEAD.pack(partition, len(records)))
        parts.append(records)
    return b"".join(parts)


def parse_produce(payload: bytes) -> dict[int, int]:
    """Partition -> error code of a Produce v3 response (of our one topic)."""
    r = _Reader(payload, 4)
    errors = {}
    for _ in range(r.count()):
        r.string()
        for _ in range(r.count()):
            partition, error = r.i32(), r.i16()
            r.i64()  # base offset
            r.i64()  # log append time
            errors[partition] = error
    return errors


def correlation_id(payload: bytes) -> int:
    return _I32.unpack_from(payload)[0]
