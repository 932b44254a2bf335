"""An in-memory filter in front of the RocksDB id store: "certainly new" or "look it up".

Most clicks are new ids, and a RocksDB miss at 20 M ids still cost ~3-4 us from Python (five
sorted runs to probe, each through its own bloom filter and block-cache lookups), against
~0.3 us per click for the whole in-memory rule before. This filter answers a whole chunk of keys
in a few numpy passes; only the keys it cannot rule out (duplicates, and ~2% false positives)
go to RocksDB. It never decides a duplicate: a key it passes is looked up, so dedup stays exact.

Register-blocked bloom filter: each key sets `k` bits within ONE 64-bit word (one memory access
per key and generation). Generations follow the store's expiry: generation g holds the ids of
minutes [g*G, (g+1)*G) (G = half the dedup span) and is dropped once all of them expired, so at
most three are alive and the filter never fills with expired ids. Memory is fixed by
configuration (`bits_per_generation`), not by the number of ids: more ids than it was sized for
only raise the false-positive rate (more RocksDB lookups), never change an answer.

Keys are the store's 16-byte ids (random: they are SHA-256 derived), mixed once more so that
non-random ids spread too; keys of other lengths are never in the filter (always looked up).
"""

from __future__ import annotations

import mmap

import numpy as np

_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xBF58476D1CE4E5B9)
_C3 = np.uint64(0x94D049BB133111EB)


def _hashes(block: bytes) -> np.ndarray:
    """One well-mixed 64-bit hash per 16-byte key of a packed block (splitmix64 finalizer over
    both halves)."""
    halves = np.frombuffer(block, dtype="<u8").reshape(-1, 2)
    with np.errstate(over="ignore"):
        x = halves[:, 0] ^ (halves[:, 1] * _C1)
        x = (x ^ (x >> np.uint64(30))) * _C2
        x = (x ^ (x >> np.uint64(27))) * _C3
        return x ^ (x >> np.uint64(31))


class _Generation:
    __slots__ = ("words", "n")

    def __init__(self, n_words: int) -> None:
        # an anonymous mapping of its own, not the heap: freed back to the system when the
        # generation is dropped (glibc raised its mmap threshold after the first 16 MiB array
        # was freed, put the next ones on the heap and kept their pages: the soak's RSS grew
        # by a generation at each step)
        self.words = np.frombuffer(mmap.mmap(-1, n_words * 8), dtype=np.uint64)
        self.n = 0  # keys added (for the false-positive estimate)


class IdFilter:
    def __init__(self, span_ms: int, bits_per_generation: int, k: int = 4) -> None:
        self.generation_ms = max(span_ms // 2, 60_000)
        self.n_words = max(bits_per_generation // 64, 1024)
        self.k = k
        self.gens: dict[int, _Generation] = {}  # replaced, never mutated, while queries run

    def _split(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = (h >> np.uint64(32)) % np.uint64(self.n_words)
        mask = np.zeros(len(h), dtype=np.uint64)
        one, six, sixty_three = np.uint64(1), np.uint64(6), np.uint64(63)
        bits = h
        for _ in range(self.k):
            mask |= one << (bits & sixty_three)
            bits = bits >> six
        return index, mask

    def add_block(self, minute_ms: int, block: bytes) -> None:
        """Add a packed block of 16-byte keys remembered with `minute_ms`."""
        if not block:
            return
        g = minute_ms // self.generation_ms
        gen = self.gens.get(g)
        if gen is None:
            gen = _Generation(self.n_words)
            self.gens = {**self.gens, g: gen}
        index, mask = self._split(_hashes(block))
        words = gen.words
        words[index] |= mask  # a word indexed twice keeps one of its masks only:
        lost = (words[index] & mask) != mask  # those few are OR-ed again, one by one in C
        if lost.any():
            np.bitwise_or.at(words, index[lost], mask[lost])
        gen.n += len(index)

    def may_contain(self, block: bytes) -> np.ndarray:
        """Per 16-byte key of a packed block: False = certainly not added (in a live
        generation), True = maybe (look it up)."""
        n = len(block) // 16
        if not self.gens or n == 0:
            return np.zeros(n, dtype=bool)
        index, mask = self._split(_hashes(block))
        out = np.zeros(n, dtype=bool)
        for gen in self.gens.values():
            out |= (gen.words[index] & mask) == mask
        return out

    def drop_expired(self, first_alive_minute_ms: int) -> int:
        """Forget generations whose every minute is below the first minute still alive."""
        doomed = [g for g in self.gens if (g + 1) * self.generation_ms <= first_alive_minute_ms]
        if doomed:
            self.gens = {g: gen for g, gen in self.gens.items() if g not in doomed}
        return len(doomed)

    @property
    def memory_bytes(self) -> int:
        return sum(gen.words.nbytes for gen in self.gens.values())

    def false_positive_rate(self) -> float:
        """Estimated chance that a key never added passes (over the live generations): keys
        per word are Poisson distributed, and a word with j keys has each bit set with
        probability 1 - (63/64)^(k*j)."""
        passes_none = 1.0
        for gen in self.gens.values():
            lam = gen.n / self.n_words
            j = np.arange(0, int(lam + 10 * lam**0.5 + 20))
            log_pois = j * np.log(max(lam, 1e-300)) - lam - np.cumsum(np.log(np.maximum(j, 1)))
            rate = float(np.sum(np.exp(log_pois) * (1 - (63 / 64) ** (self.k * j)) ** self.k))
            passes_none *= 1.0 - rate
        return 1.0 - passes_none
