"""Stale-batch guard for consumers whose rebalance listener seeks.

`getmany()` returns records that match each partition's position at the moment they are drained.
A rebalance listener runs in another task; if it seeks a partition after a batch was drained but
before the batch is applied, that batch is stale: applying it would put offsets from the old
position into state that now restarts at the new one (the archiver wrote some offsets twice in a
block this way; the counter would move `next_offset` past records it never counted). The
consumer re-fetches from the new position, so a stale batch is dropped, per partition.

Usage: every seek goes through `Seeks.seek`; take `snapshot(batch)` right after `getmany`
returns (no await in between) and apply only `fresh(batch, snap)` under the listener's lock.
"""

from __future__ import annotations

from collections import Counter


class Seeks:
    def __init__(self) -> None:
        self._count: Counter = Counter()

    def seek(self, consumer, tp, offset: int) -> None:
        consumer.seek(tp, offset)
        self._count[tp] += 1

    def invalidate(self, tp) -> None:
        """The partition was revoked: whatever was drained for it before is not ours to apply."""
        self._count[tp] += 1

    def snapshot(self, batch: dict) -> dict:
        return {tp: self._count[tp] for tp in batch}

    def fresh(self, batch: dict, snap: dict) -> dict:
        """The partitions of `batch` not seeked since `snap` was taken."""
        return {tp: msgs for tp, msgs in batch.items() if self._count[tp] == snap[tp]}
