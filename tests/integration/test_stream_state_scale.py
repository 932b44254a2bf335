"""Faults at scale: the worker that is killed held at least 2,000,000 distinct event ids in its
local RocksDB stores (stage 1's dedup state), against the real Kafka and ClickHouse.

One topic is filled once for the module (4.3 M records, ~4 % exact duplicates, ~4.13 M
distinct ids over 52 minutes of event time) and each test runs its own app id (own consumer
group, changelogs, state dirs) and its own ClickHouse database (hot rows are per database), so
the three tests read the same records and never see each other's state or rows. Records that a
test adds are appended to the same topic, so the truth of every test is the whole topic.

The ground truth is a plain recount made while generating the records, independent of the
stream code: per (minute, campaign, ad), the number of distinct event ids. Nothing in this data
is a bot, too late or IP-rate fraud (browser user agents, event time increasing with the
record, an IP pool large enough for <= 3 clicks per IP and minute), so every first occurrence
is billable and every duplicate is not.

Why 4.3 M records: in the handover test the killed worker shares the partitions with another
one, so it holds only its half of the ids (~2.06 M); that half must still be >= 2 M.
"""

from __future__ import annotations

import ast
import math
import os
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from clickagg_platform.loadgen import IP_RATE_THRESHOLD, NORMAL_USER_AGENTS, is_bot_user_agent
from clickagg_platform.model import ClickEvent, encode_click
from clickagg_platform.settings import Settings
from tests.conftest import wait_until
from tests.integration.stream_harness import (
    Worker,
    delete_internal_topics,
    metric_value,
    now_ms,
    totals,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]

MIN = 60_000
FILL = 4_300_000  # records in the shared topic
DUP_FRACTION = 0.04  # exact copies of one of the last 1000 distinct records
HELD = 2_000_000  # ids the killed worker must hold
PROCESSED = 2_100_000  # records a worker has processed before it is killed (tests 1, 2)
IP_POOL = 50_021  # distinct ip_hash values, assigned round robin
CAMPAIGNS, ADS = 23, 4
assert not any(is_bot_user_agent(ua) for ua in NORMAL_USER_AGENTS)


class Traffic:
    """The shared topic: produces clicks and keeps the truth of everything produced so far."""

    def __init__(self, settings: Settings, seed: int, start_ms: int) -> None:
        self.settings = settings
        self.rng = random.Random(seed)
        self.truth: Counter = Counter()  # (minute ms, campaign, ad) -> distinct event ids
        self.sent = 0  # records produced (duplicates included)
        self.distinct = 0
        self.t = start_ms  # event time of the latest distinct click
        self._recent: list[tuple[bytes, bytes]] = []  # (key, value) of the last 1000 distinct
        self._producer = Producer(
            {
                "bootstrap.servers": settings.bootstrap,
                "enable.idempotence": True,  # no reordering or duplicates from retries
                "partitioner": "murmur2_random",  # the platform's placement
                "linger.ms": 20,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 1_000_000,
            }
        )

    def _produce(self, n: int, time_of) -> None:
        """n records; the k-th distinct click of this call gets event time `time_of(k)`."""
        rand, bits, recent = self.rng.random, self.rng.getrandbits, self._recent
        produce, poll, topic = (
            self._producer.produce,
            self._producer.poll,
            self.settings.clicks_topic,
        )
        truth, uas = self.truth, NORMAL_USER_AGENTS
        k = 0
        for j in range(n):
            if recent and rand() < DUP_FRACTION:
                key, value = recent[int(rand() * len(recent))]  # same event_id, same everything
            else:
                i = self.distinct
                et = time_of(k)
                k += 1
                eid = f"{bits(128):032x}"  # like the capture's ids: 32 lowercase hex digits
                campaign = f"c{i % CAMPAIGNS}"
                ad = f"{campaign}-a{(i // CAMPAIGNS) % ADS}"
                value = encode_click(
                    ClickEvent(
                        event_id=eid,
                        impression_id=f"imp-{eid[:20]}",
                        advertiser_id=f"adv{i % CAMPAIGNS % 5}",
                        campaign_id=campaign,
                        ad_id=ad,
                        publisher_id=f"pub{i % 11}",
                        event_time=et,
                        received_at=et + 40,
                        ip_hash=f"ip{i % IP_POOL:05d}",
                        user_agent=uas[i % len(uas)],
                        user_key=f"u{eid[:12]}",
                        token_key_id="k1",
                    )
                )
                key = eid.encode()
                truth[(et - et % MIN, campaign, ad)] += 1
                self.distinct += 1
                self.t = et
                if len(recent) < 1000:
                    recent.append((key, value))
                else:
                    recent[i % 1000] = (key, value)
            while True:
                try:
                    produce(topic, value, key=key)
                    break
                except BufferError:  # local queue full: let librdkafka send
                    poll(0.05)
            if j % 4096 == 0:
                poll(0)
        assert self._producer.flush(120) == 0
        self.sent += n

    def fill(self, n: int, span_ms: int) -> None:
        start = self.t
        self._produce(n, lambda k: start + k * span_ms // n)

    def more(self, n: int) -> None:
        """n more records (acked before it returns), event times continuing 1 ms apart."""
        last = self.t
        self._produce(n, lambda k: last + 1 + k)

    def check(self) -> None:
        """The truth is a plain recount: nothing in it can be IP-rate fraud, and the broker
        holds exactly what was produced (no delivery failed)."""
        per_minute: Counter = Counter()
        for (minute, _c, _a), n in self.truth.items():
            per_minute[minute] += n
        # distinct clicks are numbered in event-time order and get ip = number % IP_POOL, so a
        # minute's clicks are a run of consecutive numbers: <= ceil(run / pool) per IP
        assert math.ceil(max(per_minute.values()) / IP_POOL) <= 3 < IP_RATE_THRESHOLD
        assert sum(self.truth.values()) == self.distinct
        assert topic_records(self.settings, self.settings.clicks_topic) == self.sent

    def close(self) -> None:
        self._producer.flush(30)


def topic_records(settings: Settings, topic: str) -> int:
    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": f"probe-{uuid.uuid4()}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        c.close()


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    from clickagg_platform import kafka_admin

    uid = uuid.uuid4().hex[:10]
    root = tmp_path_factory.mktemp("scale")
    base = Settings(
        clicks_topic=f"clicks_s{uid}",
        clickhouse_database=f"clickagg_s{uid}",
        spool_dir=root / "spool",
        lake_url=f"file://{root / 'lake'}",
        signing_keys="k2:test-key-two,k1:test-key-one",
    )
    kafka_admin.wait_for_broker(base, timeout_s=60)
    kafka_admin.ensure_topic(base)
    t = Traffic(base, seed=20261207, start_ms=now_ms() - 3_600_000)
    t0 = time.monotonic()
    try:
        t.fill(FILL, span_ms=52 * MIN)  # event times now - 60 min .. now - 8 min
        t.check()
        print(f"\nfilled {t.sent} records ({t.distinct} distinct) in {time.monotonic() - t0:.1f}s")
        yield t
    finally:
        t.close()
        try:
            kafka_admin.delete_topic(base, base.clicks_topic)
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass


@dataclass
class Case:
    settings: Settings  # the shared topic, this test's ClickHouse database and lake
    app: str
    dir: Path
    workers: list[Worker]

    def worker(self, name: str, **extra: str) -> Worker:
        w = Worker(self.settings, self.dir / name, self.app, **extra)
        self.workers.append(w)
        return w


@pytest.fixture
def case(traffic, tmp_path, unique):
    from clickagg_platform import clickhouse

    s = traffic.settings.model_copy(
        update={
            "clickhouse_database": f"clickagg_t{unique}",
            "lake_url": f"file://{tmp_path / 'lake'}",
        }
    )
    clickhouse.migrate(s, log=lambda _m: None)
    c = Case(s, f"t{unique}", tmp_path, [])
    try:
        yield c
    finally:
        for w in c.workers:
            w.kill()
        delete_internal_topics(s, c.app)
        if os.environ.get("CLICKAGG_KEEP_TEST_DB") != "1":
            ch = clickhouse.client(s)
            try:
                ch.execute(f"DROP DATABASE IF EXISTS {s.clickhouse_database}")
            finally:
                ch.disconnect()


# --- reading a worker ------------------------------------------------------------------------
def scrape(worker: Worker) -> str:
    try:
        return worker.metrics()
    except Exception:  # noqa: BLE001 - not up yet (or being killed)
        return ""


def processed(text: str) -> float:
    return metric_value(text, "clickagg_stream_events_total")


_STATE_IDS = re.compile(r'^clickagg_stream_state_ids\{partition="(\d+)"\} (\S+)$', re.M)
_ASSIGNED = re.compile(r"\bassigned (\[.*?\]): (\d+) deltas applied in ([\d.]+)s")
_REVOKED = re.compile(r"\brevoked (\[.*?\])\s*$")


def state_ids(text: str) -> dict[int, int]:
    return {int(p): int(float(v)) for p, v in _STATE_IDS.findall(text)}


def by_label(text: str, name: str) -> dict[str, float]:
    """{label value: sample} of a metric with one label."""
    pattern = re.compile(rf'^{name}\{{\w+="([^"]*)"\}} (\S+)$', re.M)
    return {label: float(v) for label, v in pattern.findall(text)}


@dataclass
class Recovery:
    partitions: list[tuple[str, int]]
    deltas: int
    seconds: float


def log_events(worker: Worker) -> tuple[set[tuple[str, int]], list[Recovery]]:
    """The partitions the worker owns now and its recoveries, from its log (`runner._load`
    logs each assignment with what it applied; `on_partitions_revoked` each revocation)."""
    owned: set[tuple[str, int]] = set()
    recoveries = []
    for line in worker.log_path.read_text(errors="replace").splitlines():
        if m := _ASSIGNED.search(line):
            tps = ast.literal_eval(m[1])
            owned.update(tps)
            recoveries.append(Recovery(tps, int(m[2]), float(m[3])))
        elif m := _REVOKED.search(line):
            owned.difference_update(ast.literal_eval(m[1]))
    return owned, recoveries


def held_ids(worker: Worker, settings: Settings, text: str) -> int:
    """Ids in the local stores of the source partitions the worker owns now (the gauge of a
    partition it gave away keeps its last value, so it is not summed)."""
    owned, _ = log_events(worker)
    mine = {p for topic, p in owned if topic == settings.clicks_topic}
    ids = state_ids(text)
    return sum(ids.get(p, 0) for p in mine)


def owned_count(text: str) -> float:
    return metric_value(text, "clickagg_stream_assigned_partitions")


def changelog_records(settings: Settings, app: str) -> tuple[int, int]:
    """Records in stage 1's and stage 2's changelogs (every checkpoint ever written)."""
    prefix = f"{app}-{settings.clicks_topic}"
    return (
        topic_records(settings, f"{prefix}-counter-changelog"),
        topic_records(settings, f"{prefix}-iprate-changelog"),
    )


def wait_held(worker: Worker, settings: Settings, timeout: float, feed=None) -> tuple[int, str]:
    """Until the worker processed > PROCESSED records and holds >= HELD ids; returns the ids
    and the metrics it was read from (just before the caller kills the worker)."""
    seen: dict = {}
    last_feed = [0.0]

    def ready() -> bool:
        if feed is not None and time.monotonic() - last_feed[0] >= 1.0:
            feed()
            last_feed[0] = time.monotonic()
        text = scrape(worker)
        if not text:
            return False
        seen.update(text=text, processed=processed(text), held=held_ids(worker, settings, text))
        return seen["processed"] > PROCESSED and seen["held"] >= HELD

    try:
        wait_until(ready, timeout, f"> {PROCESSED} processed and >= {HELD} ids held", 0.2)
    except AssertionError:
        raise AssertionError(
            f"{seen.get('processed')} processed, {seen.get('held')} ids held\n{worker.log_tail()}"
        ) from None
    return seen["held"], seen["text"]


def wait_exact(settings: Settings, traffic: Traffic, timeout: float, workers) -> float:
    """Until the hot totals equal the truth (exactly); returns how long it took."""
    t0 = time.monotonic()
    got: Counter = Counter()

    def equal() -> bool:
        nonlocal got
        got = totals(settings)
        return got == traffic.truth

    try:
        wait_until(equal, timeout, "hot totals == truth", interval=1.0)
    except AssertionError:
        want = traffic.truth
        diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got[k] != want[k]}
        tails = "\n---\n".join(w.log_tail() for w in workers)
        raise AssertionError(
            f"hot totals != truth after {timeout}s: {len(diff)} keys differ, e.g. "
            f"{list(diff.items())[:5]}; sum got={sum(got.values())} want={sum(want.values())}"
            f"\n{tails}"
        ) from None
    return time.monotonic() - t0


def report(**figures) -> None:
    print("\n" + ", ".join(f"{k}={v}" for k, v in figures.items()))


# --- the tests -------------------------------------------------------------------------------
def kill_when_held(case: Case, worker: Worker, traffic: Traffic) -> tuple[int, float, int, int]:
    """Wait until the worker processed > PROCESSED records and holds >= HELD ids, SIGKILL it
    (mid-stream: records are still waiting), then put more clicks on the topic while it is
    dead. Returns ids held, records processed, and the records of both changelogs."""
    held, text = wait_held(worker, case.settings, 300)
    worker.kill()
    at_kill = processed(text)
    assert held >= HELD
    assert at_kill < traffic.sent  # mid-stream
    counter_cl, iprate_cl = changelog_records(case.settings, case.app)  # all it ever wrote
    traffic.more(5000)
    traffic.check()
    return held, at_kill, counter_cl, iprate_cl


def recovery_figures(worker: Worker) -> tuple[str, list[Recovery], dict[str, float], float]:
    text = scrape(worker)
    _, recoveries = log_events(worker)
    by_stage = by_label(text, "clickagg_stream_recovery_deltas_total")
    return text, recoveries, by_stage, metric_value(text, "clickagg_stream_recovery_seconds")


def test_sigkill_with_2m_ids_restart_same_dir(traffic, case):
    """SIGKILL mid-stream while holding >= 2 M ids; more clicks land while it is dead; the
    restart on the same disk resumes from its local stores: stage 1 reads only the changelog
    records its store had not flushed yet, not the whole changelog, and ends exact."""
    p = case.settings.clicks_partitions
    first = case.worker("w").start()
    held, at_kill, counter_cl, iprate_cl = kill_when_held(case, first, traffic)
    second = case.worker("w").start()  # same state dir
    took = wait_exact(case.settings, traffic, 300, [first, second])
    text, recoveries, by_stage, seconds = recovery_figures(second)
    report(
        held_at_kill=held,
        processed_at_kill=int(at_kill),
        changelog_records=dict(counter=counter_cl, iprate=iprate_cl),
        recoveries=[(len(r.partitions), r.deltas, r.seconds) for r in recoveries],
        deltas_by_stage=by_stage,
        recovery_seconds=round(seconds, 2),
        exact_after_s=round(took, 1),
    )
    assert recoveries and sum(r.deltas for r in recoveries) == sum(by_stage.values())
    # stage 1 applies at most the last record or two per partition its store had not flushed
    # when the worker died (per recovery), never its whole changelog
    assert by_stage["counter"] <= 2 * p * len(recoveries) < counter_cl, (by_stage, counter_cl)
    assert all(r.seconds < 30 for r in recoveries) and seconds < 30
    assert sum(state_ids(text).values()) >= held  # the ids are all still there


def test_sigkill_with_2m_ids_restart_fresh_dir(traffic, case):
    """The same kill, but the replacement runs on a new, empty disk: it rebuilds every
    partition's >= 2 M ids from the changelog and ends exact. (Snapshots are off: with them the
    new disk would start from a snapshot, which another test covers; this is the path without
    one, the whole changelog.)"""
    no_snapshots = {"CLICKAGG_STREAM_SNAPSHOT_INTERVAL_S": "0"}
    first = case.worker("w", **no_snapshots).start()
    held, at_kill, counter_cl, iprate_cl = kill_when_held(case, first, traffic)
    second = case.worker("fresh", **no_snapshots).start()
    took = wait_exact(case.settings, traffic, 300, [first, second])
    text, recoveries, by_stage, seconds = recovery_figures(second)
    rebuilt = sum(state_ids(text).values())
    report(
        held_at_kill=held,
        processed_at_kill=int(at_kill),
        changelog_records=dict(counter=counter_cl, iprate=iprate_cl),
        recoveries=[(len(r.partitions), r.deltas, r.seconds) for r in recoveries],
        deltas_by_stage=by_stage,
        recovery_seconds=round(seconds, 2),
        rebuilt_ids=rebuilt,
        exact_after_s=round(took, 1),
    )
    assert by_stage["counter"] >= counter_cl  # every stage-1 checkpoint read back from Kafka
    assert rebuilt >= held


def test_handover_then_sigkill_with_2m_ids(traffic, case):
    """Worker A builds the state; worker B (its own empty disk, same app id) joins and takes
    over some partitions, rebuilding them from the changelog; A, by then holding >= 2 M ids in
    the partitions it kept, is SIGKILLed; B takes over everything. Clicks keep arriving all
    along. Ends exact."""
    s, p = case.settings, case.settings.clicks_partitions
    a = case.worker("a").start()
    wait_held(a, s, 300)
    b = case.worker("b").start()
    wait_until(
        lambda: 0 < owned_count(scrape(b)) and 0 < owned_count(scrape(a)) < 2 * p,
        120,
        "a rebalance sharing the partitions between A and B",
        interval=0.5,
    )
    traffic.more(2000)  # traffic during the handover
    # A keeps consuming its partitions until it holds >= 2 M ids in them; a trickle of clicks
    # keeps checkpoints (and so the state gauges) coming once it has caught up
    held, text = wait_held(a, s, 300, feed=lambda: traffic.more(200))
    a_owned, _ = log_events(a)
    a.kill()
    naive = sum(state_ids(text).values())  # includes the stale gauges of the partitions B took
    traffic.more(3000)  # while B takes A's partitions over
    wait_until(lambda: owned_count(scrape(b)) == 2 * p, 120, "B owns all", interval=0.5)
    traffic.more(3000)
    traffic.check()
    took = wait_exact(s, traffic, 300, [a, b])
    text_b, recoveries, by_stage, _ = recovery_figures(b)
    report(
        held_at_kill=held,
        a_source_partitions=sorted(q for t, q in a_owned if t == s.clicks_topic),
        naive_gauge_sum_of_a=naive,
        b_recoveries=[(len(r.partitions), r.deltas, r.seconds) for r in recoveries],
        b_deltas_by_stage=by_stage,
        b_ids=sum(state_ids(text_b).values()),
        exact_after_s=round(took, 1),
    )
    assert held >= HELD
    assert len(recoveries) >= 2  # its first share, then A's partitions
