"""bench-stream, state at scale: stage 1 with tens of millions of ids already in its horizon,
the same run's in-memory stage 1 of the last commit before the RocksDB store as the baseline,
and how long a worker takes to be processing again after a crash, from its own disk and from
an empty one (snapshot + changelog tail).

Run by `bench_stream.py` (make bench-stream) after its empty-state phases:
1. A topic pre-filled with `ids` distinct clicks (event time advancing 10 clicks per ms) then
   `measured` clicks made like bench-stream's (5% duplicates, 5% up to 30 s out of order).
2. Stage 1 (`CLICKAGG_STREAM_STAGES=counter`) pinned to the measured core reads it all; its
   rate over the last `measured` records is the "with N ids in state" rate. ClickHouse must
   then hold exactly the benchmark's recount. RSS and state disk are read at that point.
3. Baseline: the in-memory stage 1 of `baseline_ref` (a git worktree of that commit, same
   virtualenv), over the first phase's topic (empty state), pinned to the same core.
4. SIGKILL, then restarts: on the same state dir, and on an empty one (the newest snapshot in
   the object store, then the changelog after it); each until a record produced after the kill
   is processed, from the process start (Faust's own start-up included).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.procstat import cpu_seconds, rocksdb_share, rss_mib, thread_cpu
from clickagg_platform.hot_queries import hot_totals
from clickagg_platform.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

_TEMPLATE = (
    b'{"event_id":"%s","impression_id":"i%d","advertiser_id":"adv1","campaign_id":"%s",'
    b'"ad_id":"%s","publisher_id":"pub1","event_time":%d,"received_at":%d,"ip_hash":"%s",'
    b'"user_agent":"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",'
    b'"user_key":"u%d","token_key_id":"k1","schema_version":1}'
)


def fill_state_topic(settings: Settings, ids: int, measured: int, seed: int, prefill) -> Counter:
    """`ids` distinct clicks (cheap to make: a byte template), then `measured` clicks from
    bench-stream's own generator; returns the recount per (minute, campaign, ad)."""
    from confluent_kafka import Producer

    rng = random.Random(seed)
    p = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",  # Kafka's standard placement, like the platform
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "batch.size": 1_000_000,
        }
    )
    want: Counter = Counter()
    start = int(time.time() * 1000) - ids // 10 - measured // 10 - 7_200_000
    camps = [f"c{i}".encode() for i in range(20)]
    for i in range(ids):
        eid = b"%032x" % rng.getrandbits(128)
        t = start + i // 10
        camp = camps[i % 20]
        ad = camp + b"-a%d" % (i % 3)
        value = _TEMPLATE % (eid, i, camp, ad, t, t, b"%016x" % rng.getrandbits(64), i)
        while True:
            try:
                p.produce(settings.clicks_topic, value, key=eid)
                break
            except BufferError:
                p.poll(0.05)
        want[(t - t % 60_000, camp.decode(), ad.decode())] += 1
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(300) == 0
    want.update(prefill(settings, measured, seed + 1))  # after the fill, in event time too
    return want


def _env(settings: Settings, app_id: str, state: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "CLICKAGG_CLICKS_TOPIC": settings.clicks_topic,
        "CLICKAGG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "CLICKAGG_STREAM_APP_ID": app_id,
        "CLICKAGG_STREAM_STAGES": "counter",
        "CLICKAGG_STREAM_STATE_DIR": str(state),
        "CLICKAGG_STREAM_WEB_PORT": str(port),
        "CLICKAGG_STREAM_PUBLISH_INTERVAL_S": "0.25",
        "CLICKAGG_STREAM_CHECKPOINT_INTERVAL_S": "1.0",
        "CLICKAGG_STREAM_SNAPSHOT_INTERVAL_S": "60",
        "CLICKAGG_LAKE_URL": f"file://{state.parent / 'lake'}",
    }


def _start(env: dict, core: int, log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    env = {**env, "PYTHONPATH": str(cwd)}
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "faust", "-A", "streaming.app"]
    return subprocess.Popen(
        [*cmd, "worker", "-l", "info"],
        cwd=cwd,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )


def _rate_over_tail(metric, port: int, proc, total: int, tail: int, deadline: float):
    """events/s and events per CPU-second of `proc` over its last `tail` of `total` records,
    and the share of that CPU in RocksDB's background threads (compactions, flushes)."""
    mark = None
    while time.time() < deadline:
        n = metric(port, "clickagg_stream_events_total")
        if mark is None and n >= total - tail:
            mark = (time.perf_counter(), n, cpu_seconds(proc.pid), thread_cpu(proc.pid))
        if n >= total:
            done = n - mark[1]
            return (
                done / (time.perf_counter() - mark[0]),
                done / (cpu_seconds(proc.pid) - mark[2]),
                rocksdb_share(mark[3], thread_cpu(proc.pid)),
            )
        if proc.poll() is not None:
            raise SystemExit(f"worker exited ({proc.returncode}); see its log")
        time.sleep(0.05)
    raise SystemExit("stage 1 never read the state topic")


def _expect(settings: Settings, want: Counter, deadline: float) -> None:
    expected = {(datetime.fromtimestamp(m / 1000, UTC), c, a): k for (m, c, a), k in want.items()}
    while time.time() < deadline:
        if hot_totals(settings) == expected:
            return
        time.sleep(0.5)
    raise SystemExit("worker totals never matched the recount (state phase)")


def state_phase(
    settings: Settings, ids: int, measured: int, core: int, state: Path, seed: int, prefill, metric
) -> dict:
    """Steps 1, 2 and 4 of the module docstring; returns the figures."""
    t0 = time.perf_counter()
    want = fill_state_topic(settings, ids, measured, seed, prefill)
    fill_s = time.perf_counter() - t0
    app_id = f"benchstate{uuid.uuid4().hex[:6]}"
    own = state / "own"
    port = 16800 + random.randrange(90)
    env = _env(settings, app_id, own, port)
    proc = _start(env, core, state / "worker-state.log")
    out: dict = {"fill_s": fill_s, "ids": ids}
    try:
        total = ids + measured
        rate, per_cpu, rocks = _rate_over_tail(
            metric, port, proc, total, measured, time.time() + 3600
        )
        out.update(rate=rate, per_cpu=per_cpu, rocksdb_share=rocks)
        _expect(settings, want, time.time() + 300)
        time.sleep(3)  # the gauges refresh every 2 s
        out["held"] = metric(port, "clickagg_stream_state_ids")
        out["disk"] = metric(port, "clickagg_stream_state_disk_bytes")
        out["rss_mib"] = rss_mib(proc.pid)
        out["snapshots"] = _wait_snapshots(settings, metric, port, settings.clicks_partitions)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    out["restart_own_s"], out["recovery_own_s"] = _restart(
        settings, env, core, state / "worker-own.log", metric, port
    )
    fresh = state / "fresh"
    env_fresh = {**env, "CLICKAGG_STREAM_STATE_DIR": str(fresh)}  # same lake: the snapshots
    out["restart_fresh_s"], out["recovery_fresh_s"] = _restart(
        settings, env_fresh, core, state / "worker-fresh.log", metric, port
    )
    out["restored"] = (state / "worker-fresh.log").read_text().count("restored the snapshot")
    return out


def _trickle(settings: Settings, producer, n: int) -> None:
    for i in range(n):
        eid = b"%032x" % random.getrandbits(128)
        t = int(time.time() * 1000)
        value = _TEMPLATE % (eid, i, b"c1", b"c1-a0", t, t, b"%016x" % i, i)
        producer.produce(settings.clicks_topic, value, key=eid)
    producer.flush(30)


def _wait_snapshots(settings: Settings, metric, port: int, partitions: int) -> float:
    """A snapshot of every partition taken after the state was complete (a checkpoint with
    progress takes one when due: a trickle of clicks keeps checkpoints coming meanwhile)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": settings.bootstrap, "partitioner": "murmur2_random"})
    before = metric(port, "clickagg_stream_snapshots_total")
    deadline = time.time() + 180
    while time.time() < deadline:
        if metric(port, "clickagg_stream_snapshots_total") >= before + partitions:
            break
        _trickle(settings, p, partitions * 5)
        time.sleep(1.0)
    return metric(port, "clickagg_stream_snapshots_total") - before


def _restart(settings: Settings, env: dict, core: int, log: Path, metric, port: int):
    """Produce a click, start a worker, seconds until it has processed it (and the worker's
    own clickagg_stream_recovery_seconds). The worker is stopped afterwards."""
    from confluent_kafka import Producer

    _trickle(
        settings,
        Producer({"bootstrap.servers": settings.bootstrap, "partitioner": "murmur2_random"}),
        120,
    )
    t0 = time.perf_counter()
    proc = _start(env, core, log)
    try:
        deadline = time.time() + 900
        while time.time() < deadline:
            if metric(port, "clickagg_stream_events_total") > 0:
                took = time.perf_counter() - t0
                return took, metric(port, "clickagg_stream_recovery_seconds")
            if proc.poll() is not None:
                raise SystemExit(f"worker exited ({proc.returncode}); see {log}")
            time.sleep(0.05)
        raise SystemExit(f"the restarted worker never processed a record; see {log}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def baseline(settings: Settings, ref: str, events: int, core: int, state: Path, metric):
    """The in-memory stage 1 of commit `ref` over the (empty-state) topic: events/s and per
    CPU-second over the whole topic, or None when the ref cannot be checked out here."""
    tree = state / f"baseline-{ref}"
    made = subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), ref],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        return None
    port = 16700 + random.randrange(90)
    env = _env(settings, f"benchbase{uuid.uuid4().hex[:6]}", state / "baseline-state", port)
    env["CLICKAGG_CLICKHOUSE_DATABASE"] = settings.clickhouse_database
    proc = _start(env, core, state / "worker-baseline.log", cwd=tree)
    try:
        first, deadline = None, time.time() + 900
        while time.time() < deadline:
            n = metric(port, "clickagg_stream_events_total")
            if n > 0 and first is None:
                first = (time.perf_counter(), n, cpu_seconds(proc.pid))
            if n >= events:
                done = n - first[1]
                return (
                    done / (time.perf_counter() - first[0]),
                    done / (cpu_seconds(proc.pid) - first[2]),
                )
            time.sleep(0.05)
        return None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
        shutil.rmtree(tree, ignore_errors=True)
