"""The open bucket of an `IdStore`, held in memory until it is sealed.

Writing each new id into RocksDB was most of what the store added to stage 1's cost per click
(a memtable insert, then the flush to L0 and the compactions of the open bucket: ~1.9 us per id,
against ~0.4 us for everything else a checkpoint does; docs/streaming.md). The ids of the open
bucket are durable anyway, in the expiry-index blobs every flush writes (one packed block per
minute), so the open bucket is kept here as sorted arrays of 16-byte keys and written ONCE,
when it is sealed, as a sorted SST file that RocksDB ingests (no memtable, no compaction).
On open, the store rebuilds it from those blobs.

Memory: 16 bytes per id (plus a small array header per block), bounded by the bucket size
(`StoreTuning.bucket_ids`). Lookups are vectorised (`numpy.searchsorted` per block, newest
first); blocks are merged by size tiers (`MERGE_N` blocks of one tier become one block of the
next), so a lookup touches at most (MERGE_N - 1) x tiers blocks and an id is merged once per
tier: log_8 of the flushes a bucket takes (2 for 1 M ids in 16 k-id flushes, 3 for 8 M).
Readers (lookups on the event loop) and the writer (the flush thread) share it: every change
replaces `blocks` / `others` with a new object, never mutates one a reader may hold.
"""

from __future__ import annotations

import struct

import numpy as np

_MINUTE = struct.Struct(">I")  # as the store's values: u32 minutes since the epoch
MERGE_N = 8  # blocks of one tier merged into one of the next


class MemBucket:
    __slots__ = ("blocks", "tiers", "others", "ids")

    def __init__(self) -> None:
        # (sorted S16 keys, their minutes as u32): oldest first; a key in several blocks has
        # the minute of the newest (an id remembered anew after its horizon)
        self.blocks: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
        self.tiers: tuple[int, ...] = ()  # of each block: 0 as added, t + 1 for merged tier t
        self.others: dict[bytes, int] = {}  # keys of non-hex ids -> minute index
        self.ids = 0  # ids added (a key added twice counts twice, as in the bucket's meta)

    def add(self, minute: int, block: bytes) -> None:
        """One minute's 16-byte keys, packed back to back (minute as a minute index)."""
        keys = np.sort(np.frombuffer(block, dtype="S16"))
        blocks = (*self.blocks, (keys, np.full(len(keys), minute, dtype=np.uint32)))
        tiers = (*self.tiers, 0)
        # tiers never rise from old to new, so the newest MERGE_N of one tier are contiguous
        while len(tiers) >= MERGE_N and len(set(tiers[-MERGE_N:])) == 1:
            blocks = (*blocks[:-MERGE_N], _merge(blocks[-MERGE_N:]))
            tiers = (*tiers[:-MERGE_N], tiers[-1] + 1)
        self.blocks, self.tiers = blocks, tiers
        self.ids += len(keys)

    def add_others(self, minute: int, keys: list[bytes]) -> None:
        self.others = {**self.others, **dict.fromkeys(keys, minute)}
        self.ids += len(keys)

    def read(self, keys: list[bytes], order: list[int], out: list) -> list[int]:
        """Fill `out[i]` (the store's value: 4-byte minute) for `i` in `order` whose key is
        here; returns the rest, as `IdStore._read` does for a bucket in RocksDB."""
        blocks, others = self.blocks, self.others
        ids, rest = [], []
        for i in order:
            key = keys[i]
            if len(key) == 16:
                ids.append(i)
            elif key in others:
                out[i] = _MINUTE.pack(others[key])
            else:
                rest.append(i)
        if not ids or not blocks:
            return sorted(rest + ids)
        q = np.frombuffer(b"".join(keys[i] for i in ids), dtype="S16")
        minute = np.full(len(ids), -1, dtype=np.int64)
        todo = np.ones(len(ids), dtype=bool)
        for arr, minutes in reversed(blocks):  # newest first: its copy wins
            pos = np.searchsorted(arr, q)
            pos[pos == len(arr)] = 0
            hit = todo & (arr[pos] == q)
            if hit.any():
                minute[hit] = minutes[pos[hit]]
                todo &= ~hit
                if not todo.any():
                    break
        for j, i in enumerate(ids):
            if minute[j] >= 0:
                out[i] = _MINUTE.pack(int(minute[j]))
            else:
                rest.append(i)
        return sorted(rest)

    def items(self) -> tuple[list[bytes], list[bytes]]:
        """Every key once (its newest minute), in byte order, with its value: what the sealed
        bucket's SST file holds."""
        keys, values = [], []
        if self.blocks:
            merged, minutes = _merge(self.blocks)
            keys = merged.view("V16").tolist()  # bytes objects, made in C (S16 would strip NULs)
            minutes = minutes.tolist()
            packed = {m: _MINUTE.pack(m) for m in set(minutes)}  # (a few distinct minutes)
            values = list(map(packed.__getitem__, minutes))
        if self.others:
            pairs = sorted([*zip(keys, values, strict=True), *self._other_items()])
            keys, values = [k for k, _ in pairs], [v for _, v in pairs]
        return keys, values

    def _other_items(self) -> list[tuple[bytes, bytes]]:
        return [(k, _MINUTE.pack(m)) for k, m in self.others.items()]

    def distinct(self) -> int:
        """Distinct keys held (by a merge: tests and tools)."""
        return (len(_merge(self.blocks)[0]) if self.blocks else 0) + len(self.others)


def _merge(blocks) -> tuple[np.ndarray, np.ndarray]:
    """Blocks (oldest first) as one: each key once, with the minute of its newest block."""
    keys = np.concatenate([k for k, _ in reversed(blocks)])  # newest first ...
    minutes = np.concatenate([m for _, m in reversed(blocks)])
    # ... and a stable sort keeps equal keys in that order; on sorted runs it is a merge
    # (0.055 us per key for 16 runs, against 0.23 for `np.unique`'s full sort)
    order = np.argsort(keys, kind="stable")
    keys, minutes = keys[order], minutes[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return keys[first], minutes[first]
