"""The archiver against a scripted consumer: a batch fetched before a rebalance (which seeks
every partition back to its block start) must not be archived, or the file for the block holds
some offsets twice. This raced in CI: 2,563 rows archived for 2,500 records."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import msgspec
import pyarrow.parquet as pq
from aiokafka import TopicPartition as TP

from clickagg_platform import lake
from clickagg_platform.settings import Settings
from streaming.archiver import Archiver
from streaming.config import StreamSettings
from tests.unit.stream_sim import make_events

TOPIC = "clicks"
TP0 = TP(TOPIC, 0)


def records(events, first: int) -> list:
    return [
        SimpleNamespace(
            partition=0, offset=first + i, timestamp=ev.event_time, value=msgspec.json.encode(ev)
        )
        for i, ev in enumerate(events)
    ]


class ScriptedConsumer:
    """getmany() hands out scripted batches; a rebalance can be fired while a batch is in
    flight, holding the archiver's lock while the run loop waits for it."""

    def __init__(self, archiver: Archiver, log: list, script: list) -> None:
        self.archiver, self.log, self.script = archiver, log, script
        self.release = asyncio.Event()
        self.listener_waiting = asyncio.Event()  # the listener holds the lock, in committed()
        self.position = 0

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        step = self.script.pop(0)
        if step == "stop":
            self.archiver._stopping = True
            return {}
        batch, rebalance = step
        if rebalance == "while-draining":
            loop = asyncio.get_running_loop()
            loop.create_task(self.archiver.on_partitions_assigned([TP0]))
            await self.listener_waiting.wait()
            # runs once the run loop, handed this batch, is blocked on the listener's lock
            loop.call_soon(self.release.set)
        elif rebalance == "before-draining":
            self.release.set()
            await self.archiver.on_partitions_assigned([TP0])  # seeks, then the batch drains
        return {TP0: batch} if batch else {}

    async def committed(self, tp: TP) -> int | None:
        self.listener_waiting.set()
        await self.release.wait()
        return None

    def seek(self, tp: TP, offset: int) -> None:
        self.log.append(("seek", offset))

    async def commit(self, offsets: dict) -> None:
        self.log.append(("commit", offsets[TP0]))

    def assignment(self) -> set:
        return {TP0}

    def highwater(self, tp: TP) -> int:
        return 10


def test_a_batch_fetched_before_a_rebalance_is_not_archived(tmp_path):
    settings = Settings(lake_url=f"file://{tmp_path}/lake", clicks_topic=TOPIC)
    ss = StreamSettings(archive_block_offsets=10, archive_flush_interval_s=3600)
    events = make_events(7, 10, bursts=0)[:10]
    full, stale = records(events, 0), records(events[4:8], 4)

    async def scenario() -> list:
        archiver = Archiver(settings, ss)
        log: list = []
        # 1. offsets 4..7 come back from a fetch while a rebalance seeks the partition to 0;
        # 2. the re-fetch from the block start then returns 0..9, completing the block
        script = [(stale, "while-draining"), (full, None), "stop"]
        archiver.consumer = ScriptedConsumer(archiver, log, script)
        await archiver.run()
        return log

    log = asyncio.run(scenario())
    assert log == [("seek", 0), ("commit", 10)]
    [f] = lake.raw_files(settings.lake_root, TOPIC)
    assert (f.first, f.last) == (0, 9)
    table = pq.read_table(f.url.removeprefix("file://"))
    assert table["kafka_offset"].to_pylist() == list(range(10))
    assert table["event_id"].to_pylist() == [ev.event_id for ev in events]


def test_a_batch_drained_after_the_seek_is_kept(tmp_path):
    settings = Settings(lake_url=f"file://{tmp_path}/lake", clicks_topic=TOPIC)
    ss = StreamSettings(archive_block_offsets=10, archive_flush_interval_s=3600)
    events = make_events(8, 10, bursts=0)[:10]

    async def scenario() -> list:
        archiver = Archiver(settings, ss)
        log: list = []
        script = [(records(events[:6], 0), "before-draining"), (records(events[6:], 6), None)]
        archiver.consumer = ScriptedConsumer(archiver, log, [*script, "stop"])
        await archiver.run()
        return log

    assert asyncio.run(scenario()) == [("seek", 0), ("commit", 10)]
    [f] = lake.raw_files(settings.lake_root, TOPIC)
    table = pq.read_table(f.url.removeprefix("file://"))
    assert table["kafka_offset"].to_pylist() == list(range(10))


def test_a_redelivered_offset_is_one_row():
    from streaming.archiver import Block

    block = Block(0, 0, 10)
    events = make_events(1, 3, bursts=0)[:3]
    for msg in records(events, 0) + records(events[1:], 1):
        block.add(msg)
    assert block.table()["kafka_offset"].to_pylist() == [0, 1, 2]


def test_seeks_drop_only_the_partitions_moved_after_the_drain():
    """The guard the stream runner and the archiver share (streaming/seeks.py)."""
    from streaming.seeks import Seeks

    class Consumer:
        def __init__(self):
            self.positions = {}

        def seek(self, tp, offset):
            self.positions[tp] = offset

    seeks, consumer = Seeks(), Consumer()
    tp1 = TP(TOPIC, 1)
    batch = {TP0: ["a"], tp1: ["b"]}
    snap = seeks.snapshot(batch)
    assert seeks.fresh(batch, snap) == batch  # nothing moved: all applied
    seeks.seek(consumer, TP0, 40)  # a listener re-positions partition 0 after the drain
    assert consumer.positions == {TP0: 40}
    assert seeks.fresh(batch, snap) == {tp1: ["b"]}
    seeks.invalidate(tp1)  # partition 1 revoked
    assert seeks.fresh(batch, snap) == {}
    later = seeks.snapshot(batch)  # drained after both: applied
    assert seeks.fresh(batch, later) == batch
