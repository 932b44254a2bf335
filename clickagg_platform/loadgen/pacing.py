"""Pacing: dispatch requests on an absolute wall-clock schedule with bounded concurrency.

Shared by the HTTP and the Kafka runner. Requests are never sent early, a slow moment is caught
up afterwards instead of shifting the rest of the run (no drift), and transport retries back
off exponentially.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from clickagg_platform.loadgen.requests import PlannedRequest
from clickagg_platform.loadgen.truth import GroundTruthBuilder, SentClick

RETRY_BACKOFF_S = (0.05, 2.0)  # first and largest wait between transport retries


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class LoadStats:
    """Live counters, read by the progress bar while the run mutates them."""

    planned: int
    sent: int = 0  # requests finished (after their retries)
    delivered: int = 0  # 302 / acked
    errors: int = 0  # requests that never got a 302 / ack
    retries: int = 0  # transport re-sends of the same URL
    max_lag_ms: int = 0  # how far behind schedule the sender got
    last_error: str | None = None


def backoff(attempt: int) -> float:
    return min(RETRY_BACKOFF_S[0] * 2 ** (attempt - 1), RETRY_BACKOFF_S[1])


async def sleep_until_wall(target_ms: int) -> None:
    """Wait until the wall clock reaches target_ms; never return early.

    The wall clock (not the loop's monotonic clock) gates sending because `t` is compared with
    the capture's wall clock: a request that left early would carry a `t` in the server's
    future and get its receive time instead.
    """
    while (delay := target_ms - wall_ms()) > 0:
        await asyncio.sleep(delay / 1000)


async def drive(
    requests: Iterable[PlannedRequest],
    send: Callable[[PlannedRequest], Awaitable[SentClick]],
    concurrency: int,
    builder: GroundTruthBuilder,
    stats: LoadStats,
) -> bool:
    """Dispatch every request at its scheduled time, at most `concurrency` in flight.

    Due times are absolute, so a slow moment is caught up afterwards instead of shifting the
    rest of the run (no drift). Returns True if interrupted (cancelled): in-flight requests are
    still awaited so the truth covers everything that may have reached the server.
    """
    sem = asyncio.Semaphore(concurrency)
    pending: set[asyncio.Task] = set()

    async def one(req: PlannedRequest) -> None:
        try:
            sent = await send(req)
        finally:
            sem.release()
        builder.add(sent)
        stats.sent += 1
        if sent.delivered:
            stats.delivered += 1
        else:
            stats.errors += 1
            stats.last_error = sent.error or f"HTTP {sent.status}"

    interrupted = False
    try:
        for req in requests:
            await sleep_until_wall(req.scheduled_ms)
            await sem.acquire()
            stats.max_lag_ms = max(stats.max_lag_ms, wall_ms() - req.scheduled_ms)
            task = asyncio.create_task(one(req))
            pending.add(task)
            task.add_done_callback(pending.discard)
    except asyncio.CancelledError:
        interrupted = True
    if pending:
        await asyncio.gather(*pending)
    return interrupted
