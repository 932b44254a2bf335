"""An in-memory filter in front of the RocksDB id store: "certainly new" or "look it up".

Most clicks are new ids, and a RocksDB miss at 20 M ids still cost ~3-4 us from Python (five
sorted runs to probe, each through its own bloom filter and block-cache lookups), against
~0.3 us per click for the whole in-memory rule before. This filter answers a whole chunk of keys
in a few numpy passes; only the keys it cannot rule out (duplicates, and ~2% false positives)
go to RocksDB. It never decides a duplicate: a key it passes is looked up, so dedup stays exact.

Register-blocked bloom filter: each key sets `k` bits within ONE 64-bit word (one memory access
per key and generation). One generation per bucket of the store (`IdStore`: the ids flushed
while that bucket was open), so a key that passes names the bucket(s) to look in, and a
generation goes when its bucket is dropped (all its minutes expired): the filter never fills
with expired ids. Memory is `bits_per_generation` x live generations, at most
`max_generations`: past that the two oldest are merged (OR-ed: a union of the two bloom filters,
answering "maybe in one of these buckets"), so memory is fixed by configuration, not by the
number of ids; more ids than it was sized for only raise the false-positive rate (more RocksDB
lookups), never change an answer.

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
    __slots__ = ("words", "n", "buckets")

    def __init__(self, n_words: int, bucket: int) -> None:
        # an anonymous mapping of its own, not the heap: freed back to the system when the
        # generation is dropped (glibc raised its mmap threshold after the first 16 MiB array
        # was freed, put the next ones on the heap and kept their pages: the soak's RSS grew
        # by a generation at each step)
        self.words = np.frombuffer(mmap.mmap(-1, n_words * 8), dtype=np.uint64)
        self.n = 0  # keys added (for the false-positive estimate)
        self.buckets = [bucket]  # the store buckets whose keys it holds, oldest first


class IdFilter:
    def __init__(self, bits_per_generation: int, k: int = 4, max_generations: int = 32) -> None:
        self.n_words = max(bits_per_generation // 64, 1024)
        self.k = k
        self.max_generations = max(max_generations, 2)
        # oldest first; replaced, never mutated, while queries run (lookups run beside flushes)
        self.gens: list[_Generation] = []

    def _split(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = (h >> np.uint64(32)) % np.uint64(self.n_words)
        mask = np.zeros(len(h), dtype=np.uint64)
        one, six, sixty_three = np.uint64(1), np.uint64(6), np.uint64(63)
        bits = h
        for _ in range(self.k):
            mask |= one << (bits & sixty_three)
            bits = bits >> six
        return index, mask

    def _generation(self, bucket: int) -> _Generation:
        for gen in self.gens:
            if bucket in gen.buckets:
                return gen
        gens = sorted([*self.gens, _Generation(self.n_words, bucket)], key=lambda g: g.buckets[0])
        if len(gens) > self.max_generations:  # merge the two oldest into a new array
            a, b = gens[0], gens[1]
            merged = _Generation(self.n_words, a.buckets[0])
            np.bitwise_or(a.words, b.words, out=merged.words)
            merged.n, merged.buckets = a.n + b.n, sorted(a.buckets + b.buckets)
            gens = [merged, *gens[2:]]
        self.gens = gens
        return self._generation(bucket)

    def add_block(self, bucket: int, block: bytes) -> None:
        """Add a packed block of 16-byte keys stored in `bucket`."""
        if not block:
            return
        gen = self._generation(bucket)
        index, mask = self._split(_hashes(block))
        words = gen.words
        words[index] |= mask  # a word indexed twice keeps one of its masks only:
        lost = (words[index] & mask) != mask  # those few are OR-ed again, one by one in C
        if lost.any():
            np.bitwise_or.at(words, index[lost], mask[lost])
        gen.n += len(index)

    def candidates(self, block: bytes) -> list[tuple[list[int], np.ndarray]]:
        """Per live generation, newest first, the buckets it stands for and, per 16-byte key of
        a packed block, whether the key may be in one of them (False = certainly not)."""
        n = len(block) // 16
        gens = self.gens
        if not gens or n == 0:
            return []
        index, mask = self._split(_hashes(block))
        return [(gen.buckets, (gen.words[index] & mask) == mask) for gen in reversed(gens)]

    def may_contain(self, block: bytes) -> np.ndarray:
        """Per 16-byte key of a packed block: False = certainly not added (in a live
        generation), True = maybe (look it up)."""
        out = np.zeros(len(block) // 16, dtype=bool)
        for _buckets, maybe in self.candidates(block):
            out |= maybe
        return out

    def drop(self, buckets: set[int]) -> int:
        """Forget dropped buckets; a generation goes once all its buckets are gone. Returns the
        number of generations freed."""
        keep = []
        for gen in self.gens:
            left = [b for b in gen.buckets if b not in buckets]
            if left:
                keep.append(gen)
                if len(left) < len(gen.buckets):
                    gen.buckets = left  # (its keys of the dropped bucket stay: false positives)
        freed = len(self.gens) - len(keep)
        if freed or len(keep) != len(self.gens):
            self.gens = keep
        return freed

    @property
    def memory_bytes(self) -> int:
        return sum(gen.words.nbytes for gen in self.gens)

    def false_positive_rate(self) -> float:
        """Estimated chance that a key never added passes (over the live generations): keys
        per word are Poisson distributed, and a word with j keys has each bit set with
        probability 1 - (63/64)^(k*j)."""
        passes_none = 1.0
        for gen in self.gens:
            lam = gen.n / self.n_words
            j = np.arange(0, int(lam + 10 * lam**0.5 + 20))
            log_pois = j * np.log(max(lam, 1e-300)) - lam - np.cumsum(np.log(np.maximum(j, 1)))
            rate = float(np.sum(np.exp(log_pois) * (1 - (63 / 64) ** (self.k * j)) ** self.k))
            passes_none *= 1.0 - rate
        return 1.0 - passes_none
