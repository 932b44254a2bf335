"""Kafka-or-spool durability for the capture service (see capture.py for the policy).

`DurableSink.write()` returns "kafka" once the broker acked the record, or "spooled" once the
spool's fsync covering it returned; it raises only if neither happened. Spool appends from
concurrent requests are group-committed (one write + fsync per batch). A drain task replays
sealed spool segments in order and deletes a segment only when every record in it was acked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from clickagg_platform.kafka_security import ErrorReporter, capture_client, librdkafka_config
from clickagg_platform.loop_producer import LoopProducer
from clickagg_platform.producer import AsyncProducer, producer_config
from clickagg_platform.settings import Settings
from clickagg_platform.spool import Spool, read_records

log = logging.getLogger("clickagg.capture.durable")

DRAIN_IDLE_S = 0.2
DRAIN_BACKOFF_MAX_S = 5.0
DRAIN_CHUNK = 2000


class DurableSink:
    def __init__(self, settings: Settings, metrics):
        self.settings = settings
        self.metrics = metrics
        self.timeout_s = settings.produce_timeout_ms / 1000
        self.kafka_healthy = True
        self.producer: LoopProducer | AsyncProducer | None = None
        self.spool: Spool | None = None
        self._queue: list[tuple[bytes, bytes, asyncio.Future]] = []
        self._writing = 0  # records handed to the spool writer, not yet fsynced
        self._wake_writer = asyncio.Event()
        self._wake_drain = asyncio.Event()
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spool-io")
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.spool = await loop.run_in_executor(
            self._io, Spool, self.settings.spool_path, self.settings.spool_segment_bytes
        )
        security = self.settings.kafka_security
        client, why = capture_client(security, self.settings.capture_producer)
        if why:
            log.warning("%s", why)
        log.info("capture producer: %s, kafka %s", client, security.describe())
        if client == "loop":
            self.producer = LoopProducer(
                self.settings.bootstrap,
                self.settings.clicks_topic,
                linger_ms=self.settings.producer_linger_ms,
                ack_timeout_s=self.timeout_s,
                on_failure=lambda _reason: self.metrics.producer_failures.inc(),
            )
            await self.producer.start()
        else:
            self.producer = AsyncProducer(
                self.settings.clicks_topic,
                producer_config(
                    self.settings.bootstrap,
                    self.settings.producer_linger_ms,
                    # refused credentials or TLS get an ERROR line (clicks spool meanwhile)
                    error_cb=ErrorReporter(log),
                    **librdkafka_config(security),
                ),
                ack_timeout_s=self.timeout_s,
            )
        self._depth = self.spool.depth
        self.metrics.spool_depth.set(self._depth)
        if self._depth:
            log.warning("spool holds %d clicks from a previous run: draining", self._depth)
        self.metrics.kafka_healthy.set(1)
        self._tasks = [
            asyncio.create_task(self._writer(), name="spool-writer"),
            asyncio.create_task(self._drainer(), name="spool-drainer"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake_drain.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._queue:  # appends that were accepted but not yet written: write them now
            await self._flush_queue()
        if self.producer is not None:
            left = await self.producer.close(10.0)
            if left:
                log.warning("%d produced clicks unacked at shutdown (they are also spooled)", left)
        if self.spool is not None:
            self.spool.close()
        self._io.shutdown(wait=True)

    @property
    def spool_depth(self) -> int:
        """Clicks that went the spool way and are not yet acked by Kafka (queued, being
        written, or on disk)."""
        return self._depth + len(self._queue) + self._writing

    def spool_writable(self) -> bool:
        return self.spool is not None and not self._stopping

    async def write(self, key: bytes, value: bytes) -> str:
        start = time.monotonic()
        if self.kafka_healthy and self.spool_depth == 0:
            # (inlined: this runs for every click, and each coroutine level costs)
            assert self.producer is not None
            try:
                fut = self.producer.produce(key, value)
            except BufferError as exc:  # queue full, or the producer is reconnecting
                err = str(exc) or "local queue full"
            except Exception as exc:  # noqa: BLE001 - any producer error means: spool it
                err = f"produce failed: {exc}"
            else:
                err = await fut  # the producer resolves it within the ack timeout
                if err is None:
                    self.metrics.kafka_latency.observe(time.monotonic() - start)
                    return "kafka"
            self._mark_unhealthy(err)
        await self._append(key, value)
        self.metrics.spool_latency.observe(time.monotonic() - start)
        return "spooled"

    def _mark_unhealthy(self, err: str) -> None:
        if self.kafka_healthy:
            log.warning("kafka not acking in time (%s): spooling clicks", err)
        self.kafka_healthy = False
        self.metrics.kafka_healthy.set(0)
        self._wake_drain.set()

    async def _append(self, key: bytes, value: bytes) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((key, value, fut))
        self._wake_writer.set()
        await fut

    async def _writer(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            if self._queue:
                await self._flush_queue()

    async def _flush_queue(self) -> None:
        batch, self._queue = self._queue, []
        self._writing += len(batch)
        records = [(k, v) for k, v, _ in batch]
        try:
            assert self.spool is not None
            await asyncio.get_running_loop().run_in_executor(
                self._io, self.spool.append_many, records
            )
        except Exception as exc:  # noqa: BLE001 - every waiter learns its click is not durable
            log.exception("spool append failed")
            self._writing -= len(batch)
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self._writing -= len(batch)
        self._depth += len(batch)
        self.metrics.spooled.inc(len(batch))
        self.metrics.spool_depth.set(self._depth)
        for _, _, fut in batch:
            if not fut.done():
                fut.set_result(None)
        self._wake_drain.set()

    async def _drainer(self) -> None:
        backoff = 0.5
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake_drain.wait(), DRAIN_IDLE_S)
            except TimeoutError:
                pass
            self._wake_drain.clear()
            if self.spool_depth == 0:
                # nothing to replay: Kafka counts as healthy again once it answers a metadata
                # request (a spool that just drained is proof enough, see below)
                if not self.kafka_healthy and await self._probe():
                    self._set_healthy()
                continue
            try:
                drained_all = await self._drain_once()
            except Exception:  # noqa: BLE001 - keep the drainer alive; retry with backoff
                log.exception("spool drain failed")
                drained_all = False
            if drained_all:
                backoff = 0.5
                if self.spool_depth == 0 and not self.kafka_healthy:
                    self._set_healthy()
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, DRAIN_BACKOFF_MAX_S)

    async def _probe(self) -> bool:
        assert self.producer is not None
        if not await self.producer.ready(2.0):
            await asyncio.sleep(0.5)
            return False
        return True

    def _set_healthy(self) -> None:
        log.warning("spool drained: clicks go straight to kafka again")
        self.kafka_healthy = True
        self.metrics.kafka_healthy.set(1)

    async def _drain_once(self) -> bool:
        """Replay sealed segments oldest first; True if every one was fully acked."""
        loop = asyncio.get_running_loop()
        spool, producer = self.spool, self.producer
        assert spool is not None and producer is not None
        segments = await loop.run_in_executor(self._io, spool.sealed)
        if not segments:
            segments = await loop.run_in_executor(self._io, spool.seal)
        for seg in segments:
            records = await loop.run_in_executor(self._io, lambda s=seg: list(read_records(s)))
            # in chunks: each chunk's acks are awaited before the next is sent, so a chunk
            # fits in the producer's ack timeout whatever the segment's size
            for i in range(0, len(records), DRAIN_CHUNK):
                futures = []
                try:
                    for key, value in records[i : i + DRAIN_CHUNK]:
                        futures.append(producer.produce(key, value))
                except BufferError as exc:  # the producer is reconnecting: retry later
                    await asyncio.gather(*futures)
                    self._mark_unhealthy(str(exc) or "local queue full")
                    return False
                errors = [e for e in await asyncio.gather(*futures) if e is not None]
                if errors:
                    # the segment is replayed whole later: records acked now are then sent
                    # again, duplicates with the same event_id (the stream drops them)
                    self._mark_unhealthy(errors[0])
                    return False
            await loop.run_in_executor(self._io, spool.remove, seg)
            self._depth -= len(records)
            self.metrics.drained.inc(len(records))
            self.metrics.spool_depth.set(self._depth)
        return True
