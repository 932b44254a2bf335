"""HTTP target: GET every click URL from the capture service, as a browser would.

Transport retries re-send the identical URL (same event_id, recorded as a retry, not as a
click); the 302 is never followed and no cookie is ever stored.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
from pathlib import Path

import httpx

from clickagg_platform.loadgen.pacing import LoadStats, backoff, drive, wall_ms
from clickagg_platform.loadgen.plan import LoadPlan
from clickagg_platform.loadgen.requests import PlannedRequest
from clickagg_platform.loadgen.session import LoadResult, check_positive, finish, prepare
from clickagg_platform.loadgen.truth import SentClick
from clickagg_platform.settings import Settings, get_settings

# httpcore's pool gets slower per request as it grows; 16 connections cover ~20 ms latency at
# the few hundred req/s one httpx process can send
DEFAULT_HTTP_CONCURRENCY = 16


def _retryable(status: int | None) -> bool:
    """Connection errors, timeouts, 5xx and 429 may succeed later; other answers will not."""
    return status is None or status >= 500 or status == 429


async def _send_http(
    client: httpx.AsyncClient, req: PlannedRequest, max_attempts: int, stats: LoadStats
) -> SentClick:
    """GET the click URL until it answers 302 (or gives up); retries re-send the same URL."""
    attempts = 0
    while True:
        attempts += 1
        sent_ms = wall_ms()
        try:
            response = await client.get(req.path, headers=req.headers)
            status, error = response.status_code, None
        except httpx.HTTPError as exc:  # connect errors, timeouts, protocol errors
            status, error = None, f"{type(exc).__name__}: {exc}"[:200]
        if status == 302 or attempts >= max_attempts or not _retryable(status):
            break
        stats.retries += 1
        await asyncio.sleep(backoff(attempts))
    return SentClick(req, status == 302, attempts, sent_ms, status, error)


def _http_client(
    base_url: str, concurrency: int, timeout_s: float, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """A pooled client that never follows the 302 and never stores cookies (each request
    carries its own simulated user's cookie)."""
    no_cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(
        base_url=base_url,
        follow_redirects=False,
        cookies=no_cookies,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        transport=transport,
    )


async def run_http_load(
    plan: LoadPlan,
    base_url: str | None = None,
    concurrency: int = DEFAULT_HTTP_CONCURRENCY,
    manifest_path: Path | None = None,
    *,
    settings: Settings | None = None,
    max_attempts: int = 8,
    timeout_s: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
    stats: LoadStats | None = None,
) -> LoadResult:
    """Send the plan to the capture service over HTTP; write the manifest if a path is given.

    `plan.start_ms` defaults to now. Raises ValueError on bad arguments, CancelledError after
    writing a partial manifest if cancelled.
    """
    settings = settings or get_settings()
    base_url = base_url or settings.public_base_url
    check_positive(concurrency=concurrency, max_attempts=max_attempts, timeout_s=timeout_s)
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {base_url!r}")
    async with _http_client(base_url, concurrency, timeout_s, transport) as client:
        prep = prepare(plan, settings, stats)  # after the client: its start time is "now"

        async def send(req: PlannedRequest) -> SentClick:
            return await _send_http(client, req, max_attempts, prep.stats)

        interrupted = await drive(prep.requests, send, concurrency, prep.builder, prep.stats)
    run = {"concurrency": concurrency, "max_attempts": max_attempts, "timeout_s": timeout_s}
    return finish(prep, "http", base_url, run, manifest_path, interrupted)
