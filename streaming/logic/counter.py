"""Stage 1, per source partition: dedup -> bot rule -> lateness -> per-minute absolute counts.

State is a pure function of the partition's records in offset order (from an empty state or a
checkpoint). Each window key carries as version the offset of the last record that changed it,
so a (key, version) always maps to the same count, whoever computes it and however often.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from enum import IntEnum
from itertools import islice
from typing import NamedTuple

import msgspec

from clickagg_platform.model import ClickEvent
from streaming.logic.counts import AbsoluteCounts, Row
from streaming.logic.dedup import DedupSet
from streaming.logic.framing import pack, unpack
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
    ids: list[tuple[str, int]]
    windows: list[Row]
    pending: list[Row]  # rows not yet confirmed written to the sink


_delta_encoder = msgspec.msgpack.Encoder()
_forward_encoder = msgspec.msgpack.Encoder()
_delta_decoder = msgspec.msgpack.Decoder(CounterDelta)


class ClickCounter:
    def __init__(
        self,
        partition: int,
        policy: LatenessPolicy,
        horizon_ms: int,
        is_bot: Callable[[str], bool],
        targets: int = 1,
    ) -> None:
        self.partition = partition
        self.targets = targets  # stage-2 partitions: forwards are routed by `ip_partition`
        self.policy = policy
        self.is_bot = is_bot
        self.dedup = DedupSet(horizon_ms)
        self.windows = AbsoluteCounts()
        self._forwards = [bytearray() for _ in range(targets)]  # encoded `Forward`s, per target
        self._forwarded = [0] * targets
        self.max_event_time = NO_WATERMARK
        self.next_offset: int | None = None
        self.corrections = 0  # clicks counted into a window the watermark had passed
        self._expired_upto = NO_WATERMARK
        self._base: int | None = None
        self._new_ids: list[tuple[str, int]] = []
        self._bot_memo: dict[str, bool] = {}  # user agents repeat: the rule runs once per UA
        self._oo = policy.out_of_orderness_ms
        self._open_for = MINUTE_MS + policy.allowed_lateness_ms  # window start + this >= wm

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
        known, span = self.dedup.minute_of, self.dedup.span_ms
        known_get, bucket_minute, bucket = known.get, None, []
        tally: dict[tuple[int, str, str], list[int]] = {}  # window -> [clicks, last offset]
        tally_get = tally.get
        new_id = self._new_ids.append
        forwards, forwarded, targets = self._forwards, self._forwarded, self.targets
        encode_into, crc32 = _forward_encoder.encode_into, zlib.crc32
        memo, is_bot = self._bot_memo, self.is_bot
        oo, open_for = self._oo, self._open_for
        max_t, corrections, offset = self.max_event_time, 0, None
        next_wm = self.policy.watermark(max_t)
        try:
            for rec in islice(records, applied, None):
                offset = rec.offset
                try:
                    ev = decode(rec.value)
                except Exception:  # noqa: BLE001 - a bad record is skipped
                    counts[undecodable] += 1
                    continue
                t = ev.event_time
                minute = t - t % MINUTE_MS
                wm = next_wm  # the watermark before this click
                if t > max_t:
                    max_t, next_wm = t, t - oo
                event_id = ev.event_id
                seen = known_get(event_id)
                if seen is not None and wm <= seen + span:  # stored, within its horizon
                    counts[_DUPLICATE] += 1
                    continue
                known[event_id] = minute
                if minute != bucket_minute:
                    bucket_minute, bucket = minute, self.dedup.bucket(minute)
                bucket.append(event_id)
                new_id((event_id, minute))
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
                    key = (minute, campaign, ad)
                    w = tally_get(key)
                    if w is None:
                        tally[key] = [1, offset]
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
            for key, (n, last) in tally.items():
                self.windows.add(key, n, last)
            self._maybe_expire()
        return counts

    def _maybe_expire(self) -> None:
        """Drop closed windows and old ids; runs once per minute of watermark progress."""
        wm = self.policy.watermark(self.max_event_time)
        if wm - self._expired_upto < MINUTE_MS:
            return
        self._expired_upto = wm
        self.dedup.expire(wm)
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
        """Encode what changed since the last checkpoint (None if nothing was processed)."""
        if self.next_offset is None or self.next_offset == self._base:
            return None
        delta = CounterDelta(
            self._base,
            self.next_offset,
            self.max_event_time,
            self._new_ids,
            self.windows.take_changed(),
            self.windows.pending(),
        )
        self._base, self._new_ids = self.next_offset, []
        return pack(_delta_encoder.encode(delta))

    def apply(self, data: bytes) -> bool:
        """Recovery: apply one checkpoint delta if it continues the current state's chain."""
        d = _delta_decoder.decode(unpack(data))
        if self.next_offset is not None and d.base != self.next_offset:
            return False  # a stale or zombie writer's delta: not a continuation, skip it
        self.dedup.load(d.ids)
        self.windows.load(d.windows, d.pending)
        self.max_event_time = d.max_event_time
        self.next_offset = self._base = d.end
        self._maybe_expire()
        return True
