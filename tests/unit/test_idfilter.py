"""The store's in-memory filter may only say "certainly new" for keys never added: a false
negative would count a duplicate click twice. Its false-positive rate stays near its estimate,
one generation per store bucket goes with its bucket, and past the most generations the oldest
merge without forgetting a key."""

from __future__ import annotations

import os
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.logic.idfilter import IdFilter

MIN = 60_000


@settings(max_examples=100, deadline=None)
@given(
    buckets=st.lists(st.integers(0, 50), min_size=1, max_size=30),
    per=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    structured=st.booleans(),
)
def test_no_false_negatives(buckets, per, seed, structured):
    rng = random.Random(seed)
    # tiny arrays, few of them: many collisions, and merges of generations
    f = IdFilter(bits_per_generation=1 << 14, max_generations=3)
    added = []
    for b in buckets:
        if structured:  # ids that are not random bytes (counters): the mixing must spread them
            keys = [(len(added) + i).to_bytes(16, "big") for i in range(per)]
        else:
            keys = [rng.randbytes(16) for _ in range(per)]
        f.add_block(b, b"".join(keys))
        added.append((b, keys))
    assert len(f.gens) <= 3
    for b, keys in added:  # each key passes in a generation that stands for its bucket
        hits = [maybe for bs, maybe in f.candidates(b"".join(keys)) if b in bs]
        assert len(hits) == 1 and hits[0].all()
    assert f.may_contain(b"".join(k for _b, keys in added for k in keys)).all()


def test_false_positive_rate_is_near_its_estimate():
    f = IdFilter(bits_per_generation=8 << 20)
    f.add_block(0, os.urandom(16 * 500_000))  # ~16.8 bits per key
    rate = f.may_contain(os.urandom(16 * 200_000)).mean()
    assert 0 < rate < 0.01
    assert abs(rate - f.false_positive_rate()) < max(0.5 * f.false_positive_rate(), 0.001)


def test_generations_go_with_their_buckets_and_merge_past_the_cap():
    f = IdFilter(bits_per_generation=1 << 16, max_generations=2)
    a, b, c = (os.urandom(16 * 10) for _ in range(3))
    f.add_block(0, a)
    f.add_block(1, b)
    assert [g.buckets for g in f.gens] == [[0], [1]]
    f.add_block(2, c)  # a third: the two oldest merge
    assert [g.buckets for g in f.gens] == [[0, 1], [2]]
    assert [bs for bs, _m in f.candidates(a)] == [[2], [0, 1]]  # newest first
    assert f.may_contain(a + b + c).all()
    assert f.drop({0}) == 0 and [g.buckets for g in f.gens] == [[1], [2]]
    assert f.drop({1}) == 1 and not f.may_contain(a + b).any() and f.may_contain(c).all()
    assert f.memory_bytes == np.zeros(1 << 10, dtype=np.uint64).nbytes
