"""soak-stream (`make soak-stream`): does the stream worker's memory stay flat when its state does?

The worker runs with the collector tuned for throughput (streaming/hosting.py: rare full
collections, frozen startup heap). If anything on its path made reference cycles, memory would
grow between the rare full collections. This feeds a fixed set of event ids over and over, with
fresh event times, so every click after the first round is a duplicate and the state stays the
same size; the worker's resident memory is printed every interval and must end within
`--tolerance-mib` of where it was after the first interval.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import msgspec
import typer
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_stream import make_click, metric, producer, stop_all  # noqa: E402
from benchmarks.procstat import rss_mib  # noqa: E402
from clickagg_platform import clickhouse, kafka_admin  # noqa: E402
from clickagg_platform.model import encode_click  # noqa: E402
from clickagg_platform.settings import Settings  # noqa: E402

console = Console()


def feed(settings: Settings, ids: int, rate: int, stop: threading.Event) -> None:
    """`rate` clicks/s cycling over `ids` distinct clicks, each with the current time."""
    rng, p = random.Random(3), producer(settings)
    clicks = [make_click(rng, i, 0) for i in range(ids)]
    i, tick = 0, 0.1
    while not stop.is_set():
        started = time.monotonic()
        now = int(time.time() * 1000)
        for _ in range(int(rate * tick)):
            ev = clicks[i % ids]
            ev = msgspec.structs.replace(ev, event_time=now, received_at=now)
            p.produce(settings.clicks_topic, encode_click(ev), key=ev.event_id.encode())
            i += 1
        p.poll(0)
        stop.wait(max(0.0, tick - (time.monotonic() - started)))  # pacing, not a condition
    p.flush(30)


def main(
    seconds: int = typer.Option(300, help="Length of the soak"),
    rate: int = typer.Option(20_000, help="Clicks/s fed to the worker"),
    ids: int = typer.Option(20_000, help="Distinct event ids cycled (the state's size)"),
    interval: int = typer.Option(15, help="Seconds between memory samples"),
    tolerance_mib: int = typer.Option(16, help="Allowed growth after the first sample"),
) -> None:
    tag = uuid.uuid4().hex[:6]
    settings = Settings(clicks_topic=f"soak_{tag}", clickhouse_database=f"soak_{tag}")
    kafka_admin.wait_for_broker(settings)
    kafka_admin.ensure_topic(settings)
    clickhouse.migrate(settings, log=lambda _m: None)
    state = settings.local_dir / "bench" / f"soak-{tag}"
    state.mkdir(parents=True, exist_ok=True)
    port = 16970 + random.randrange(9)
    env = {
        **os.environ,
        "CLICKAGG_CLICKS_TOPIC": settings.clicks_topic,
        "CLICKAGG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "CLICKAGG_STREAM_APP_ID": f"soak{tag}",
        "CLICKAGG_STREAM_WEB_PORT": str(port),
        "CLICKAGG_STREAM_STATE_DIR": str(state),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "streaming.app", "worker", "-l", "warn"],
        cwd=ROOT,
        env=env,
        stdout=open(state / "worker.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(settings, ids, rate, stop), daemon=True)
    feeder.start()
    samples: list[int] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            stop.wait(interval)
            samples.append(rss_mib(worker.pid))
            events = metric(port, "clickagg_stream_events_total")
            elapsed = len(samples) * interval
            console.print(f"{elapsed:>5} s  rss {samples[-1]} MiB  {events:,.0f} events")
    finally:
        stop.set()
        feeder.join(60)
        stop_all([worker])
        c = clickhouse.client(settings)
        c.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
        c.disconnect()
        kafka_admin.delete_topic(settings, settings.clicks_topic)
    growth = samples[-1] - samples[0]
    verdict = "flat" if growth <= tolerance_mib else "GROWING"
    console.print(f"memory after the first sample: {growth:+d} MiB ({verdict})")
    if growth > tolerance_mib:
        raise SystemExit(1)


if __name__ == "__main__":
    typer.run(main)
