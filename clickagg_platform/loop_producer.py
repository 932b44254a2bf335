"""An idempotent, acks=all Kafka producer that runs on the event loop itself: no client threads.

Why (docs/capture.md, "The loop producer"): on one core, librdkafka's broker thread shares the
core with the event loop, and every wake-up of it (a linger timer per partition, a response per
partition, since librdkafka sends one ProduceRequest per partition) costs the loop its caches.
Measured in place: a `produce()` into librdkafka costs the loop 0.6 us per click when no broker
answers, but ~9 us per click (both threads) with a live broker. This producer instead appends each
record to its partition's batch (aiokafka's C record-batch builder), sends *one* request per
broker per linger interval carrying every partition's batch, and reads the responses in the
loop's own I/O callbacks.

Guarantees are those of an idempotent producer (producer id + per-partition sequence numbers,
acks=all, at most 5 requests in flight per connection), with one simplification: nothing is
retried here. On an error the producer fails what it has not sent (the capture service spools
it) and starts over with fresh metadata and a new producer id. A partition error fails only that
partition's records; requests in flight are left to settle by the broker's answers. A lost
connection or an ack timeout fails everything in flight: a batch that was in fact written is
re-sent later from the spool, a duplicate with the same `event_id` that the stream and the batch
drop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka.record.default_records import DefaultRecordBatchBuilder  # C if built

from clickagg_platform import kafka_wire as wire

log = logging.getLogger("clickagg.capture.producer")

MAX_IN_FLIGHT = 5  # the idempotent producer's limit per connection
BATCH_BYTES = 512 * 1024  # send a partition's batch early past this (brokers cap at 1 MiB)
BUILDER_LIMIT = 4 * 1024 * 1024  # aiokafka's own cap; ours above always comes first
MAX_QUEUED = 200_000  # records queued or in flight; past this, produce() refuses (spool it)
RETRY_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)
METADATA_REFRESH_S = 60.0  # partition count and leaders re-read this often
WATCH_INTERVAL_S = 0.02  # how often ack deadlines are checked (at most)


class _Connection(asyncio.Protocol):
    """One broker connection: framed requests out, responses dispatched by correlation id."""

    def __init__(self, client_id: str, on_lost: Callable[[_Connection, str], None]):
        self.client_id = client_id
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        # correlation id -> (sent at, callback(payload or None on failure)); insertion-ordered,
        # so the first entry is the oldest request
        self.pending: dict[int, tuple[float, Callable[[bytes | None], None]]] = {}
        self.next_id = 0
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            frames = wire.split_frames(self.buffer)
        except wire.WireError as exc:
            self.abort(f"bad response: {exc}")
            return
        for payload in frames:
            if self.closed:  # a callback failed the producer: the rest is moot
                return
            entry = self.pending.pop(wire.correlation_id(payload), None)
            if entry is None:
                self.abort("response to no request")
                return
            entry[1](payload)

    def connection_lost(self, exc) -> None:
        if not self.closed:
            self.closed = True
            self.on_lost(self, f"connection lost ({exc or 'closed by broker'})")

    def request(self, api: int, version: int, body: bytes, callback) -> None:
        if self.closed or self.transport is None:
            raise ConnectionError("connection closed")
        self.next_id = (self.next_id + 1) & 0x7FFFFFFF
        self.pending[self.next_id] = (time.monotonic(), callback)
        self.transport.write(wire.frame(api, version, self.next_id, self.client_id, body))

    async def call(self, api: int, version: int, body: bytes, timeout: float) -> bytes:
        fut = asyncio.get_running_loop().create_future()

        def done(payload):
            if not fut.done():
                fut.set_result(payload)

        self.request(api, version, body, done)
        payload = await asyncio.wait_for(fut, timeout)
        if payload is None:
            raise ConnectionError("connection closed")
        return payload

    def oldest(self) -> float | None:
        for sent_at, _ in self.pending.values():
            return sent_at
        return None

    def abort(self, reason: str, notify: bool = True) -> None:
        """Close now; every request still pending learns it failed (callback(None)). The owner
        hears of it (`on_lost`) unless it closes the connection itself (`notify=False`)."""
        was_closed, self.closed = self.closed, True
        if self.transport is not None:
            self.transport.abort()
        pending, self.pending = self.pending, {}
        for _, callback in pending.values():
            callback(None)
        if notify and not was_closed:
            self.on_lost(self, reason)


class _Batch:
    __slots__ = ("builder", "futures", "size", "started")

    def __init__(self, producer_id: int, epoch: int):
        self.builder = DefaultRecordBatchBuilder(2, 0, 0, producer_id, epoch, 0, BUILDER_LIMIT)
        self.futures: list[asyncio.Future] = []
        self.size = 0
        self.started = time.monotonic()


class LoopProducer:
    """`produce(key, value)` returns a future: None once the broker acked the record, or an
    error string, always within `ack_timeout_s` (a record not acked by then fails, and with it
    every record in flight: see the module doc). Raises BufferError while the producer is
    (re)connecting or its queue is full: the caller spools the click instead."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        linger_ms: float = 2.0,
        ack_timeout_s: float = 1.0,
        connect_timeout_s: float = 5.0,
        metadata_refresh_s: float = METADATA_REFRESH_S,
        client_id: str = "clickagg-capture",
        on_failure: Callable[[str], None] | None = None,
    ):
        self.bootstrap = [b.strip() for b in bootstrap.split(",") if b.strip()]
        self.topic = topic
        self.linger_s = linger_ms / 1000
        self.ack_timeout_s = ack_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.metadata_refresh_s = metadata_refresh_s
        self.on_failure = on_failure  # called with the reason each time the producer fails
        self.client_id = client_id
        self.up = False
        self.down_reason = "not connected yet"
        self._loop = asyncio.get_running_loop()
        self._conns: dict[int, _Connection] = {}
        self._leaders: list[int] = []
        self._partitions = 0
        self._seq: list[int] = []
        self._pid, self._epoch = -1, -1
        self._metadata_at = 0.0
        self._batches: dict[int, _Batch] = {}
        self._queued = 0  # records in batches or in flight
        self._timer: asyncio.TimerHandle | None = None
        self._held = False  # a flush found a connection at its in-flight limit
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task | None = None
        self._broker_timeout_ms = max(1, int(ack_timeout_s * 1000))
        self._watch_s = min(WATCH_INTERVAL_S, ack_timeout_s / 10)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, wait_s: float = 2.0) -> None:
        """Connect in the background; wait up to `wait_s` for the first connection (an
        unreachable cluster is not an error here: clicks spool until it answers)."""
        self._supervisor = self._loop.create_task(self._supervise(), name="kafka-producer")
        try:
            await asyncio.wait_for(self._connected.wait(), wait_s)
        except TimeoutError:
            log.warning("kafka not reachable at start (%s): clicks spool", self.down_reason)

    async def ready(self, timeout: float = 2.0) -> bool:
        """True once the producer is connected (waits up to `timeout`)."""
        if self.up:
            return True
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return self.up

    def __len__(self) -> int:
        return self._queued

    async def close(self, timeout: float = 10.0) -> int:
        """Send what is queued, wait (bounded) for the acks; returns records left unacked."""
        if self.up:
            self._flush()
        deadline = self._loop.time() + timeout
        while self._queued and self._loop.time() < deadline:
            if not (self.up or any(c.pending for c in self._conns.values())):
                break  # nothing that can still be acked
            await asyncio.sleep(0.01)
            if self.up and self._batches and self._timer is None:
                self._flush()
        left = self._queued
        if self._supervisor is not None:
            self._supervisor.cancel()
        self.up = False  # closing on purpose: not a failure worth a warning
        self._fail("producer closed", reconnect=False)
        return left

    # -- the per-click path --------------------------------------------------------------------

    def produce(self, key: bytes, value: bytes) -> asyncio.Future:
        if not self.up:
            raise BufferError(self.down_reason)
        if self._queued >= MAX_QUEUED:
            raise BufferError("local queue full")
        partition = wire.partition_for(key, self._partitions)
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = _Batch(self._pid, self._epoch)
        fut = self._loop.create_future()
        futures = batch.futures
        batch.builder.append(len(futures), int(time.time() * 1000), key, value, [])
        futures.append(fut)
        self._queued += 1
        batch.size += len(value) + len(key) + 24
        if batch.size >= BATCH_BYTES:
            self._flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self.linger_s, self._flush)
        return fut

    def _flush(self) -> None:
        """Send every partition's batch: one Produce request per leader broker."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = False
        if not self.up or not self._batches:
            return
        by_node: dict[int, list[int]] = {}
        for partition in self._batches:
            by_node.setdefault(self._leaders[partition], []).append(partition)
        for node, partitions in by_node.items():
            conn = self._conns[node]
            if len(conn.pending) >= MAX_IN_FLIGHT:
                self._held = True  # sent when a response frees a slot
                continue
            records, sent = [], []
            for partition in partitions:
                batch = self._batches.pop(partition)
                n = len(batch.futures)
                seq = self._seq[partition]
                self._seq[partition] = (seq + n) & 0x7FFFFFFF
                batch.builder.set_producer_state(self._pid, self._epoch, seq)
                records.append((partition, batch.builder.build()))
                sent.append((partition, batch.futures))
            body = wire.produce_request(self.topic, -1, self._broker_timeout_ms, records)

            def on_response(payload, sent=sent):
                self._on_produced(payload, sent)

            conn.request(wire.API_PRODUCE, wire.PRODUCE_VERSION, body, on_response)

    def _on_produced(self, payload: bytes | None, sent: list[tuple[int, list]]) -> None:
        request_error = None  # the request as a whole failed: no partition's fate is known
        errors: dict[int, int] = {}
        if payload is None:
            request_error = self.down_reason or "request failed"
        else:
            try:
                errors = wire.parse_produce(payload)
            except wire.WireError as exc:
                request_error = f"bad produce response: {exc}"
        failure = request_error
        for partition, futures in sent:
            self._queued -= len(futures)
            if request_error is not None:
                result = request_error
            else:
                code = errors.get(partition, -1)
                if code in (wire.ERROR_NONE, wire.ERROR_DUPLICATE_SEQUENCE):
                    result = None
                else:
                    result = "no answer for the partition" if code == -1 else wire.error_name(code)
                    failure = failure or f"partition {partition}: {result}"
            for fut in futures:
                if not fut.done():
                    fut.set_result(result)
        if request_error is not None:
            if self.up:
                self._fail(request_error)
        elif failure is not None:  # the broker answered, with an error: let the others settle
            self._fail(failure, settle=True)
        elif self._held:
            self._flush()

    # -- failure and reconnection --------------------------------------------------------------

    def _fail(self, reason: str, reconnect: bool = True, settle: bool = False) -> None:
        """Fail every record not yet sent, and every one in flight unless `settle`; the
        supervisor reconnects with fresh metadata and a new producer id (so sequence numbers
        start over).

        `settle` (the broker answered, with an error): requests already in flight keep their
        connection until they are answered, so their records resolve by what the broker
        actually did instead of spooling clicks that were in fact written (duplicates).
        """
        if self.up:
            log.warning("kafka producer failed: %s; unacked clicks will be spooled", reason)
            if self.on_failure is not None:
                self.on_failure(reason)
        self.up = False
        self.down_reason = reason
        self._connected.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batches, self._batches = self._batches, {}
        for batch in batches.values():
            self._queued -= len(batch.futures)
            for fut in batch.futures:
                if not fut.done():
                    fut.set_result(reason)
        if not settle:
            conns, self._conns = self._conns, {}
            for conn in conns.values():
                conn.abort(reason)  # pending requests' callbacks fail their futures
        if not reconnect and self._supervisor is not None:
            self._supervisor.cancel()

    def _on_lost(self, conn: _Connection, reason: str) -> None:
        if any(c is conn for c in self._conns.values()):  # not one we dropped ourselves
            self._fail(reason)

    async def _supervise(self) -> None:
        attempt = 0
        refresh: asyncio.Task | None = None
        while True:
            if self.up:
                now = time.monotonic()
                self._expire(now - self.ack_timeout_s)
                if now - self._metadata_at > self.metadata_refresh_s and (
                    refresh is None or refresh.done()
                ):
                    self._metadata_at = now
                    refresh = self._loop.create_task(self._check_metadata())
                await asyncio.sleep(self._watch_s)
                continue
            if self._conns:  # settling: answers are still due on the old connections
                if any(c.pending for c in self._conns.values()):
                    self._expire(time.monotonic() - self.ack_timeout_s)
                    await asyncio.sleep(self._watch_s)
                    continue
                conns, self._conns = self._conns, {}
                for conn in conns.values():
                    conn.abort("reconnecting", notify=False)
            try:
                await self._connect()
            except (OSError, TimeoutError, ConnectionError, wire.WireError) as exc:
                self.down_reason = f"kafka unreachable: {exc or type(exc).__name__}"
                await asyncio.sleep(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
                attempt += 1
                continue
            if attempt:
                log.warning("kafka producer connected again (producer id %d)", self._pid)
            attempt = 0

    async def _check_metadata(self) -> None:
        """Reconnect if the topic's partition count or leaders changed (a partition added, a
        leader moved without our requests noticing yet): the key -> partition map and the
        connections must follow what every other client of the topic sees."""
        conns = list(self._conns.values())
        if not conns:
            return
        try:
            meta, leaders = await self._metadata(conns[0])
        except (TimeoutError, ConnectionError, wire.WireError):
            return  # a dead connection is the watchdog's business
        if self.up and (meta.error or leaders != self._leaders):
            self._fail("topic metadata changed: reconnecting", settle=True)

    def _expire(self, cutoff: float) -> None:
        """Fail everything if a request or a batch is older than the ack timeout: the same
        bound the capture service promises a click (acked in time, or spooled)."""
        started = [c.oldest() for c in self._conns.values()]
        started += [b.started for b in self._batches.values()]
        oldest = min((t for t in started if t is not None), default=None)
        if oldest is not None and oldest < cutoff:
            self._fail(f"no ack within {self.ack_timeout_s:g}s")

    async def _metadata(self, conn: _Connection) -> tuple[wire.TopicMetadata, list[int]]:
        """The topic's metadata, and its leaders as a list indexed by partition (-1: none)."""
        payload = await conn.call(
            wire.API_METADATA,
            wire.METADATA_VERSION,
            wire.metadata_request(self.topic),
            self.connect_timeout_s,
        )
        meta = wire.parse_metadata(payload, self.topic)
        return meta, [meta.leaders.get(p, -1) for p in range(len(meta.leaders))]

    async def _open(self, host: str, port: int) -> _Connection:
        _, conn = await asyncio.wait_for(
            self._loop.create_connection(
                lambda: _Connection(self.client_id, self._on_lost), host, port
            ),
            self.connect_timeout_s,
        )
        return conn

    async def _connect(self) -> None:
        errors = []
        for address in self.bootstrap:
            host, _, port = address.rpartition(":")
            try:
                boot = await self._open(host.strip("[]") or "localhost", int(port))
                break
            except (OSError, TimeoutError, ValueError) as exc:
                errors.append(f"{address}: {exc or type(exc).__name__}")
        else:
            raise ConnectionError("; ".join(errors) or "no bootstrap server")
        conns: dict[int, _Connection] = {}
        try:
            meta, leaders = await self._metadata(boot)
            if meta.error or not leaders:
                raise ConnectionError(f"topic {self.topic!r}: {wire.error_name(meta.error)}")
            partitions = len(leaders)
            if min(leaders) < 0:
                raise ConnectionError(f"topic {self.topic!r}: a partition has no leader")
            error, pid, epoch = wire.parse_init_producer_id(
                await boot.call(
                    wire.API_INIT_PRODUCER_ID,
                    wire.INIT_PRODUCER_ID_VERSION,
                    wire.init_producer_id_request(),
                    self.connect_timeout_s,
                )
            )
            if error:
                raise ConnectionError(f"InitProducerId: {wire.error_name(error)}")
            for node in set(leaders):
                host, port = meta.brokers[node]
                conns[node] = await self._open(host, port)
        except BaseException:
            for conn in conns.values():
                conn.abort("connect failed", notify=False)
            raise
        finally:
            boot.abort("bootstrap done", notify=False)
        self._conns, self._leaders, self._partitions = conns, leaders, partitions
        self._seq = [0] * partitions
        self._pid, self._epoch = pid, epoch
        self._metadata_at = time.monotonic()
        self.up = True
        self.down_reason = ""
        self._connected.set()
