"""Stage 1, per source partition: dedup -> bot rule -> lateness -> per-minute absolute counts.

State is a pure function of the partition's records in offset order (from an empty state or a
checkpoint). Each window key carries as version the offset of the last record that changed it,
so a (key, version) always maps to the same count, whoever computes it and however often.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from enum import IntEnum
from typing import NamedTuple

import msgspec

from clickagg_platform.model import ClickEvent
from streaming.logic.counts import AbsoluteCounts, Row
from streaming.logic.framing import pack, unpack
from streaming.logic.idstore import Generation, IdStore, StoreMeta, id_key, split_keys
from streaming.logic.windows import MINUTE_MS, NO_WATERMARK, LatenessPolicy


class Outcome(IntEnum):
    COUNTED = 0
    DUPLICATE = 1
    TOO_LATE = 2
    BOT = 3
    ALREADY_APPLIED = 4  # offset below the state's next offset: it is in the state already


class Forward(msgspec.Struct, array_like=True, frozen=True):
    """What stage 2 (the per-IP rate rule) needs of one first occurrence. Stage 1 encodes each
    as it goes (a msgpack array of these fields), into a buffer per stage-2 partition."""

    src_offset: int
    ip_hash: str
    minute: int
    campaign_id: str
    ad_id: str
    counted: bool  # counted by stage 1 (not a bot, not too late): a flag must subtract it


# the outcomes as plain ints for the per-click loop (an IntEnum member lookup costs ~80 ns)
_COUNTED, _DUPLICATE, _TOO_LATE, _BOT, _ALREADY_APPLIED = (int(o) for o in Outcome)


class _Record(NamedTuple):
    offset: int
    value: ClickEvent


def _as_is(ev: ClickEvent) -> ClickEvent:
    return ev


class CounterDelta(msgspec.Struct, array_like=True):
    """Everything that changed between offsets `base` and `end` (a checkpoint)."""

    base: int | None
    end: int
    max_event_time: int
    ids: list[tuple[str, int]]  # (event id, minute): deltas written before `id_blocks`
    windows: list[Row]
    pending: list[Row]  # rows not yet confirmed written to the sink
    id_blocks: list[tuple[int, bytes]] = []  # (minute, 16-byte id keys back to back)
    id_others: list[tuple[int, list[bytes]]] = []  # (minute, keys of non-hex ids)


class WindowState(msgspec.Struct, array_like=True):
    """The open windows and unpublished rows: what the local store keeps beside the ids."""

    counts: list[Row]
    pending: list[Row]


_delta_encoder = msgspec.msgpack.Encoder()
_forward_encoder = msgspec.msgpack.Encoder()
_delta_decoder = msgspec.msgpack.Decoder(CounterDelta)
_windows_decoder = msgspec.msgpack.Decoder(WindowState)
_CHUNK = 2048  # records looked up in RocksDB at once (one multi-get)


def _keys_of(eids: list[str | None], fromhex) -> tuple[list[bytes], bytes | None]:
    """The store key of each event id (`idstore.id_key`), and all of them packed back to back
    when every one is a canonical 32-digit hex id (the common case: one `fromhex` call for the
    whole chunk, whose result is the packed block the filter reads). A chunk with any other id
    (or an undecodable record: None, keyed b"" and never used) is keyed id by id."""
    try:
        joined = "".join(eids)
    except TypeError:  # an undecodable record in the chunk
        joined = ""
    n = len(eids)
    if len(joined) == 32 * n and joined.islower():
        try:
            packed = fromhex(joined)
        except ValueError:
            packed = b""
        if len(packed) == 16 * n:  # (whitespace, which fromhex skips, would make it shorter)
            return split_keys(packed), packed
    return [b"" if e is None else id_key(e) for e in eids], None


class ClickCounter:
    def __init__(
        self,
        partition: int,
        policy: LatenessPolicy,
        horizon_ms: int,
        is_bot: Callable[[str], bool],
        targets: int = 1,
        store: IdStore | None = None,
    ) -> None:
        """`store`: the partition's local id store (state it holds is resumed); by default a
        temporary one (tests and tools)."""
        self.partition = partition
        self.targets = targets  # stage-2 partitions: forwards are routed by `ip_partition`
        self.policy = policy
        self.is_bot = is_bot
        self.ids = store if store is not None else IdStore.temporary(horizon_ms)
        self.windows = AbsoluteCounts()
        self._forwards = [bytearray() for _ in range(targets)]  # encoded `Forward`s, per target
        self._forwarded = [0] * targets
        self.max_event_time = NO_WATERMARK
        self.next_offset: int | None = None
        self.corrections = 0  # clicks counted into a window the watermark had passed
        self._expired_upto = NO_WATERMARK
        self._base: int | None = None
        self._taken: tuple | None = None  # the last delta's content, until it is confirmed
        self._bot_memo: dict[str, bool] = {}  # user agents repeat: the rule runs once per UA
        self._oo = policy.out_of_orderness_ms
        self._open_for = MINUTE_MS + policy.allowed_lateness_ms  # window start + this >= wm
        self._resume()

    def _resume(self) -> None:
        """Take up the state the store holds (after its last flushed changelog record)."""
        meta, extra = self.ids.meta, self.ids.extra()
        self.next_offset = self._base = meta.next_offset
        if meta.next_offset is not None:
            self.max_event_time = meta.max_event_time
        self.windows = AbsoluteCounts()
        if extra is not None:
            w = _windows_decoder.decode(extra)
            self.windows.load(w.counts, w.pending)
        self._expired_upto = NO_WATERMARK
        self._maybe_expire()

    @property
    def watermark(self) -> int:
        return self.policy.watermark(self.max_event_time)

    @property
    def content_bound(self) -> int:
        """No checkpoint taken now mentions an event time above this."""
        return self.max_event_time

    def process(self, ev: ClickEvent, offset: int) -> Outcome:
        """Apply one decoded record (tests and tools; the worker calls `process_records`)."""
        counts = self.process_records((_Record(offset, ev),), _as_is)
        return Outcome(counts.index(1))

    def process_records(self, records, decode: Callable[[bytes], ClickEvent]) -> list[int]:
        """Apply consecutive records of this partition (objects with `.offset` and `.value`, in
        offset order). Returns how many ended with each `Outcome`, plus a last entry: records
        that did not decode (stepped over, deterministically, like any other record).

        This loop runs once per click: written flat, with locals, on purpose. It inlines
        `DedupSet.add` and tallies the batch's windows before `AbsoluteCounts.add`; expiry
        waits for the batch's end (every rule here is judged by the watermark, never by what
        expiry has dropped yet, so when it runs changes no outcome)."""
        records = records if isinstance(records, list) else list(records)
        counts = [0] * (len(Outcome) + 1)
        undecodable = len(Outcome)
        applied = 0  # a fetch may start below next_offset: those records are in the state
        if self.next_offset is not None:
            while applied < len(records) and records[applied].offset < self.next_offset:
                applied += 1
        counts[_ALREADY_APPLIED] = applied
        store = self.ids
        span, lookup, fromhex, from_bytes = (
            store.span_ms,
            store.lookup,
            bytes.fromhex,
            int.from_bytes,
        )
        gen = store.current
        known, by_minute = gen.minute_of, gen.by_minute  # this checkpoint's new ids,
        known_get, bucket_minute, bucket = known.get, None, []  # then the one being written
        inflight_get = store.inflight.minute_of.get if store.inflight is not None else {}.get
        tally: dict[tuple[int, str, str], list[int]] = {}  # window -> [clicks, last offset]
        tally_get = tally.get
        forwards, forwarded, targets = self._forwards, self._forwarded, self.targets
        encode_into, crc32 = _forward_encoder.encode_into, zlib.crc32
        memo, is_bot = self._bot_memo, self.is_bot
        oo, open_for = self._oo, self._open_for
        max_t, corrections, offset = self.max_event_time, 0, None
        next_wm = self.policy.watermark(max_t)
        try:
            for start in range(applied, len(records), _CHUNK):
                chunk = records[start : start + _CHUNK]
                evs, eids = [], []  # pass 1: decode
                for rec in chunk:
                    try:
                        ev = decode(rec.value)
                    except Exception:  # noqa: BLE001 - a bad record is skipped
                        evs.append(None)
                        eids.append(None)
                        continue
                    evs.append(ev)
                    eids.append(ev.event_id)
                keys, packed = _keys_of(eids, fromhex)
                if packed is None:
                    gen.mixed = True
                stored = lookup(keys, packed)  # filter, then one multi-get for the rest
                for rec, ev, key, raw in zip(chunk, evs, keys, stored, strict=True):
                    offset = rec.offset
                    if ev is None:
                        counts[undecodable] += 1
                        continue
                    t = ev.event_time
                    minute = t - t % MINUTE_MS
                    wm = next_wm  # the watermark before this click
                    if t > max_t:
                        max_t, next_wm = t, t - oo
                    seen = known_get(key)
                    if seen is None:
                        seen = inflight_get(key)
                        if seen is None and raw is not None:
                            seen = from_bytes(raw, "big") * MINUTE_MS
                        if seen is None or (wm > seen + span and seen != minute):
                            known[key] = minute  # new, or past its horizon: remembered anew
                            if minute != bucket_minute:
                                bucket_minute = minute
                                bucket = by_minute.get(minute)
                                if bucket is None:
                                    bucket = by_minute[minute] = []
                            bucket.append(key)
                            seen = None
                    if seen is None:
                        pass
                    elif wm <= seen + span:  # remembered, within its horizon
                        counts[_DUPLICATE] += 1
                        continue
                    elif seen != minute:  # remembered in this checkpoint, past its horizon:
                        known[key] = minute  # anew (rare: a horizon shorter than a checkpoint)
                        gen.moved = True
                    # (past its horizon, same minute: the stored copy already says it)
                    ua, campaign, ad = ev.user_agent, ev.campaign_id, ev.ad_id
                    bot = memo.get(ua)
                    if bot is None:
                        if len(memo) > 10_000:
                            memo.clear()
                        bot = memo[ua] = is_bot(ua)
                    if bot:
                        outcome = _BOT
                    elif wm > minute + open_for:
                        outcome = _TOO_LATE
                    else:
                        outcome = _COUNTED
                        wkey = (minute, campaign, ad)
                        w = tally_get(wkey)
                        if w is None:
                            tally[wkey] = [1, offset]
                        else:
                            w[0] += 1
                            w[1] = offset
                        if wm >= minute + MINUTE_MS:
                            corrections += 1
                    ip = ev.ip_hash
                    q = crc32(ip.encode()) % targets  # = routing.ip_partition, inlined
                    encode_into((offset, ip, minute, campaign, ad, not outcome), forwards[q], -1)
                    forwarded[q] += 1  # ^ a `Forward`, appended (-1) to its target's buffer
                    counts[outcome] += 1
        finally:
            if offset is not None:
                self.next_offset = offset + 1
            self.max_event_time = max_t
            self.corrections += corrections
            for wkey, (n, last) in tally.items():
                self.windows.add(wkey, n, last)
            self._maybe_expire()
        return counts

    def _maybe_expire(self) -> None:
        """Drop closed windows; runs once per minute of watermark progress. (Old ids are
        expired by the store when a checkpoint is flushed, with that checkpoint's watermark.)"""
        wm = self.policy.watermark(self.max_event_time)
        if wm - self._expired_upto < MINUTE_MS:
            return
        self._expired_upto = wm
        self.windows.drop(lambda start: self.policy.is_closed_by(start, wm))

    # --- sink side -------------------------------------------------------------------------
    def rows(self) -> list[Row]:
        """Unpublished absolute counts (latest value per key)."""
        return self.windows.rows()

    def mark_published(self, rows: list[Row]) -> None:
        """Forget rows the sink stored, unless the key changed again meanwhile."""
        self.windows.mark_published(rows)

    # --- checkpoints -----------------------------------------------------------------------
    def take_forwards(self) -> list[tuple[int, bytes]]:
        """Per stage-2 partition: (how many forwards, their msgpack arrays back to back)."""
        out = [(n, bytes(buf)) for n, buf in zip(self._forwarded, self._forwards, strict=True)]
        self._forwards = [bytearray() for _ in range(self.targets)]
        self._forwarded = [0] * self.targets
        return out

    def mark_all_dirty(self) -> int:
        return self.windows.mark_all_dirty()

    @property
    def has_progress(self) -> bool:
        """Records were applied since the last checkpoint."""
        return self.next_offset is not None and self.next_offset != self._base

    def delta(self) -> bytes | None:
        """Encode what changed since the last checkpoint (None if nothing was processed). Its
        ids stay in memory until `confirm` (after the changelog acked the delta) flushes them to
        the store; until then no other delta can be taken."""
        if self.next_offset is None or self.next_offset == self._base:
            return None
        gen = self.ids.take()
        blocks, others = gen.grouped()
        delta = CounterDelta(
            self._base,
            self.next_offset,
            self.max_event_time,
            [],
            self.windows.take_changed(),
            self.windows.pending(),
            blocks,
            others,
        )
        self._taken = (blocks, others, self.next_offset, self.max_event_time, self._window_state())
        self._base = self.next_offset
        return pack(_delta_encoder.encode(delta))

    def _window_state(self) -> bytes:
        counts = [(*k, n, v) for k, (n, v) in self.windows.counts.items()]
        return _delta_encoder.encode(WindowState(counts, self.windows.pending()))

    def confirm(self, changelog_offset: int) -> int:
        """The last delta is durable at `changelog_offset`: flush its ids and the state after it
        to the local store (blocking: the worker runs it off the event loop). Returns ids
        expired."""
        blocks, others, end, max_t, windows = self._taken
        meta = StoreMeta(changelog_offset, end, max_t, seq=0)
        expired = self.ids.flush(blocks, others, meta, windows, self.policy.watermark(max_t))
        self._taken = None
        self.ids.inflight = None
        return expired

    def rewind(self) -> None:
        """Back to the state the store holds (a checkpoint write failed): unflushed ids and
        counts are dropped; the records after the store's offset are processed again."""
        self.ids.drop_unflushed()
        self._taken = None
        self._forwards = [bytearray() for _ in range(self.targets)]
        self._forwarded = [0] * self.targets
        self._resume()

    def apply(self, data: bytes, changelog_offset: int = -1) -> bool:
        """Recovery: apply one changelog delta (read from Kafka) to the store, if it continues
        the current state's chain (blocking, like `confirm`)."""
        d = _delta_decoder.decode(unpack(data))
        if self.next_offset is not None and d.base != self.next_offset:
            return False  # a stale or zombie writer's delta: not a continuation, skip it
        blocks, others = d.id_blocks, d.id_others
        if d.ids:  # a delta written before id blocks: its ids as the store keys them
            gen = Generation()
            gen.moved = gen.mixed = True  # grouped from `minute_of`, keys of any kind
            for event_id, minute in d.ids:
                gen.minute_of[id_key(event_id)] = minute
            old_blocks, old_others = gen.grouped()
            blocks, others = [*blocks, *old_blocks], [*others, *old_others]
        self.windows.load(d.windows, d.pending)
        self.max_event_time = d.max_event_time
        self.next_offset = self._base = d.end
        self._maybe_expire()
        meta = StoreMeta(changelog_offset, d.end, d.max_event_time, seq=0)
        self.ids.flush(
            blocks, others, meta, self._window_state(), self.policy.watermark(d.max_event_time)
        )
        return True
