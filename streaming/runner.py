"""The worker's engine: one aiokafka consumer (group `<app_id>-<stages>`) over the source topic
(stage 1) and/or the IP-keyed forward topic (stage 2), checkpoints, and the ClickHouse publisher.

Why not a Faust agent per record: Faust's per-event stream machinery measured ~9k events/s on
this box against ~400k for a bare `getmany` + decode loop (docs/streaming.md), so the hot loop
fetches batches itself; Faust hosts it (lifecycle, web server, CLI). Correctness never relies on
Kafka's committed offsets: on assignment each partition resumes at the `end` offset of its own
recovered state (offsets are committed only for lag monitoring).
"""

from __future__ import annotations

import asyncio
import copy
import gc
import logging
import shutil
import time
from typing import NamedTuple

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as TP

from clickagg_platform.kafka_security import aiokafka_connection
from clickagg_platform.loadgen import is_bot_user_agent
from clickagg_platform.model import ClickEvent
from clickagg_platform.settings import Settings
from streaming import metrics as M
from streaming.config import StreamSettings
from streaming.logic.counter import ClickCounter, Outcome
from streaming.logic.idstore import IdStore, StoreMeta, StoreTuning
from streaming.logic.iprate import IpRateFlagger, decode_batch
from streaming.logic.routing import route_forwards
from streaming.logic.windows import NO_WATERMARK, LatenessPolicy
from streaming.publisher import Publisher
from streaming.seeks import Seeks
from streaming.sink import ClickHouseSink
from streaming.snapshots import SnapshotStore
from streaming.statelog import LocalDeltas, expired_before, recover, recover_counters
from streaming.topics import StreamTopics

log = logging.getLogger("clickagg.stream")


class _Taken(NamedTuple):
    """One partition's share of a checkpoint, taken (encoded) before it is written."""

    tp: TP
    forwards: dict[int, bytes]  # stage-2 partition -> encoded ForwardBatch
    delta: bytes
    content_bound: int
    next_offset: int
    proc: ClickCounter | IpRateFlagger
    local: LocalDeltas | None  # stage 2's local deltas (stage 1's store is the counter's)


_OUTCOME = {o: o.name.lower() for o in Outcome}
_decode = msgspec.json.Decoder(ClickEvent).decode  # = model.decode_click, minus one call


def _confirm_all(counters: list[tuple[ClickCounter, int]], due: list[tuple]) -> list[tuple]:
    """Flush acked deltas to the stage-1 stores; then checkpoint the local states due for a
    snapshot (in the same thread: no flush runs meanwhile, so each is exactly the state after
    its changelog record). Returns (tp, checkpoint dir, lineage, StoreMeta) per snapshot."""
    for counter, changelog_offset in counters:
        counter.confirm(changelog_offset)
    taken = []
    for tp, target, proc, local in due:
        try:  # a snapshot that fails is only a later one (never a failed checkpoint)
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            if local is None:  # stage 1: the store is the state
                proc.ids.checkpoint_to(target)
                lineage, meta = proc.ids.lineage, copy.copy(proc.ids.meta)
            else:  # stage 2: its local deltas (pruned to the open minutes) are the state
                local.checkpoint_to(target)
                lineage = local.lineage
                meta = StoreMeta(local.last_offset(), proc.next_offset, 0, seq=0)
        except Exception as exc:  # noqa: BLE001 - disk full, permissions: retried next time
            M.SNAPSHOT_FAILURES.inc()
            log.warning("snapshot checkpoint of %s failed: %r", tp, exc)
            continue
        taken.append((tp, target, lineage, meta))
    return taken


class StreamRunner(ConsumerRebalanceListener):
    def __init__(self, settings: Settings, ss: StreamSettings) -> None:
        self.s, self.ss = settings, ss
        self.topics = StreamTopics(settings, ss)
        self.policy = LatenessPolicy(ss.out_of_orderness_ms, ss.allowed_lateness_ms)
        self.procs: dict[TP, ClickCounter | IpRateFlagger] = {}
        self.locals: dict[TP, LocalDeltas] = {}  # stage 2 only
        self.tuning = StoreTuning(
            block_cache_bytes=ss.state_block_cache_mb << 20,
            write_buffer_bytes=ss.state_write_buffer_mb << 20,
            bucket_ids=ss.state_bucket_ids,
            filter_bytes_per_generation=ss.state_filter_mb << 20,
            max_filter_generations=ss.state_filter_generations,
        )
        self.snapshots = (
            SnapshotStore(ss.snapshot_root(settings), ss.app_id, settings)
            if ss.snapshot_interval_s > 0
            else None
        )
        self._snapshot_at: dict[TP, float] = {}  # when a partition's next snapshot is due
        self._uploads: dict[TP, asyncio.Future] = {}
        self.sink = ClickHouseSink(settings)
        self.publisher = Publisher(self.procs, self.topics.source, self.sink, ss)
        self.lock = asyncio.Lock()
        self.seeks = Seeks()  # batches drained before a listener's seek are dropped (see run)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._since_checkpoint = 0
        self._stopping = False
        self._writing: asyncio.Future | None = None  # the checkpoint being written, if any
        self._recoveries: set[asyncio.Future] = set()  # assignments being recovered
        self._stats_at = 0.0

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.topics.ensure)
        self.producer = AIOKafkaProducer(
            **aiokafka_connection(self.s),
            acks="all",
            enable_idempotence=True,
            # no producer compression: deltas and forward batches are zstd-framed already
            # (streaming/logic/framing.py), at a cheaper level than the producer would use
            max_request_size=16 * 1024 * 1024,
            # a checkpoint sends several forward batches per partition at once; with the 16 KiB
            # default each waited for the one before it to be sent, a loop turn each
            max_batch_size=8 * 1024 * 1024,
            linger_ms=5,
            request_timeout_ms=int(self.ss.checkpoint_timeout_s * 1000),
        )
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            **aiokafka_connection(self.s),
            group_id=f"{self.ss.app_id}-{self.ss.stages}",
            # static membership: a worker restarted on its own disk gets its partitions back
            # without a rebalance (and without waiting for its old session to time out)
            group_instance_id=self.ss.group_instance_id(self.s),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
        )
        await self.consumer.start()
        topics = {
            "all": [self.topics.source, self.topics.forward],
            "counter": [self.topics.source],
            "iprate": [self.topics.forward],
        }[self.ss.stages]
        self.consumer.subscribe(topics, listener=self)

    async def stop(self) -> None:
        self._stopping = True  # (a recovery in progress finishes first: it holds the lock)
        try:
            async with self.lock:
                await self._settle()
                await self._checkpoint(list(self.procs))
                await self.publisher.publish_once()
        except Exception as exc:  # noqa: BLE001 - best effort: a replay covers the rest
            log.warning("final checkpoint/publish failed: %r", exc)
        if self.consumer:
            await self.consumer.stop()
        if self.producer:
            await self.producer.stop()
        for tp in list(self.procs):
            self._close_state(tp)
        self.sink.close()

    # --- rebalance ---------------------------------------------------------------------------
    async def on_partitions_revoked(self, revoked) -> None:
        async with self.lock:
            await self._settle()  # the partitions are still ours, should it rewind them
            mine = [tp for tp in revoked if tp in self.procs]
            try:
                await self._checkpoint(mine)
            except Exception as exc:  # noqa: BLE001 - the next owner replays from its state
                log.warning("checkpoint on revoke failed: %r", exc)
            for tp in revoked:
                self.seeks.invalidate(tp)
            for tp in mine:
                self._close_state(tp)
            self._count_assigned()
            log.info("revoked %s", sorted((t.topic, t.partition) for t in mine))

    async def on_partitions_assigned(self, assigned) -> None:
        """Pause the new partitions and recover them in the background. aiokafka sends no
        heartbeats while this listener runs (its heartbeat task starts after it returns), so a
        recovery here that outlasted the session timeout (10 s: a few million ids) got the
        worker dropped from the group, over and over (issue 11). The other partitions keep
        being consumed meanwhile."""
        new = {tp for tp in assigned if tp not in self.procs}
        if not new:
            return
        self.consumer.pause(*new)
        task = asyncio.ensure_future(self._recover_assigned(new))
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    async def _recover_assigned(self, tps: set[TP]) -> None:
        async with self.lock:
            mine = self.consumer.assignment()
            tps = {tp for tp in tps if tp in mine and tp not in self.procs}  # still ours
            if not tps:
                return
            try:
                await self._load_until_ok(tps)
            finally:
                mine = self.consumer.assignment()
                self.consumer.resume(*(tp for tp in tps if tp in mine))

    async def _load_until_ok(self, tps: set[TP]) -> None:
        """Never consume a partition without its state: retry recovery until it succeeds."""
        delay = 0.5
        while True:
            try:
                return await self._load(tps)
            except Exception as exc:  # noqa: BLE001 - Kafka briefly unavailable
                log.warning("state recovery failed (retry in %.1fs): %r", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _close_state(self, tp: TP) -> None:
        if tp.topic == self.topics.source:  # no stale series after a revoke
            for gauge in (M.STATE_IDS, M.STATE_DISK_BYTES):
                try:
                    gauge.remove(tp.partition)
                except KeyError:
                    pass
        proc = self.procs.pop(tp, None)
        if isinstance(proc, ClickCounter):
            proc.ids.close()
        local = self.locals.pop(tp, None)
        if local is not None:
            local.close()

    async def _load(self, tps: set[TP]) -> None:
        """(Re)build partitions from their local state and changelog, resume each at its
        state's end. The CPU work runs in threads, a slice at a time (statelog.py), so the
        consumer keeps heartbeating while a large state is restored."""
        t0 = time.monotonic()  # (opening the stores is part of recovering: WAL, filter)
        counters, iprates = {}, {}
        for tp in tps:
            self._close_state(tp)
            changelog = self.topics.changelog_of(tp)
            if tp.topic == self.topics.source:
                counters[changelog] = await asyncio.to_thread(self._open_counter, tp)
            else:
                local = LocalDeltas(self.topics.local_path(tp))
                iprates[changelog] = (self._new_iprate(tp), local)
                self.locals[tp] = local
        by_changelog = {self.topics.changelog_of(tp): tp for tp in tps}

        def reset(changelog: TP, begin: int, end: int) -> ClickCounter:
            """An empty or stale store: restore the newest usable snapshot, else empty."""
            tp = by_changelog[changelog]
            counters[changelog].ids.destroy()
            path = self.topics.local_path(tp)
            restored = None
            if self.snapshots is not None:
                restored = self.snapshots.restore(self._snapshot_name(tp), path, begin, end)
            counter = counters[changelog] = self._open_counter(tp)
            if restored is not None:
                counter.ids.renew_lineage()
                log.info(
                    "%s: restored the snapshot at changelog offset %d (%d ids)",
                    tp,
                    restored.changelog_offset,
                    restored.live_ids,
                )
            return counter

        def reset_iprate(changelog: TP, begin: int, end: int):
            """No or stale local deltas: those of the newest usable snapshot, else none."""
            tp = by_changelog[changelog]
            iprates[changelog][1].destroy()
            path = self.topics.local_path(tp)
            restored = None
            if self.snapshots is not None:
                restored = self.snapshots.restore(self._snapshot_name(tp), path, begin, end)
            local = self.locals[tp] = LocalDeltas(path)
            iprates[changelog] = (self._new_iprate(tp), local)
            if restored is not None:
                log.info(
                    "%s: restored the snapshot at changelog offset %d",
                    tp,
                    restored.changelog_offset,
                )
            return iprates[changelog]

        try:
            t_open = time.monotonic()
            applied = await recover_counters(
                aiokafka_connection(self.s), counters, reset, self._progress
            )
            t_stage1 = time.monotonic()
            M.RECOVERY_DELTAS.labels("counter").inc(sum(applied.values()))
            applied_ip = await recover(aiokafka_connection(self.s), iprates, reset_iprate)
            t_stage2 = time.monotonic()
            M.RECOVERY_DELTAS.labels("iprate").inc(sum(applied_ip.values()))
            applied.update(applied_ip)
        except BaseException:  # release the stores: the retry opens them again
            for counter in counters.values():
                counter.ids.close()
            for tp in tps:
                self._close_state(tp)
            raise
        for changelog, counter in counters.items():
            self.procs[by_changelog[changelog]] = counter
        for changelog, (flagger, _local) in iprates.items():
            self.procs[by_changelog[changelog]] = flagger
        gc.freeze()  # recovered state is long-lived: out of the collector's scans (hosting.py)
        self._count_assigned()
        for tp in tps:
            nxt = self.procs[tp].next_offset
            if nxt is None:  # no state yet: from the group's offset, else the beginning
                nxt = await self.consumer.committed(tp)
            if nxt is None:
                nxt = (await self.consumer.beginning_offsets([tp]))[tp]
            self.seeks.seek(self.consumer, tp, nxt)
        took = time.monotonic() - t0
        M.RECOVERY_SECONDS.set(took)
        self._state_metrics()
        log.info(
            "assigned %s: %d deltas applied in %.2fs (open %.2fs, stage 1 %.2fs, stage 2 %.2fs,"
            " %d ids)",
            sorted((t.topic, t.partition) for t in tps),
            sum(applied.values()),
            took,
            t_open - t0,
            t_stage1 - t_open,
            t_stage2 - t_stage1,
            sum(c.ids.meta.live_ids for c in counters.values()),
        )

    def _progress(self, changelog: TP, position: int, end: int) -> None:
        now = time.monotonic()
        if now - getattr(self, "_progress_at", 0.0) >= 5:
            self._progress_at = now
            log.info("recovering %s: changelog offset %d of %d", changelog, position, end)

    def _open_counter(self, tp: TP) -> ClickCounter:
        store = IdStore(self.topics.local_path(tp), self.ss.horizon_ms, self.tuning)
        return ClickCounter(
            tp.partition,
            self.policy,
            self.ss.horizon_ms,
            is_bot_user_agent,
            targets=self.topics.partitions,
            store=store,
        )

    def _count_assigned(self) -> None:
        for topic in (self.topics.source, self.topics.forward):
            M.ASSIGNED.labels(topic).set(sum(1 for tp in self.procs if tp.topic == topic))

    def _new_iprate(self, tp: TP) -> IpRateFlagger:
        return IpRateFlagger(
            tp.partition, self.policy, self.ss.ip_rate_threshold, self.topics.partitions
        )

    # --- main loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        publisher = asyncio.ensure_future(self.publisher.loop())
        monitor = asyncio.ensure_future(
            M.monitor(self.consumer, self.procs, self.topics.source, NO_WATERMARK)
        )
        last_cp = time.monotonic()
        try:
            while not self._stopping:
                batch = await self.consumer.getmany(
                    timeout_ms=100, max_records=self.ss.fetch_max_records
                )
                snap = self.seeks.snapshot(batch)
                async with self.lock:
                    for tp, msgs in self.seeks.fresh(batch, snap).items():
                        proc = self.procs.get(tp)
                        if proc is None:
                            continue
                        if tp.topic == self.topics.source:
                            self._count(proc, msgs)
                        else:
                            self._flag(proc, msgs)
                        # let I/O run between partitions: the fetcher's next requests and the
                        # checkpoint being written (it needs a few round trips to Kafka)
                        await asyncio.sleep(0)
                    now = time.monotonic()
                    if now - self._stats_at >= 2:
                        self._stats_at = now
                        self._state_metrics()
                    due = now - last_cp >= self.ss.checkpoint_interval_s
                    if due or self._since_checkpoint >= self.ss.checkpoint_max_events:
                        await self._settle()
                        taken = self._take(list(self.procs))
                        self._writing = asyncio.ensure_future(self._write(taken))
                        last_cp = time.monotonic()
        finally:
            publisher.cancel()
            monitor.cancel()

    def _count(self, proc: ClickCounter, msgs) -> None:
        outcomes = proc.process_records(msgs, _decode)
        if outcomes[-1]:
            M.BAD_RECORDS.inc(outcomes[-1])
        self._since_checkpoint += len(msgs)
        M.UNCHECKPOINTED.set(self._since_checkpoint)
        for o, n in enumerate(outcomes[:-1]):
            if n:
                M.EVENTS.labels(_OUTCOME[Outcome(o)]).inc(n)
        M.DUPLICATES.inc(outcomes[Outcome.DUPLICATE])
        M.TOO_LATE.inc(outcomes[Outcome.TOO_LATE])
        M.FRAUD.labels("bot_ua").inc(outcomes[Outcome.BOT])
        if proc.corrections:
            M.LATE_CORRECTIONS.inc(proc.corrections)
            proc.corrections = 0

    def _flag(self, proc: IpRateFlagger, msgs) -> None:
        self._since_checkpoint += len(msgs)
        M.UNCHECKPOINTED.set(self._since_checkpoint)
        flagged = 0
        for msg in msgs:
            flagged += proc.process(decode_batch(msg.value), msg.offset)
        if flagged:
            M.FRAUD.labels("ip_rate").inc(flagged)

    # --- checkpoints -------------------------------------------------------------------------
    # A checkpoint is taken synchronously (what changed, as bytes) and written in the background
    # while the next records are processed; the next one waits for it (`_settle`), so forwards
    # and deltas reach Kafka in order. Written: forwards first (acked), then each partition's
    # state delta, then offsets (telemetry only).

    async def _checkpoint(self, tps: list[TP]) -> None:
        """Take a checkpoint of `tps` and wait until it is written."""
        await self._write(self._take(tps))

    def _take(self, tps: list[TP]) -> list[_Taken]:
        taken = []
        for tp in tps:
            proc = self.procs[tp]
            if not proc.has_progress:
                continue
            forwards = route_forwards(proc) if tp.topic == self.topics.source else {}
            delta = proc.delta()
            bound, nxt = proc.content_bound, proc.next_offset
            taken.append(_Taken(tp, forwards, delta, bound, nxt, proc, self.locals.get(tp)))
        self._since_checkpoint = 0
        M.UNCHECKPOINTED.set(0)
        return taken

    async def _write(self, taken: list[_Taken]) -> None:
        sends = []
        for t in taken:
            for q, batch in t.forwards.items():
                sends.append(await self.producer.send(self.topics.forward, batch, partition=q))
        if sends:
            await asyncio.gather(*sends)
        writes = []
        for t in taken:
            changelog = self.topics.changelog_of(t.tp).topic
            fut = await self.producer.send(changelog, t.delta, partition=t.tp.partition)
            writes.append((t, fut))
        acked = [(t, await fut) for t, fut in writes]
        for t, meta in acked:
            if t.local is not None:
                t.local.put(meta.offset, t.delta, t.content_bound)
            M.CHECKPOINTS.inc()
        counters = [(t.proc, meta.offset) for t, meta in acked if t.local is None]
        due = self._snapshots_due([t.tp for t, _ in acked])
        if counters or due:  # durable now: flush ids to the local stores (RocksDB, off the loop)
            self._upload(await asyncio.to_thread(_confirm_all, counters, due))
        self._prune_local()
        if taken:
            try:
                await self.consumer.commit({t.tp: t.next_offset for t in taken})
            except Exception as exc:  # noqa: BLE001 - offsets here are telemetry only
                log.debug("offset commit skipped: %r", exc)

    async def _settle(self) -> None:
        """Wait for the checkpoint being written. If it failed, forwards or a delta may be lost
        half-way: rather than reason about which, drop the in-memory state and rebuild from the
        last durable checkpoint, as after a crash (the replay is deterministic, so nothing is
        lost or counted twice)."""
        writing, self._writing = self._writing, None
        if writing is None:
            return
        try:
            await writing
        except Exception as exc:  # noqa: BLE001 - Kafka unavailable beyond producer retries
            log.warning("checkpoint failed, rewinding to the last durable state: %r", exc)
            M.CHECKPOINT_FAILURES.inc()
            await asyncio.sleep(1.0)
            await self._load_until_ok(set(self.procs))

    def _prune_local(self) -> None:
        """Once a minute: drop stage 2's local deltas whose content expired; state gauges."""
        now = time.monotonic()
        if now - getattr(self, "_pruned_at", 0.0) < 60:
            return
        self._pruned_at = now
        for tp, proc in self.procs.items():
            if tp in self.locals and proc.watermark != NO_WATERMARK:
                # stage 2 keeps minutes until allowed lateness closes them (not the dedup
                # horizon: before, every restart re-applied a day of its deltas)
                cut = expired_before(proc.watermark, 0, self.ss.allowed_lateness_ms)
                self.locals[tp].prune(cut)

    # --- snapshots (streaming/snapshots.py) ---------------------------------------------------
    def _snapshot_name(self, tp: TP) -> str:
        return f"{self.topics.changelog_of(tp).topic}-{tp.partition}"

    def _snapshots_due(self, tps: list[TP]) -> list[tuple]:
        """(tp, local checkpoint dir, processor, stage 2's local deltas or None) for the
        partitions due for a snapshot."""
        if self.snapshots is None:
            return []
        now, due = time.monotonic(), []
        for tp in tps:
            at = self._snapshot_at.setdefault(tp, now)  # the first right after an assignment
            upload = self._uploads.get(tp)
            if now >= at and (upload is None or upload.done()) and tp in self.procs:
                target = self.topics.state_dir / "snapshots" / self._snapshot_name(tp)
                due.append((tp, target, self.procs[tp], self.locals.get(tp)))
                self._snapshot_at[tp] = now + self.ss.snapshot_interval_s
        return due

    def _upload(self, taken: list[tuple]) -> None:
        """Copy taken checkpoints to the object store in the background (they no longer
        depend on the live store: a revoke or a crash meanwhile loses only that snapshot)."""
        for tp, target, lineage, meta in taken:
            name = self._snapshot_name(tp)
            fut = asyncio.ensure_future(
                asyncio.to_thread(self.snapshots.upload, name, target, lineage, meta)
            )
            fut.add_done_callback(lambda f, name=name: self._uploaded(name, f))
            self._uploads[tp] = fut

    @staticmethod
    def _uploaded(name: str, fut: asyncio.Future) -> None:
        if fut.cancelled():
            return
        if fut.exception() is not None:
            M.SNAPSHOT_FAILURES.inc()
            log.warning("snapshot of %s failed: %r", name, fut.exception())
            return
        M.SNAPSHOTS.inc()
        m = fut.result()
        log.info(
            "snapshot of %s at changelog offset %d (%d ids)", name, m.changelog_offset, m.live_ids
        )

    def _state_metrics(self) -> None:
        for tp, proc in self.procs.items():
            if isinstance(proc, ClickCounter):
                stats = proc.ids.stats()
                M.STATE_IDS.labels(tp.partition).set(stats["live_ids"])
                M.STATE_DISK_BYTES.labels(tp.partition).set(stats["sst_bytes"])
                M.STATE_FILTER_BYTES.labels(tp.partition).set(stats["filter_bytes"])
            else:
                M.IPRATE_IP_MINUTES.labels(tp.partition).set(proc.held)

    async def command(self, cmd: dict) -> dict:
        if cmd.get("cmd") == "republish":
            return {"republished": await self.republish()}
        return {"error": f"unknown command {cmd!r}"}

    async def republish(self) -> int:
        """Mark every open window dirty again; the publisher re-sends them."""
        async with self.lock:
            return sum(proc.mark_all_dirty() for proc in self.procs.values())
