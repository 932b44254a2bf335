"""Stage 2, per partition of the IP-keyed forward topic: the per-IP click-rate fraud rule.

Rule (shared with the batch path): an (ip_hash, event-time minute) with more than `threshold`
distinct event_ids is fraud-like, and *all* of that IP's clicks in that minute are not billed.
The source topic is keyed by event_id, so one IP's clicks are spread over every source
partition; stage 1 forwards each first occurrence here, keyed by ip_hash, and this stage emits
*negative* absolute counts per (minute, campaign, ad, partition) that the hot query adds to
stage 1's counts. Before the threshold is crossed the clicks stay billed; crossing it corrects
the windows down at once (absolute rows make a correction a plain overwrite).

Replays of stage 1 re-forward identical records (stage 1 is deterministic), in source-offset
order per source partition, so a record is a replay iff its source offset is not above the
highest one already applied from that source partition.
"""

from __future__ import annotations

from collections import Counter

import msgspec

from streaming.logic.counter import Forward
from streaming.logic.counts import AbsoluteCounts, Row
from streaming.logic.framing import pack, unpack
from streaming.logic.windows import MINUTE_MS, NO_WATERMARK, LatenessPolicy


class ForwardBatch(msgspec.Struct, array_like=True):
    """One stage-1 partition's first occurrences for one stage-2 partition, plus its watermark
    after them (sent even when empty, so stage 2 can tell when a minute is closed everywhere)."""

    src_partition: int
    src_watermark: int
    records: list[Forward]


class IpRateDelta(msgspec.Struct, array_like=True):
    base: int | None
    end: int
    src_offsets: list[tuple[int, int]]
    src_watermarks: list[tuple[int, int]]
    ips: list[tuple[str, int, int, bool, list[tuple[str, str]]]]
    fraud: list[Row]
    pending: list[Row]


batch_encoder = msgspec.msgpack.Encoder()
batch_decoder = msgspec.msgpack.Decoder(ForwardBatch)


def encode_batch(batch: ForwardBatch) -> bytes:
    return pack(batch_encoder.encode(batch))


def encode_forwards(src_partition: int, src_watermark: int, n: int, rows: bytes) -> bytes:
    """A `ForwardBatch` around `n` records already encoded back to back (stage 1 encodes each
    forward as it goes): the same bytes as `encode_batch` would write for them, except that
    the records' array length is always in the 32-bit form (msgpack readers take any form)."""
    records = msgspec.Raw(b"\xdd" + n.to_bytes(4, "big") + rows)
    return pack(batch_encoder.encode((src_partition, src_watermark, records)))


def decode_batch(data: bytes) -> ForwardBatch:
    return batch_decoder.decode(unpack(data))


_delta_decoder = msgspec.msgpack.Decoder(IpRateDelta)


class _Minute:
    """The per-IP state of one event-time minute, dropped whole once the minute closes.

    `ips` maps ip_hash -> state, in one of two forms (the state of a stage-2 partition is
    rate x (1 min + allowed lateness) of these, so their size matters: ~120 B per IP-minute,
    against ~550 B as one [count, flagged, [(campaign, ad), ...]] list per IP-minute):
    - an int, for an IP with one click so far (nearly all of them): 0 if stage 1 did not
      count it, else 1 + the index of its (campaign, ad) in `pairs` (a small int: shared);
    - a list [clicks, flagged, indexes of the (campaign, ad) of each click billed so far].
    `changed` holds the IPs changed since the last delta (insertion-ordered, like the delta)."""

    __slots__ = ("ips", "pairs", "pair_index", "changed")

    def __init__(self) -> None:
        self.ips: dict[str, int | list] = {}
        self.pairs: list[tuple[str, str]] = []  # (campaign, ad) of this minute, by first use
        self.pair_index: dict[tuple[str, str], int] = {}
        self.changed: dict[str, None] = {}

    def pair(self, campaign: str, ad: str) -> int:
        key = (campaign, ad)
        i = self.pair_index.get(key)
        if i is None:
            i = self.pair_index[key] = len(self.pairs)
            self.pairs.append(key)
        return i

    def state(self, ip: str) -> tuple[int, bool, list[tuple[str, str]]] | None:
        """(clicks, flagged, (campaign, ad) of each click billed and not yet un-billed)."""
        st = self.ips.get(ip)
        if st is None:
            return None
        if type(st) is int:
            return 1, False, [self.pairs[st - 1]] if st else []
        return st[N], st[FLAGGED], [self.pairs[i] for i in st[COUNTED]]

    def load(self, ip: str, n: int, flagged: bool, counted: list) -> None:
        pairs = [self.pair(c, a) for c, a in counted]
        if n == 1 and not flagged:  # (then it has at most one billed click)
            self.ips[ip] = pairs[0] + 1 if pairs else 0
        else:
            self.ips[ip] = [n, flagged, pairs]


N, FLAGGED, COUNTED = 0, 1, 2  # the fields of a state's list form


class IpRateFlagger:
    def __init__(
        self, partition: int, policy: LatenessPolicy, threshold: int, n_sources: int
    ) -> None:
        self.partition = partition
        self.policy = policy
        self.threshold = threshold
        self.n_sources = n_sources
        self.src_offsets: dict[int, int] = {}
        self.src_watermarks: dict[int, int] = {}
        self.minutes: dict[int, _Minute] = {}
        self.fraud = AbsoluteCounts(sign=-1)
        self.next_offset: int | None = None
        self._base: int | None = None

    @property
    def watermark(self) -> int:
        """The slowest source partition's watermark: a minute closed here is closed in all."""
        if len(self.src_watermarks) < self.n_sources:
            return NO_WATERMARK
        return min(self.src_watermarks.values())

    @property
    def content_bound(self) -> int:
        """No checkpoint taken now mentions a minute above this (fastest source + bound)."""
        if not self.src_watermarks:
            return NO_WATERMARK
        return max(self.src_watermarks.values()) + self.policy.out_of_orderness_ms + MINUTE_MS

    @property
    def held(self) -> int:
        """IP-minutes in the state."""
        return sum(len(m.ips) for m in self.minutes.values())

    def process(self, batch: ForwardBatch, offset: int) -> int:
        """Apply one forwarded batch; returns the number of billed clicks newly un-billed."""
        if self.next_offset is not None and offset < self.next_offset:
            return 0
        self.next_offset = offset + 1
        src, flagged_now = batch.src_partition, 0
        last = self.src_offsets.get(src, -1)
        # a minute below this is closed in every source (`policy.is_closed_by`, hoisted out of
        # this loop, which runs once per click); stage 1 did not count its clicks either
        closed_below = self.policy.first_open_window(self.watermark)
        minutes, threshold, fraud_add = self.minutes, self.threshold, self.fraud.add
        cur_minute, m = None, None
        for r in batch.records:
            src_offset, minute = r.src_offset, r.minute
            if src_offset <= last:
                continue  # a stage-1 replay of a record already applied
            last = src_offset
            if minute < closed_below:
                continue
            if minute != cur_minute:
                cur_minute, m = minute, minutes.get(minute)
                if m is None:
                    m = minutes[minute] = _Minute()
            ip, counted = r.ip_hash, r.counted
            m.changed[ip] = None
            st = m.ips.get(ip)
            if st is None:
                if threshold >= 1:  # one click: at most the threshold, so not flagged
                    m.ips[ip] = m.pair(r.campaign_id, r.ad_id) + 1 if counted else 0
                    continue
                st = m.ips[ip] = [0, False, []]
            elif type(st) is int:  # a second click: the list form
                st = m.ips[ip] = [1, False, [st - 1] if st else []]
            st[N] += 1
            if counted:
                if st[FLAGGED]:
                    fraud_add((minute, r.campaign_id, r.ad_id), 1, offset)
                    flagged_now += 1
                else:
                    st[COUNTED].append(m.pair(r.campaign_id, r.ad_id))
            if st[N] > threshold and not st[FLAGGED]:
                st[FLAGGED] = True
                billed = Counter(m.pairs[i] for i in st[COUNTED])
                for (c, a), k in sorted(billed.items()):
                    fraud_add((minute, c, a), k, offset)
                    flagged_now += k
                st[COUNTED] = []
        self.src_offsets[src] = last
        if batch.src_watermark > self.src_watermarks.get(src, NO_WATERMARK):
            self.src_watermarks[src] = batch.src_watermark
            self._expire()
        return flagged_now

    def _expire(self) -> None:
        wm = self.watermark
        if wm == NO_WATERMARK:
            return
        for minute in [m for m in self.minutes if self.policy.is_closed_by(m, wm)]:
            del self.minutes[minute]
        self.fraud.drop(lambda start: self.policy.is_closed_by(start, wm))

    def rows(self) -> list[Row]:
        return self.fraud.rows()

    def mark_published(self, rows: list[Row]) -> None:
        self.fraud.mark_published(rows)

    def flagged(self, ip_hash: str, minute: int) -> bool:
        m = self.minutes.get(minute)
        st = m.state(ip_hash) if m is not None else None
        return st is not None and st[1]

    def mark_all_dirty(self) -> int:
        return self.fraud.mark_all_dirty()

    @property
    def has_progress(self) -> bool:
        """Records were applied since the last checkpoint."""
        return self.next_offset is not None and self.next_offset != self._base

    def skip(self, offset: int) -> None:
        """An undecodable record: step over it (deterministically, like any other record)."""
        if self.next_offset is None or offset >= self.next_offset:
            self.next_offset = offset + 1

    def delta(self) -> bytes | None:
        if self.next_offset is None or self.next_offset == self._base:
            return None
        ips = []
        for minute, m in self.minutes.items():
            ips.extend((ip, minute, *m.state(ip)) for ip in m.changed)
            m.changed = {}
        delta = IpRateDelta(
            self._base,
            self.next_offset,
            sorted(self.src_offsets.items()),
            sorted(self.src_watermarks.items()),
            ips,
            self.fraud.take_changed(),
            self.fraud.pending(),
        )
        self._base = self.next_offset
        return pack(batch_encoder.encode(delta))

    def apply(self, data: bytes) -> bool:
        d = _delta_decoder.decode(unpack(data))
        if self.next_offset is not None and d.base != self.next_offset:
            return False
        self.src_offsets.update(dict(d.src_offsets))
        self.src_watermarks.update(dict(d.src_watermarks))
        for ip, minute, n, flagged, counted in d.ips:
            m = self.minutes.get(minute)
            if m is None:
                m = self.minutes[minute] = _Minute()
            m.load(ip, n, flagged, counted)
        self.fraud.load(d.fraud, d.pending)
        self.next_offset = self._base = d.end
        self._expire()
        return True
