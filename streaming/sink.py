"""ClickHouse sink of absolute, versioned counts (blocking; the runner calls it in a thread).

Idempotent by construction: a row is (key, version, absolute count) with the count a pure
function of the source log up to `version`, so writing a row twice, or an older row after a
newer one, never changes what `argMax(clicks, version)` returns.
"""

from __future__ import annotations

from datetime import UTC, datetime

from clickagg_platform.settings import Settings
from streaming.logic.counts import Row

SOURCE_CLICKS = 0  # stage 1: billed clicks per source partition
SOURCE_FRAUD = 1  # stage 2: negative corrections per forward-topic partition

_COLUMNS = "window_start, campaign_id, ad_id, source, source_partition, clicks, version"


class ClickHouseSink:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = f"{settings.clickhouse_database}.hot_clicks"
        self._client = None

    def write(self, rows: list[tuple[Row, int, int]]) -> None:
        """rows: ((minute ms, campaign, ad, clicks, version), source, partition)."""
        if not rows:
            return
        from clickagg_platform import clickhouse

        data = [
            (datetime.fromtimestamp(m // 1000, UTC), c, a, src, part, n, v)
            for (m, c, a, n, v), src, part in rows
        ]
        if self._client is None:
            self._client = clickhouse.client(
                self.settings, connect_timeout=2, send_receive_timeout=10
            )
        try:
            self._client.execute(f"INSERT INTO {self.table} ({_COLUMNS}) VALUES", data)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.disconnect()
            finally:
                self._client = None
