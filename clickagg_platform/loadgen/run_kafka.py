"""Kafka target: produce the `ClickEvent` the capture would have produced, straight to the
clicks topic (stream benchmarks without the capture service in the way)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from confluent_kafka import Producer

from clickagg_platform.kafka_security import KafkaSecurity, librdkafka_config
from clickagg_platform.loadgen.pacing import LoadStats, backoff, drive, wall_ms
from clickagg_platform.loadgen.plan import LoadPlan
from clickagg_platform.loadgen.requests import PlannedRequest, simulate_capture
from clickagg_platform.loadgen.session import LoadResult, check_positive, finish, prepare
from clickagg_platform.loadgen.truth import SentClick
from clickagg_platform.model import encode_click
from clickagg_platform.settings import Settings, get_settings

DEFAULT_KAFKA_IN_FLIGHT = 10_000


class KafkaSink:
    """A minimal asyncio face for an idempotent, acks=all confluent-kafka Producer.

    Delivery reports are served by `poll(0)` from a task on the event loop, so callbacks
    resolve futures on the loop thread (no poller thread, no cross-thread wake-ups).
    """

    def __init__(self, bootstrap: str, topic: str, security: KafkaSecurity | None = None) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self._producer = Producer(
            {
                **librdkafka_config(security or KafkaSecurity()),
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",  # like every producer of clicks
                "linger.ms": 5,
                "batch.num.messages": 10000,
                "compression.type": "lz4",
                "message.timeout.ms": 30000,
                "queue.buffering.max.messages": 500000,
                "client.id": "clickagg-loadgen",
            }
        )
        self._poller: asyncio.Task | None = None

    async def start(self) -> None:
        """Check that the broker answers and the topic exists, then start serving callbacks."""
        try:
            metadata = await asyncio.to_thread(self._producer.list_topics, self.topic, 10.0)
        except Exception as exc:  # noqa: BLE001 - reported as one clear message
            raise RuntimeError(f"Kafka at {self.bootstrap} is not reachable: {exc}") from exc
        info = metadata.topics.get(self.topic)
        if info is None or info.error is not None:
            raise RuntimeError(f"topic {self.topic!r} is not available (run `clickagg topics`)")
        self._poller = asyncio.create_task(self._poll_loop(), name="loadgen-kafka-poll")

    async def _poll_loop(self) -> None:
        while True:
            self._producer.poll(0)
            await asyncio.sleep(0.003)

    def produce(self, key: bytes, value: bytes) -> asyncio.Future:
        """Queue one record; the future resolves to None (acked) or an error string.

        Raises BufferError when librdkafka's local queue is full (caller waits and retries).
        """
        fut = asyncio.get_running_loop().create_future()

        def on_delivery(err, _msg, fut=fut) -> None:
            if not fut.done():
                fut.set_result(None if err is None else str(err))

        self._producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
        return fut

    async def close(self, timeout_s: float = 30.0) -> int:
        """Stop polling and flush; returns the records still undelivered (0 when all awaited)."""
        if self._poller is not None:
            self._poller.cancel()
        return await asyncio.to_thread(self._producer.flush, timeout_s)


async def _send_kafka(
    producer: KafkaSink, req: PlannedRequest, max_attempts: int, stats: LoadStats
) -> SentClick:
    """Produce the ClickEvent the capture would have produced (key = event_id)."""
    attempts = 0
    while True:
        attempts += 1
        received = wall_ms()
        event = simulate_capture(req, received)
        while True:
            try:
                future = producer.produce(req.event_id.encode(), encode_click(event))
                break
            except BufferError:  # local queue full: back-pressure, not a failure
                await asyncio.sleep(0.005)
        error = await future
        if error is None or attempts >= max_attempts:
            break
        stats.retries += 1
        await asyncio.sleep(backoff(attempts))
    return SentClick(req, error is None, attempts, received, None, error)


async def run_kafka_load(
    plan: LoadPlan,
    manifest_path: Path | None = None,
    *,
    settings: Settings | None = None,
    topic: str | None = None,
    in_flight: int = DEFAULT_KAFKA_IN_FLIGHT,
    max_attempts: int = 3,
    stats: LoadStats | None = None,
) -> LoadResult:
    """Produce the plan's clicks straight to the topic (stream benchmarks, no capture)."""
    settings = settings or get_settings()
    topic = topic or settings.clicks_topic
    check_positive(in_flight=in_flight, max_attempts=max_attempts)
    producer = KafkaSink(settings.bootstrap, topic, settings.kafka_security)
    try:
        await producer.start()
        prep = prepare(plan, settings, stats)  # after connecting: its start time is "now"

        async def send(req: PlannedRequest) -> SentClick:
            return await _send_kafka(producer, req, max_attempts, prep.stats)

        interrupted = await drive(prep.requests, send, in_flight, prep.builder, prep.stats)
    finally:
        left = await producer.close()
    run = {"in_flight": in_flight, "max_attempts": max_attempts, "unflushed_at_close": left}
    endpoint = f"kafka://{settings.bootstrap}/{topic}"
    return finish(prep, "kafka", endpoint, run, manifest_path, interrupted)
