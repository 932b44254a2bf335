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

IpKey = tuple[str, int]  # (ip_hash, minute)


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


# per (ip, minute): [distinct clicks, flagged, (campaign, ad) of each click billed so far]
N, FLAGGED, COUNTED = 0, 1, 2


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
        self.ips: dict[IpKey, list] = {}
        self._ips_by_minute: dict[int, list[IpKey]] = {}
        self.fraud = AbsoluteCounts(sign=-1)
        self.next_offset: int | None = None
        self._base: int | None = None
        self._changed_ips: dict[IpKey, list] = {}  # changed since the last delta -> its state

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
        ips, changed, threshold = self.ips, self._changed_ips, self.threshold
        by_minute, bucket_minute, bucket = self._ips_by_minute, None, []
        for r in batch.records:
            src_offset, minute = r.src_offset, r.minute
            if src_offset <= last:
                continue  # a stage-1 replay of a record already applied
            last = src_offset
            if minute < closed_below:
                continue
            key = (r.ip_hash, minute)
            st = ips.get(key)
            if st is None:
                st = ips[key] = [0, False, []]
                if minute != bucket_minute:
                    bucket_minute, bucket = minute, by_minute.setdefault(minute, [])
                bucket.append(key)
            changed[key] = st
            st[N] += 1
            if r.counted:
                if st[FLAGGED]:
                    self.fraud.add((minute, r.campaign_id, r.ad_id), 1, offset)
                    flagged_now += 1
                else:
                    st[COUNTED].append((r.campaign_id, r.ad_id))
            if st[N] > threshold and not st[FLAGGED]:
                st[FLAGGED] = True
                for (c, a), k in sorted(Counter(st[COUNTED]).items()):
                    self.fraud.add((minute, c, a), k, offset)
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
        for minute in [m for m in self._ips_by_minute if self.policy.is_closed_by(m, wm)]:
            for key in self._ips_by_minute.pop(minute):
                self.ips.pop(key, None)
                self._changed_ips.pop(key, None)
        self.fraud.drop(lambda start: self.policy.is_closed_by(start, wm))

    def rows(self) -> list[Row]:
        return self.fraud.rows()

    def mark_published(self, rows: list[Row]) -> None:
        self.fraud.mark_published(rows)

    def flagged(self, ip_hash: str, minute: int) -> bool:
        st = self.ips.get((ip_hash, minute))
        return bool(st and st[FLAGGED])

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
        changed = self._changed_ips.items()
        ips = [(ip, m, st[N], st[FLAGGED], st[COUNTED]) for (ip, m), st in changed]
        delta = IpRateDelta(
            self._base,
            self.next_offset,
            sorted(self.src_offsets.items()),
            sorted(self.src_watermarks.items()),
            ips,
            self.fraud.take_changed(),
            self.fraud.pending(),
        )
        self._base, self._changed_ips = self.next_offset, {}
        return pack(batch_encoder.encode(delta))

    def apply(self, data: bytes) -> bool:
        d = _delta_decoder.decode(unpack(data))
        if self.next_offset is not None and d.base != self.next_offset:
            return False
        self.src_offsets.update(dict(d.src_offsets))
        self.src_watermarks.update(dict(d.src_watermarks))
        for ip, minute, n, flagged, counted in d.ips:
            if (ip, minute) not in self.ips:
                self._ips_by_minute.setdefault(minute, []).append((ip, minute))
            self.ips[(ip, minute)] = [n, flagged, [tuple(ca) for ca in counted]]
        self.fraud.load(d.fraud, d.pending)
        self.next_offset = self._base = d.end
        self._expire()
        return True
