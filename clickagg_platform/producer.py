"""An asyncio face for librdkafka's idempotent producer (acks=all).

`produce()` returns a future that resolves to None once the broker acked the record, or to an
error string. librdkafka batches, compresses and retries in its own C threads; delivery reports
are served by `poll(0)` from a task on the event loop itself, so callbacks resolve futures
directly: no poller thread fighting the event loop for the GIL, no cross-thread wake-ups (this
doubled as the biggest per-click saving on one core, see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from confluent_kafka import KafkaException, Producer

POLL_INTERVAL_S = 0.003


def producer_config(bootstrap: str, linger_ms: float = 5, **overrides) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        # Kafka's standard placement (the Java client's): the stream dedups per partition
        "partitioner": "murmur2_random",
        "linger.ms": linger_ms,
        "batch.num.messages": 10000,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
        "queue.buffering.max.messages": 500000,
        "socket.keepalive.enable": True,
        "reconnect.backoff.max.ms": 1000,
        "client.id": "clickagg-capture",
    }
    conf.update(overrides)
    return conf


class AsyncProducer:
    """Futures resolve to None (acked) or an error string, always within `ack_timeout_s`: a
    record librdkafka has not acked by then resolves to "ack timeout" (it may still be delivered
    later: a duplicate with the same key if the caller spools it)."""

    def __init__(self, topic: str, conf: dict, ack_timeout_s: float = 1.0):
        self.topic = topic
        self.ack_timeout_s = ack_timeout_s
        self._producer = Producer(conf)
        # one deadline queue swept by the poll task (the timeout is constant, so deadlines are
        # in order): far cheaper per click than a timer handle each
        self._waits: deque[tuple[float, asyncio.Future]] = deque()
        # kept, not looked up per click: on Python 3.11 get_running_loop() makes a getpid()
        # system call each time (fork detection), a measurable share of a click on one core
        self._loop = asyncio.get_running_loop()
        self._poller = self._loop.create_task(self._poll_loop(), name="kafka-poll")

    async def _poll_loop(self) -> None:
        poll, waits = self._producer.poll, self._waits
        while True:
            poll(0)
            now = time.monotonic()
            while waits and waits[0][0] <= now:
                fut = waits.popleft()[1]
                if not fut.done():
                    fut.set_result("ack timeout")
            await asyncio.sleep(POLL_INTERVAL_S)

    def produce(self, key: bytes, value: bytes) -> asyncio.Future:
        """Queue one record; the future resolves to None (acked) or an error string.

        Raises BufferError when librdkafka's local queue is full (the caller spools instead).
        """
        fut = self._loop.create_future()

        def on_delivery(err, _msg, fut=fut):
            if not fut.done():
                fut.set_result(None if err is None else str(err))

        # positional (topic, value, key, partition=-1 i.e. the partitioner's, callback): the
        # C call's keyword parsing costs about half a microsecond per click
        self._producer.produce(self.topic, value, key, -1, on_delivery)
        self._waits.append((time.monotonic() + self.ack_timeout_s, fut))
        return fut

    async def ready(self, timeout: float = 2.0) -> bool:
        """True when the cluster answers a metadata request for our topic within `timeout`."""
        try:
            await asyncio.to_thread(self._producer.list_topics, self.topic, timeout=timeout)
        except Exception:  # noqa: BLE001 - any failure means: not ready
            return False
        return True

    def flush(self, timeout: float = 10.0) -> int:
        return self._producer.flush(timeout)

    async def close(self, timeout: float = 10.0) -> int:
        """Wait (bounded) for what is queued to be acked; returns records left undelivered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self._producer) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._poller.cancel()
        left = len(self._producer)
        self._producer.poll(0)
        return left


__all__ = ["AsyncProducer", "producer_config", "KafkaException"]
