"""Helpers of the stream integration tests: produce seeded clicks with their Kafka placement,
run `faust -A streaming.app worker` as a subprocess (so it can be SIGKILLed), read hot totals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

from clickagg_platform.model import ClickEvent, encode_click
from clickagg_platform.settings import Settings
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


class Placed:
    """Every delivered record by partition in offset order (from the broker's delivery reports)."""

    def __init__(self) -> None:
        self.records: dict[int, list[tuple[int, ClickEvent]]] = {}

    def by_partition(self) -> dict[int, list[ClickEvent]]:
        return {p: [ev for _, ev in sorted(recs)] for p, recs in self.records.items()}


def produce(
    settings: Settings,
    events: list[ClickEvent],
    placed: Placed,
    partitioner: str = "murmur2_random",  # the platform's; "consistent_random" = before it
) -> None:
    p = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "partitioner": partitioner,
        }
    )
    errors = []

    def report(err, msg, ev):
        if err is not None:
            errors.append(err)
        else:
            placed.records.setdefault(msg.partition(), []).append((msg.offset(), ev))

    for ev in events:
        p.produce(
            settings.clicks_topic,
            encode_click(ev),
            key=ev.event_id.encode(),
            on_delivery=lambda err, msg, ev=ev: report(err, msg, ev),
        )
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors


def produce_raw(settings: Settings, values: list[bytes]) -> list[tuple[int, int]]:
    """Produce raw values (e.g. garbage); returns their (partition, offset)."""
    p = Producer({"bootstrap.servers": settings.bootstrap, "partitioner": "murmur2_random"})
    where: list[tuple[int, int]] = []
    for i, value in enumerate(values):
        p.produce(
            settings.clicks_topic,
            value,
            key=f"raw-{i}".encode(),
            on_delivery=lambda err, msg: where.append((msg.partition(), msg.offset())),
        )
    assert p.flush(30) == 0
    return where


def delete_internal_topics(settings: Settings, *app_ids: str) -> None:
    """Tests create the stream's internal topics per app id: remove them with the test."""
    from clickagg_platform import kafka_admin
    from streaming.topics import internal_topics

    a = kafka_admin.admin(settings)
    names = list(a.list_topics(timeout=10).topics)
    doomed = [t for app in app_ids for t in internal_topics(names, app, settings.clicks_topic)]
    if doomed:
        for fut in a.delete_topics(sorted(set(doomed))).values():
            try:
                fut.result(timeout=30)
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    def __init__(self, settings: Settings, state_dir: Path, app_id: str, **extra: str) -> None:
        self.port = free_port()
        self.log_path = state_dir.parent / f"worker-{state_dir.name}-{self.port}.log"
        self.env = {
            **os.environ,
            "CLICKAGG_CLICKS_TOPIC": settings.clicks_topic,
            "CLICKAGG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "CLICKAGG_CLICKS_PARTITIONS": str(settings.clicks_partitions),
            "CLICKAGG_STREAM_APP_ID": app_id,
            "CLICKAGG_STREAM_STATE_DIR": str(state_dir),
            "CLICKAGG_STREAM_WEB_PORT": str(self.port),
            "CLICKAGG_STREAM_ARCHIVE_WEB_PORT": str(self.port),
            "CLICKAGG_LAKE_URL": settings.lake_root,
            "CLICKAGG_STREAM_PUBLISH_INTERVAL_S": "0.5",
            "CLICKAGG_STREAM_CHECKPOINT_INTERVAL_S": "0.5",
            **extra,
        }
        self.proc: subprocess.Popen | None = None

    module = "streaming.app"

    def start(self) -> Worker:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", self.module, "worker", "-l", "info"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


class Feed:
    """Traffic in steps the test drives: `send(k)` produces the next k chunks of the events
    (acked before it returns), so a test places records exactly before, during and after the
    fault it injects, instead of timing a background producer."""

    def __init__(self, settings: Settings, events: list[ClickEvent], placed: Placed, chunks: int):
        size = len(events) // chunks + 1
        self.settings, self.placed = settings, placed
        self.chunks = [events[i : i + size] for i in range(0, len(events), size)]

    def send(self, k: int = 1) -> None:
        for chunk in self.chunks[:k]:
            produce(self.settings, chunk, self.placed)
        del self.chunks[:k]

    def rest(self) -> None:
        self.send(len(self.chunks))

    @property
    def left(self) -> int:
        return len(self.chunks)


class ArchiverProc(Worker):
    module = "streaming.archive_app"


def metric_value(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def totals(settings: Settings) -> Counter:
    from clickagg_platform.hot_queries import hot_totals

    try:
        rows = hot_totals(settings)
    except Exception:  # noqa: BLE001 - ClickHouse may be down in a fault test
        return Counter()
    return Counter({(int(m.timestamp() * 1000), c, a): n for (m, c, a), n in rows.items()})


def wait_equal(settings: Settings, want: Counter, timeout: float, workers=()) -> None:
    got: Counter = Counter()

    def equal() -> bool:
        nonlocal got
        got = totals(settings)
        return got == want

    try:
        wait_until(equal, timeout, "hot totals == truth", interval=0.3)
    except AssertionError:
        diff = {
            k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)
        }
        tails = "\n---\n".join(w.log_tail() for w in workers)
        raise AssertionError(
            f"hot totals != truth after {timeout}s: {len(diff)} keys differ, e.g. "
            f"{list(diff.items())[:5]}; sum got={sum(got.values())} want={sum(want.values())}\n"
            f"{tails}"
        ) from None


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
