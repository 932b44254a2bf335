"""`MemBucket`: the open bucket's ids in memory answer like a dict of key -> newest minute."""

from __future__ import annotations

import os
import random

from streaming.logic import membucket
from streaming.logic.membucket import MemBucket


def minute(raw: bytes | None) -> int | None:
    return None if raw is None else int.from_bytes(raw, "big")


def test_reads_like_a_dict_of_the_newest_minute_through_merges():
    rng = random.Random(7)
    bucket, want = MemBucket(), {}
    pool = [os.urandom(16) for _ in range(3000)] + [b"\x00" * 16, b"\xff" * 16]
    others = [b"\xffnot-hex-%d" % i for i in range(20)]
    for m in range(membucket.MERGE_N**2 + 3):  # two tiers of merges
        keys = list({rng.choice(pool) for _ in range(rng.randrange(1, 200))})
        bucket.add(m, b"".join(keys))
        want.update(dict.fromkeys(keys, m))
        if m % 7 == 0:
            o = rng.sample(others, 3)
            bucket.add_others(m, o)
            want.update(dict.fromkeys(o, m))
    assert max(bucket.tiers) == 2 and len(bucket.blocks) == 1 + 3  # 67 = 64 + 3 blocks
    assert len(bucket.blocks) == len(bucket.tiers)
    probe = pool + others + [os.urandom(16) for _ in range(50)]
    out = [None] * len(probe)
    missed = bucket.read(probe, list(range(len(probe))), out)
    assert {probe[i]: minute(out[i]) for i in range(len(probe)) if out[i]} == want
    assert sorted(missed) == [i for i, k in enumerate(probe) if k not in want]
    keys, values = bucket.items()
    assert keys == sorted(want) and [minute(v) for v in values] == [want[k] for k in keys]
    assert bucket.distinct() == len(want)


def test_a_reader_keeps_the_blocks_it_started_with():
    bucket = MemBucket()
    bucket.add(1, os.urandom(16 * 10))
    held = bucket.blocks
    for m in range(2, 40):
        bucket.add(m, os.urandom(16 * 10))
    assert len(held) == 1 and held is not bucket.blocks  # replaced, never mutated
