"""Fault injection: the broker dies during a load, the capture process is SIGKILLed while
clicks sit in the spool; every click still gets its 302 and ends up in Kafka."""

from __future__ import annotations

import asyncio
import signal
import threading

import httpx
import msgspec
import pytest

from clickagg_platform import kafka_admin
from clickagg_platform.partitioner import murmur2_partition
from tests.conftest import wait_until
from tests.helpers import capture_server, private_kafka, read_topic
from tests.integration.test_capture import expected_event_id, make_links

pytestmark = [pytest.mark.integration, pytest.mark.fault]


class Load:
    """Send links concurrently; a connection error is retried (same URL, same event_id)."""

    def __init__(self, base: str, links: list[dict], concurrency: int = 16):
        self.base, self.links, self.concurrency = base, links, concurrency
        self.statuses: dict[str, int] = {}
        self.done = threading.Event()

    async def _run(self) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        for link in self.links:
            queue.put_nowait(link)
        # connection failures are retried by the transport (with its own backoff); a request
        # cut mid-way is clicked again, as a user would (same link, same event_id)
        transport = httpx.AsyncHTTPTransport(retries=5)
        async with httpx.AsyncClient(base_url=self.base, timeout=30, transport=transport) as http:

            async def click(token: str) -> int:
                for _attempt in range(2):
                    try:
                        return (await http.get(f"/c/{token}")).status_code
                    except httpx.TransportError:
                        continue
                return (await http.get(f"/c/{token}")).status_code

            async def worker():
                while not queue.empty():
                    link = queue.get_nowait()
                    self.statuses[link["impression_id"]] = await click(link["token"])

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        self.done.set()

    def start(self) -> threading.Thread:
        t = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        t.start()
        return t


def _metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not exported")


def test_kafka_outage_and_capture_crash_lose_no_click(settings, tmp_path):
    links = make_links(settings, 1200, seed=11)
    phase_a, phase_b, phase_c = links[:300], links[300:900], links[900:]
    with private_kafka(tmp_path / "kafka") as (bootstrap, kafka):
        s = settings.model_copy(update={"kafka_bootstrap": bootstrap, "produce_timeout_ms": 500})
        kafka_admin.wait_for_broker(s)
        kafka_admin.ensure_topic(s)
        statuses: dict[str, int] = {}
        with capture_server(s, tmp_path / "capture1.log") as (base, proc):
            load = Load(base, phase_a)
            load.start().join(timeout=120)
            statuses.update(load.statuses)
            # the broker dies while a load is running
            load = Load(base, phase_b, concurrency=8)
            thread = load.start()
            wait_until(lambda: len(load.statuses) >= 100, 60, "100 clicks of phase B")
            kafka("kill")
            thread.join(timeout=180)
            assert load.done.is_set()
            statuses.update(load.statuses)
            wait_until(lambda: _metric(base, "clickagg_capture_spool_depth") > 0, 30, "spooling")
            assert _metric(base, "clickagg_capture_kafka_healthy") == 0
            assert _metric(base, "clickagg_capture_producer_failures_total") >= 1
            proc.send_signal(signal.SIGKILL)  # crash with clicks only in the spool
            proc.wait(timeout=10)
        with capture_server(s, tmp_path / "capture2.log") as (base, _):
            load = Load(base, phase_c)
            load.start().join(timeout=180)
            statuses.update(load.statuses)
            assert _metric(base, "clickagg_capture_spool_depth") > 0
            kafka("start")
            wait_until(
                lambda: _metric(base, "clickagg_capture_spool_depth") == 0,
                120,
                "the spool to drain after the broker returned",
            )
            assert _metric(base, "clickagg_capture_kafka_healthy") == 1
        assert statuses == {link["impression_id"]: 302 for link in links}
        records = read_topic(bootstrap, s.clicks_topic, expected=len(links), timeout=120)
    ids = [msgspec.json.decode(v)["event_id"] for _, v, _, _ in records]
    assert set(ids) == {expected_event_id(link["impression_id"]) for link in links}
    # duplicates are allowed only as the same event_id (a timed-out produce that later landed)
    assert all(key.decode() == msgspec.json.decode(v)["event_id"] for key, v, _, _ in records)
    # the spool drainer places its replays like the live path: Kafka's murmur2 of the key
    n = s.clicks_partitions
    assert all(part == murmur2_partition(key, n) for key, _, part, _ in records)
