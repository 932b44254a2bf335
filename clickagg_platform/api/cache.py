"""A small time-bounded cache for the API's lookups (API keys, campaign owners)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any


class TtlCache:
    """Values loaded on a miss and kept `ttl_s` seconds, so a change in ClickHouse (a revoked
    key, a campaign moved) is seen within `ttl_s`. Bounded: cleared past `max_entries`."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable, load: Callable[[Hashable], Any]) -> Any:
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        value = load(key)
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (now, value)
        return value

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)
