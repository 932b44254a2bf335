"""Absolute, versioned counts per (window, campaign, ad): what the sink writes.

`dirty` holds the latest unpublished value per key (bounded by the number of keys, not by the
number of events), so a sink outage costs memory proportional to keys touched, never events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

WKey = tuple[int, str, str]  # (window start ms, campaign_id, ad_id)
Row = tuple[int, str, str, int, int]  # WKey + (absolute count, version)


class AbsoluteCounts:
    def __init__(self, sign: int = 1) -> None:
        self.sign = sign  # -1: rows are subtractions (fraud corrections)
        self.counts: dict[WKey, list[int]] = {}
        self.dirty: dict[WKey, tuple[int, int]] = {}
        self._changed: set[WKey] = set()

    def add(self, key: WKey, n: int, version: int) -> None:
        w = self.counts.get(key)
        if w is None:
            w = self.counts[key] = [n, version]
        else:
            w[0] += n
            w[1] = version
        self.dirty[key] = (w[0], version)
        self._changed.add(key)

    def get(self, key: WKey) -> int:
        w = self.counts.get(key)
        return w[0] if w else 0

    def drop(self, closed: Callable[[int], bool]) -> None:
        """Forget keys whose window no longer changes (their last value stays in `dirty`)."""
        for key in [k for k in self.counts if closed(k[0])]:
            del self.counts[key]

    def mark_all_dirty(self) -> int:
        for key, (n, v) in self.counts.items():
            self.dirty[key] = (n, v)
        return len(self.counts)

    def rows(self) -> list[Row]:
        s = self.sign
        return [(m, c, a, s * n, v) for (m, c, a), (n, v) in self.dirty.items()]

    def mark_published(self, rows: Iterable[Row]) -> None:
        s = self.sign
        for m, c, a, n, v in rows:
            if self.dirty.get((m, c, a)) == (s * n, v):
                del self.dirty[(m, c, a)]

    # --- checkpoint encoding (unsigned) ------------------------------------------------------
    def take_changed(self) -> list[Row]:
        out = [(*k, *self.counts[k]) for k in self._changed if k in self.counts]
        self._changed = set()
        return out

    def pending(self) -> list[Row]:
        return [(*k, n, v) for k, (n, v) in self.dirty.items()]

    def load(self, changed: Iterable[Row], pending: Iterable[Row]) -> None:
        for m, c, a, n, v in changed:
            self.counts[(m, c, a)] = [n, v]
        self.dirty = {(m, c, a): (n, v) for m, c, a, n, v in pending}
