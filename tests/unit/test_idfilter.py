"""The store's in-memory filter may only say "certainly new" for keys never added: a false
negative would count a duplicate click twice. Its false-positive rate stays near its estimate,
and generations go once every minute they hold expired."""

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
    minutes=st.lists(st.integers(0, 50), min_size=1, max_size=30),
    per=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
    structured=st.booleans(),
)
def test_no_false_negatives(minutes, per, seed, structured):
    rng = random.Random(seed)
    f = IdFilter(span_ms=10 * MIN, bits_per_generation=1 << 14)  # tiny: many collisions
    added = []
    for m in minutes:
        if structured:  # ids that are not random bytes (counters): the mixing must spread them
            keys = [(len(added) + i).to_bytes(16, "big") for i in range(per)]
        else:
            keys = [rng.randbytes(16) for _ in range(per)]
        f.add_block(m * MIN, b"".join(keys))
        added += keys
    assert f.may_contain(b"".join(added)).all()


def test_false_positive_rate_is_near_its_estimate():
    f = IdFilter(span_ms=24 * 60 * MIN, bits_per_generation=8 << 20)
    f.add_block(0, os.urandom(16 * 500_000))  # ~16.8 bits per key
    rate = f.may_contain(os.urandom(16 * 200_000)).mean()
    assert 0 < rate < 0.01
    assert abs(rate - f.false_positive_rate()) < max(0.5 * f.false_positive_rate(), 0.001)


def test_generations_are_dropped_once_all_their_minutes_expired():
    f = IdFilter(span_ms=20 * MIN, bits_per_generation=1 << 16)  # a generation = 10 minutes
    a, b = os.urandom(16 * 10), os.urandom(16 * 10)
    f.add_block(3 * MIN, a)  # generation 0: minutes [0, 10)
    f.add_block(12 * MIN, b)  # generation 1
    assert f.drop_expired(9 * MIN) == 0 and f.may_contain(a).all()  # minute 9 still alive
    assert f.drop_expired(10 * MIN) == 1
    assert not f.may_contain(a).any() and f.may_contain(b).all()
    assert f.memory_bytes == np.zeros(1 << 10, dtype=np.uint64).nbytes
