"""Raw archive: every record of the source topic (duplicates, flagged and undecodable ones
included) to the lake as Parquet, one file per (partition, fixed offset block).

Own consumer group (`<app_id>-archiver`), own process (`faust -A streaming.archive_app worker`):
it never slows the hot path. Offsets are committed only when a block is complete, and a
(re)assigned partition restarts at the start of its current block, so every file is always
written from its block start and a replay rewrites the same names with the same rows.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as TP

from clickagg_platform import lake
from clickagg_platform.kafka_security import aiokafka_connection
from clickagg_platform.loadgen import REASON_BOT_UA, is_bot_user_agent
from clickagg_platform.model import CLICK_FIELDS, decode_click
from clickagg_platform.settings import Settings
from streaming import metrics as M
from streaming.config import StreamSettings
from streaming.seeks import Seeks

log = logging.getLogger("clickagg.archive")
HOUR_MS = 3_600_000


class Block:
    """Rows of one partition's offset block [first, first + size)."""

    def __init__(self, partition: int, first: int, size: int) -> None:
        self.partition, self.first, self.size = partition, first, size
        self.cols: dict[str, list] = {name: [] for name in lake.RAW_SCHEMA.names}
        self.last = -1  # last offset added
        self.flushed = -1  # last offset durable in a (partial) file
        self.partials: list[int] = []
        self.hours: set[int] = set()
        self.since = time.monotonic()

    @property
    def complete(self) -> bool:
        return self.last >= self.first + self.size - 1

    def add(self, msg) -> None:
        if msg.offset <= self.last:
            return  # re-delivered: one row per offset, never two
        cols = self.cols
        try:
            ev = decode_click(msg.value)
            for name in CLICK_FIELDS:
                cols[name].append(getattr(ev, name))
            cols["fraud_reason"].append(REASON_BOT_UA if is_bot_user_agent(ev.user_agent) else None)
            cols["decode_error"].append(None)
            cols["raw_value"].append(None)
            self.hours.add(ev.event_time - ev.event_time % HOUR_MS)
        except Exception as exc:  # noqa: BLE001 - archived as-is with the reason
            for name in CLICK_FIELDS:
                cols[name].append(None)
            cols["fraud_reason"].append(None)
            cols["decode_error"].append(str(exc)[:200])
            cols["raw_value"].append(msg.value)
        cols["kafka_partition"].append(msg.partition)
        cols["kafka_offset"].append(msg.offset)
        cols["kafka_timestamp"].append(msg.timestamp)
        self.last = msg.offset

    def table(self) -> pa.Table:
        return pa.table(self.cols, schema=lake.RAW_SCHEMA)


class Archiver(ConsumerRebalanceListener):
    def __init__(self, settings: Settings, ss: StreamSettings) -> None:
        self.s, self.ss = settings, ss
        self.root, self.topic = settings.lake_root, settings.clicks_topic
        self.size = ss.archive_block_offsets
        self.blocks: dict[TP, Block] = {}
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.seeks = Seeks()
        self._stopping = False

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            **aiokafka_connection(self.s),
            group_id=f"{self.ss.app_id}-archiver",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=self)

    async def on_partitions_revoked(self, revoked) -> None:
        async with self.lock:
            for tp in revoked:
                self.seeks.invalidate(tp)
                self.blocks.pop(tp, None)  # the next owner re-reads the block from its start

    async def on_partitions_assigned(self, assigned) -> None:
        async with self.lock:
            for tp in assigned:
                committed = await self.consumer.committed(tp)
                start = (committed or 0) // self.size * self.size
                self.seeks.seek(self.consumer, tp, start)
                self.blocks.pop(tp, None)

    async def run(self) -> None:
        while not self._stopping:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=20_000)
            snap = self.seeks.snapshot(batch)
            async with self.lock:
                for tp, msgs in self.seeks.fresh(batch, snap).items():
                    for msg in msgs:
                        await self._add(tp, msg)
                await self._flush_partials(force=False)
                self._lag()

    async def _add(self, tp: TP, msg) -> None:
        first = msg.offset // self.size * self.size
        block = self.blocks.get(tp)
        if block is not None and block.first != first:
            await self._flush_full(tp, block)  # a later block started: this one is complete
            block = None
        if block is None:
            block = self.blocks[tp] = Block(tp.partition, first, self.size)
        block.add(msg)
        if block.complete:
            await self._flush_full(tp, block)

    async def _write(self, block: Block, last: int) -> None:
        url = lake.raw_file_url(self.root, self.topic, block.partition, block.first, last)
        table = block.table()
        hours = sorted(block.hours)

        def io() -> None:
            lake.write_table(url, table, self.s)
            for h in hours:
                lake.touch(
                    lake.hour_marker_url(
                        self.root, self.topic, h, block.partition, block.first, last
                    ),
                    self.s,
                )

        await asyncio.to_thread(io)
        M.ARCHIVE_FILES.inc()
        M.ARCHIVE_ROWS.inc(table.num_rows)

    async def _flush_full(self, tp: TP, block: Block) -> None:
        last = block.first + self.size - 1
        await self._write(block, last)
        stale = [
            url
            for p_last in block.partials
            for url in [
                lake.raw_file_url(self.root, self.topic, block.partition, block.first, p_last)
            ]
            + [
                lake.hour_marker_url(self.root, self.topic, h, block.partition, block.first, p_last)
                for h in block.hours
            ]
        ]
        await asyncio.to_thread(lake.delete, stale, self.s)
        await self.consumer.commit({tp: last + 1})
        if self.blocks.get(tp) is block:
            del self.blocks[tp]

    async def _flush_partials(self, force: bool) -> None:
        now = time.monotonic()
        for block in list(self.blocks.values()):
            fresh = block.last > block.flushed
            if fresh and (force or now - block.since >= self.ss.archive_flush_interval_s):
                await self._write(block, block.last)
                block.partials.append(block.last)
                block.flushed, block.since = block.last, now

    def _lag(self) -> None:
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            block = self.blocks.get(tp)
            if hw is None:
                continue
            done = block.flushed + 1 if block and block.flushed >= 0 else None
            if done is None:
                done = block.first if block else hw
            M.ARCHIVE_LAG.labels(tp.partition).set(max(hw - done, 0))

    async def command(self, cmd: dict) -> dict:
        if cmd.get("cmd") == "flush":
            async with self.lock:
                await self._flush_partials(force=True)
            return {"flushed": True}
        return {"error": f"unknown command {cmd!r}"}

    async def stop(self) -> None:
        self._stopping = True
        try:
            async with self.lock:
                await self._flush_partials(force=True)
        except Exception as exc:  # noqa: BLE001 - a replay rewrites the same files
            log.warning("final archive flush failed: %r", exc)
        if self.consumer:
            await self.consumer.stop()
