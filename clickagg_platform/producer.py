"""An asyncio face for librdkafka's idempotent producer (acks=all).

`produce()` returns an awaitable that resolves to None once the broker acked the record, or to
an error string. librdkafka batches and retries in its own threads; one poller thread collects
delivery reports and hands them to the event loop in batches (one wake-up per poll, not one per
message), which keeps the per-click cost low.
"""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaException, Producer


def producer_config(bootstrap: str, linger_ms: int = 2, **overrides) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
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
    def __init__(self, topic: str, conf: dict, loop: asyncio.AbstractEventLoop | None = None):
        self.topic = topic
        self._producer = Producer(conf)
        self._loop = loop or asyncio.get_running_loop()
        self._done: list[tuple[asyncio.Future, str | None]] = []
        self._done_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.02)
            with self._done_lock:
                batch, self._done = self._done, []
            if batch:
                try:
                    self._loop.call_soon_threadsafe(_resolve, batch)
                except RuntimeError:  # loop closed during shutdown
                    return

    def produce(self, key: bytes, value: bytes) -> asyncio.Future:
        """Queue one record; the future resolves to None (acked) or an error string.

        Raises BufferError when librdkafka's local queue is full (caller spools instead).
        """
        fut = self._loop.create_future()

        def on_delivery(err, _msg, fut=fut):
            with self._done_lock:
                self._done.append((fut, None if err is None else str(err)))

        self._producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
        return fut

    def list_topics(self, timeout: float = 2.0):
        return self._producer.list_topics(self.topic, timeout=timeout)

    def flush(self, timeout: float = 10.0) -> int:
        return self._producer.flush(timeout)

    def close(self, timeout: float = 10.0) -> int:
        """Flush what is queued (bounded), stop the poller; returns records left undelivered."""
        left = self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2)
        return left


def _resolve(batch: list[tuple[asyncio.Future, str | None]]) -> None:
    for fut, err in batch:
        if not fut.done():
            fut.set_result(err)


__all__ = ["AsyncProducer", "producer_config", "KafkaException"]
