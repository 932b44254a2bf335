"""Stage 1, per source partition: dedup -> bot rule -> lateness -> per-minute absolute counts.

State is a pure function of the partition's records in offset order (from an empty state or a
checkpoint). Each window key carries as version the offset of the last record that changed it,
so a (key, version) always maps to the same count, whoever computes it and however often.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

import msgspec

from clickagg_platform.model import ClickEvent
from streaming.logic.counts import AbsoluteCounts, Row
from streaming.logic.dedup import DedupSet
from streaming.logic.windows import MINUTE_MS, NO_WATERMARK, LatenessPolicy


class Outcome(IntEnum):
    COUNTED = 0
    DUPLICATE = 1
    TOO_LATE = 2
    BOT = 3
    ALREADY_APPLIED = 4  # offset below the state's next offset: it is in the state already


class Forward(msgspec.Struct, array_like=True, frozen=True):
    """What stage 2 (the per-IP rate rule) needs of one first occurrence."""

    src_offset: int
    ip_hash: str
    minute: int
    campaign_id: str
    ad_id: str
    counted: bool  # counted by stage 1 (not a bot, not too late): a flag must subtract it


class CounterDelta(msgspec.Struct, array_like=True):
    """Everything that changed between offsets `base` and `end` (a checkpoint)."""

    base: int | None
    end: int
    max_event_time: int
    ids: list[tuple[str, int]]
    windows: list[Row]
    pending: list[Row]  # rows not yet confirmed written to the sink


_delta_encoder = msgspec.msgpack.Encoder()
_delta_decoder = msgspec.msgpack.Decoder(CounterDelta)


class ClickCounter:
    def __init__(
        self,
        partition: int,
        policy: LatenessPolicy,
        horizon_ms: int,
        is_bot: Callable[[str], bool],
    ) -> None:
        self.partition = partition
        self.policy = policy
        self.is_bot = is_bot
        self.dedup = DedupSet(horizon_ms)
        self.windows = AbsoluteCounts()
        self.forwards: list[Forward] = []
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
        """Apply one record. Written flat on purpose: this runs once per click."""
        if self.next_offset is not None and offset < self.next_offset:
            return Outcome.ALREADY_APPLIED
        self.next_offset = offset + 1
        t = ev.event_time
        minute = t - t % MINUTE_MS
        max_t = self.max_event_time
        wm = NO_WATERMARK if max_t == NO_WATERMARK else max_t - self._oo  # before this click
        if not self.dedup.add(ev.event_id, minute, wm):
            if t > max_t:
                self._advance(t)
            return Outcome.DUPLICATE
        self._new_ids.append((ev.event_id, minute))
        ua = ev.user_agent
        bot = self._bot_memo.get(ua)
        if bot is None:
            if len(self._bot_memo) > 10_000:
                self._bot_memo.clear()
            bot = self._bot_memo[ua] = self.is_bot(ua)
        if bot:
            outcome = Outcome.BOT
        elif wm > minute + self._open_for:
            outcome = Outcome.TOO_LATE
        else:
            outcome = Outcome.COUNTED
            self.windows.add((minute, ev.campaign_id, ev.ad_id), 1, offset)
            if wm >= minute + MINUTE_MS:
                self.corrections += 1
        self.forwards.append(
            Forward(offset, ev.ip_hash, minute, ev.campaign_id, ev.ad_id, outcome == 0)
        )
        if t > max_t:
            self._advance(t)
        return outcome

    def _advance(self, t: int) -> None:
        self.max_event_time = t
        if t - self._oo - self._expired_upto >= MINUTE_MS:
            self._maybe_expire()

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
    def take_forwards(self) -> list[Forward]:
        out, self.forwards = self.forwards, []
        return out

    def mark_all_dirty(self) -> int:
        return self.windows.mark_all_dirty()

    @property
    def has_progress(self) -> bool:
        """Records were applied since the last checkpoint."""
        return self.next_offset is not None and self.next_offset != self._base

    def skip(self, offset: int) -> None:
        """An undecodable record: step over it (deterministically, like any other record)."""
        if self.next_offset is None or offset >= self.next_offset:
            self.next_offset = offset + 1

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
        return _delta_encoder.encode(delta)

    def apply(self, data: bytes) -> bool:
        """Recovery: apply one checkpoint delta if it continues the current state's chain."""
        d = _delta_decoder.decode(data)
        if self.next_offset is not None and d.base != self.next_offset:
            return False  # a stale or zombie writer's delta: not a continuation, skip it
        self.dedup.load(d.ids)
        self.windows.load(d.windows, d.pending)
        self.max_event_time = d.max_event_time
        self.next_offset = self._base = d.end
        self._maybe_expire()
        return True
