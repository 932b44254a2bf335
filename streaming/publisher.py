"""Publishes the owned partitions' dirty absolute counts to ClickHouse, every few hundred ms.

A failed write (ClickHouse down) is retried with exponential backoff while the worker keeps
consuming; what waits is the latest count per key, so memory is bounded by keys, not events.
"""

from __future__ import annotations

import asyncio
import logging
import time

from streaming import metrics as M
from streaming.config import StreamSettings
from streaming.sink import SOURCE_CLICKS, SOURCE_FRAUD, ClickHouseSink

log = logging.getLogger("clickagg.stream")


class Publisher:
    def __init__(self, procs: dict, source_topic: str, sink: ClickHouseSink, ss: StreamSettings):
        self.procs, self.source_topic, self.sink, self.ss = procs, source_topic, sink, ss

    def _collect(self):
        rows, parts = [], []
        for tp, proc in self.procs.items():
            source = SOURCE_CLICKS if tp.topic == self.source_topic else SOURCE_FRAUD
            mine = proc.rows()
            if mine:
                parts.append((proc, mine))
                rows.extend((r, source, tp.partition) for r in mine)
        return rows, parts

    async def publish_once(self) -> int:
        """Write every dirty row; on success forget those not changed meanwhile."""
        rows, parts = self._collect()
        M.SINK_PENDING.set(len(rows))
        if not rows:
            return 0
        t0 = time.perf_counter()
        await asyncio.to_thread(self.sink.write, rows)
        M.SINK_LATENCY.observe(time.perf_counter() - t0)
        for proc, mine in parts:
            proc.mark_published(mine)
        return len(rows)

    async def loop(self) -> None:
        backoff = self.ss.publish_interval_s
        while True:
            await asyncio.sleep(backoff)
            try:
                await self.publish_once()
                backoff = self.ss.publish_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - ClickHouse down: keep counting, retry
                M.SINK_ERRORS.inc()
                backoff = min(max(backoff * 2, 0.2), self.ss.sink_backoff_max_s)
                log.warning("sink write failed (retry in %.1fs): %r", backoff, exc)
