"""`clickagg load`: send seeded click traffic (HTTP or straight to Kafka) and write its truth.

The traffic and the ground truth are pure logic in `loadgen`; this module is the I/O around
them: pacing on an absolute schedule (no drift, never early), bounded concurrency, transport
retries that re-send the identical URL (same event_id, recorded as a retry, not as a click),
a progress bar, the manifest + events.jsonl, and a summary table. Heavy imports stay inside
the functions so that `clickagg --help` remains fast.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    import httpx
    from rich.console import Console

    from clickagg_platform.loadgen import (
        Catalog,
        GroundTruth,
        GroundTruthBuilder,
        LoadPlan,
        PlannedRequest,
        SentClick,
    )
    from clickagg_platform.settings import Settings

# httpcore's pool gets slower per request as it grows; 16 connections cover ~20 ms latency at
# the few hundred req/s one httpx process can send
DEFAULT_HTTP_CONCURRENCY = 16
DEFAULT_KAFKA_IN_FLIGHT = 10_000
RETRY_BACKOFF_S = (0.05, 2.0)  # first and largest wait between transport retries
LAG_WARNING_MS = 2_000


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


@dataclass
class LoadResult:
    plan: LoadPlan
    target: str
    endpoint: str
    truth: GroundTruth
    manifest: dict
    manifest_path: Path | None
    events_path: Path | None
    elapsed_s: float
    achieved_rate: float
    stats: LoadStats
    builder: GroundTruthBuilder = field(repr=False)

    def event_rows(self) -> Iterator[dict]:
        """The per-event_id rows (same content as events.jsonl)."""
        return self.builder.iter_event_rows()


# --------------------------------------------------------------------------- pacing


async def _sleep_until_wall(target_ms: int) -> None:
    """Wait until the wall clock reaches target_ms; never return early.

    The wall clock (not the loop's monotonic clock) gates sending because `t` is compared with
    the capture's wall clock: a request that left early would carry a `t` in the server's
    future and get its receive time instead.
    """
    while (delay := target_ms - wall_ms()) > 0:
        await asyncio.sleep(delay / 1000)


async def _drive(
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
            await _sleep_until_wall(req.scheduled_ms)
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


# --------------------------------------------------------------------------- HTTP target


def _backoff(attempt: int) -> float:
    return min(RETRY_BACKOFF_S[0] * 2 ** (attempt - 1), RETRY_BACKOFF_S[1])


def _retryable(status: int | None) -> bool:
    """Connection errors, timeouts, 5xx and 429 may succeed later; other answers will not."""
    return status is None or status >= 500 or status == 429


async def _send_http(
    client: httpx.AsyncClient, req: PlannedRequest, max_attempts: int, stats: LoadStats
) -> SentClick:
    """GET the click URL until it answers 302 (or gives up); retries re-send the same URL."""
    import httpx

    from clickagg_platform.loadgen import SentClick

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
        await asyncio.sleep(_backoff(attempts))
    return SentClick(req, status == 302, attempts, sent_ms, status, error)


def _http_client(
    base_url: str, concurrency: int, timeout_s: float, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    """A pooled client that never follows the 302 and never stores cookies (each request
    carries its own simulated user's cookie)."""
    import http.cookiejar

    import httpx

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
    from clickagg_platform.settings import get_settings

    settings = settings or get_settings()
    base_url = base_url or settings.public_base_url
    _check_positive(concurrency=concurrency, max_attempts=max_attempts, timeout_s=timeout_s)
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {base_url!r}")
    async with _http_client(base_url, concurrency, timeout_s, transport) as client:
        prep = _prepare(plan, settings, stats)  # after the client: its start time is "now"

        async def send(req: PlannedRequest) -> SentClick:
            return await _send_http(client, req, max_attempts, prep.stats)

        interrupted = await _drive(prep.requests, send, concurrency, prep.builder, prep.stats)
    run = {"concurrency": concurrency, "max_attempts": max_attempts, "timeout_s": timeout_s}
    return _finish(prep, "http", base_url, run, manifest_path, interrupted)


# --------------------------------------------------------------------------- Kafka target


class KafkaSink:
    """A minimal asyncio face for an idempotent, acks=all confluent-kafka Producer.

    Delivery reports are served by `poll(0)` from a task on the event loop, so callbacks
    resolve futures on the loop thread (no poller thread, no cross-thread wake-ups).
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Producer

        self.bootstrap, self.topic = bootstrap, topic
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "batch.num.messages": 10000,
                "compression.type": "lz4",
                "message.timeout.ms": 30000,
                "queue.buffering.max.messages": 500000,
                "client.id": "clickagg-loadgen",
            }
        )
        self._poller: asyncio.Task | None = None

    async def start(self) -> None:
        """Check that the broker answers and the topic exists, then start serving callbacks."""
        try:
            metadata = await asyncio.to_thread(self._producer.list_topics, self.topic, 10.0)
        except Exception as exc:  # noqa: BLE001 - reported as one clear message
            raise RuntimeError(f"Kafka at {self.bootstrap} is not reachable: {exc}") from exc
        info = metadata.topics.get(self.topic)
        if info is None or info.error is not None:
            raise RuntimeError(f"topic {self.topic!r} is not available (run `clickagg topics`)")
        self._poller = asyncio.create_task(self._poll_loop(), name="loadgen-kafka-poll")

    async def _poll_loop(self) -> None:
        while True:
            self._producer.poll(0)
            await asyncio.sleep(0.003)

    def produce(self, key: bytes, value: bytes) -> asyncio.Future:
        """Queue one record; the future resolves to None (acked) or an error string.

        Raises BufferError when librdkafka's local queue is full (caller waits and retries).
        """
        fut = asyncio.get_running_loop().create_future()

        def on_delivery(err, _msg, fut=fut) -> None:
            if not fut.done():
                fut.set_result(None if err is None else str(err))

        self._producer.produce(self.topic, value=value, key=key, on_delivery=on_delivery)
        return fut

    async def close(self, timeout_s: float = 30.0) -> int:
        """Stop polling and flush; returns the records still undelivered (0 when all awaited)."""
        if self._poller is not None:
            self._poller.cancel()
        return await asyncio.to_thread(self._producer.flush, timeout_s)


async def _send_kafka(
    producer: KafkaSink, req: PlannedRequest, max_attempts: int, stats: LoadStats
) -> SentClick:
    """Produce the ClickEvent the capture would have produced (key = event_id)."""
    from clickagg_platform.loadgen import SentClick, simulate_capture
    from clickagg_platform.model import encode_click

    attempts = 0
    while True:
        attempts += 1
        received = wall_ms()
        event = simulate_capture(req, received)
        while True:
            try:
                future = producer.produce(req.event_id.encode(), encode_click(event))
                break
            except BufferError:  # local queue full: back-pressure, not a failure
                await asyncio.sleep(0.005)
        error = await future
        if error is None or attempts >= max_attempts:
            break
        stats.retries += 1
        await asyncio.sleep(_backoff(attempts))
    return SentClick(req, error is None, attempts, received, None, error)


async def run_kafka_load(
    plan: LoadPlan,
    manifest_path: Path | None = None,
    *,
    settings: Settings | None = None,
    topic: str | None = None,
    in_flight: int = DEFAULT_KAFKA_IN_FLIGHT,
    max_attempts: int = 3,
    stats: LoadStats | None = None,
) -> LoadResult:
    """Produce the plan's clicks straight to the topic (stream benchmarks, no capture)."""
    from clickagg_platform.settings import get_settings

    settings = settings or get_settings()
    topic = topic or settings.clicks_topic
    _check_positive(in_flight=in_flight, max_attempts=max_attempts)
    producer = KafkaSink(settings.bootstrap, topic)
    try:
        await producer.start()
        prep = _prepare(plan, settings, stats)  # after connecting: its start time is "now"

        async def send(req: PlannedRequest) -> SentClick:
            return await _send_kafka(producer, req, max_attempts, prep.stats)

        interrupted = await _drive(prep.requests, send, in_flight, prep.builder, prep.stats)
    finally:
        left = await producer.close()
    run = {"in_flight": in_flight, "max_attempts": max_attempts, "unflushed_at_close": left}
    endpoint = f"kafka://{settings.bootstrap}/{topic}"
    return _finish(prep, "kafka", endpoint, run, manifest_path, interrupted)


# --------------------------------------------------------------------------- shared


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


@dataclass
class _Prepared:
    plan: LoadPlan
    catalog: Catalog
    planned: dict
    checks: dict
    requests: Iterator[PlannedRequest]
    builder: GroundTruthBuilder
    stats: LoadStats
    started_ms: int  # the schedule's start (elapsed and achieved rate count from here)


def _prepare(plan: LoadPlan, settings: Settings, stats: LoadStats | None) -> _Prepared:
    """Pin the start time, build catalog and schedule, and the lazy request stream.

    The default start lies a little ahead (~1 s per million requests) so building the schedule
    does not already put the first requests behind it.
    """
    from clickagg_platform import loadgen

    plan = plan.resolved(wall_ms() + 100 + plan.total_requests // 1000)
    catalog = loadgen.build_catalog(plan)
    schedule = loadgen.plan_schedule(plan, catalog)
    requests = loadgen.generate_requests(
        plan,
        catalog,
        settings.keyring(),
        settings.active_key_id,
        ttl_s=settings.token_ttl_s,
        schedule=schedule,
    )
    return _Prepared(
        plan=plan,
        catalog=catalog,
        planned=loadgen.planned_counts(plan, schedule),
        checks=loadgen.schedule_checks(plan, schedule),
        requests=requests,
        builder=loadgen.GroundTruthBuilder(catalog),
        stats=stats or LoadStats(planned=plan.total_requests),
        started_ms=plan.require_start_ms(),
    )


def _finish(
    prep: _Prepared,
    target: str,
    endpoint: str,
    run: dict,
    manifest_path: Path | None,
    interrupted: bool,
) -> LoadResult:
    """Build the truth and the manifest, write them, re-raise a cancellation afterwards."""
    from clickagg_platform.loadgen import build_manifest

    finished = wall_ms()
    elapsed = max((finished - prep.started_ms) / 1000, 1e-9)
    truth = prep.builder.build()
    run = {
        **run,
        "started_ms": prep.started_ms,
        "finished_ms": finished,
        "elapsed_s": round(elapsed, 3),
        "achieved_rate": round(prep.stats.sent / elapsed, 1),
        "max_lag_ms": prep.stats.max_lag_ms,
        "interrupted": interrupted,
    }
    events_path = events_path_for(manifest_path) if manifest_path else None
    manifest = build_manifest(
        prep.plan,
        prep.catalog,
        truth,
        target=target,
        endpoint=endpoint,
        run=run,
        planned=prep.planned,
        checks=prep.checks,
        events_file=events_path.name if events_path else "",
    )
    if manifest_path is not None:
        write_manifest(manifest_path, manifest, prep.builder.iter_event_rows())
    if interrupted:
        raise asyncio.CancelledError
    return LoadResult(
        plan=prep.plan,
        target=target,
        endpoint=endpoint,
        truth=truth,
        manifest=manifest,
        manifest_path=manifest_path,
        events_path=events_path,
        elapsed_s=elapsed,
        achieved_rate=prep.stats.sent / elapsed,
        stats=prep.stats,
        builder=prep.builder,
    )


def events_path_for(manifest_path: Path) -> Path:
    """`manifest.json` -> `events.jsonl` beside it; `run1.json` -> `run1.events.jsonl`."""
    if manifest_path.name == "manifest.json":
        return manifest_path.with_name("events.jsonl")
    return manifest_path.with_name(manifest_path.stem + ".events.jsonl")


def write_manifest(path: Path, manifest: dict, event_rows: Iterable[dict]) -> Path:
    """Write events.jsonl then the manifest, each atomically (a reader never sees half)."""
    import msgspec

    path.parent.mkdir(parents=True, exist_ok=True)
    events_path = events_path_for(path)
    tmp = events_path.with_name(events_path.name + ".tmp")
    with tmp.open("wb") as f:
        for row in event_rows:
            f.write(msgspec.json.encode(row, order="sorted") + b"\n")
    os.replace(tmp, events_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return events_path


# --------------------------------------------------------------------------- CLI


class Target(enum.StrEnum):
    http = "http"
    kafka = "kafka"


def _fail(console: Console, message: str, code: int = 2) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


async def _with_progress(
    work: Awaitable[LoadResult], stats: LoadStats, console: Console
) -> LoadResult:
    """Run `work` under a rich progress bar fed from `stats` (polled, not per click)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]clicks"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>6.0f}/s"),
        TextColumn("ok {task.fields[ok]}"),
        TextColumn("retry {task.fields[retries]}"),
        TextColumn("[red]err {task.fields[errors]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("load", total=stats.planned, rate=0.0, ok=0, retries=0, errors=0)

        def refresh(rate: float) -> None:
            progress.update(
                task,
                completed=stats.sent,
                rate=rate,
                ok=stats.delivered,
                retries=stats.retries,
                errors=stats.errors,
            )

        async def poll() -> None:
            last_sent, last_t = 0, time.monotonic()
            while True:
                await asyncio.sleep(0.5)
                now = time.monotonic()
                refresh((stats.sent - last_sent) / (now - last_t))
                last_sent, last_t = stats.sent, now

        started = time.monotonic()
        poller = asyncio.create_task(poll())
        try:
            return await work
        finally:
            poller.cancel()
            refresh(stats.sent / max(time.monotonic() - started, 1e-9))  # the average


def _summary(result: LoadResult, console: Console) -> None:
    from rich.table import Table

    t = result.truth.totals
    table = Table(title=f"clickagg load -> {result.endpoint}", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    rows = [
        ("requests sent", t["requests_sent"]),
        ("302s" if result.target == "http" else "acked", t["delivered"]),
        ("errors (never 302/acked)", t["failed"]),
        ("transport retries", t["transport_retries"]),
        ("unique event_ids", t["unique_event_ids"]),
        ("duplicates", t["duplicates"]),
        ("late (> 60 s)", t["late"]),
        ("very late (> 10 min)", t["very_late"]),
        ("bots: bot UA", t["fraud_like_by_reason"]["bot_ua"]),
        ("bots: IP bursts", t["fraud_like_by_reason"]["ip_rate"]),
        ("billable", t["billable"]),
        ("spend", f"{t['spend_micros'] / 1e6:,.2f}"),
        ("elapsed", f"{result.elapsed_s:.1f} s"),
        ("achieved rate", f"{result.achieved_rate:,.0f}/s (planned {result.plan.rate:g})"),
        ("max lag behind schedule", f"{result.stats.max_lag_ms} ms"),
        ("manifest", str(result.manifest_path) if result.manifest_path else "-"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)


def load(
    rate: Annotated[float, typer.Option(help="Requests per second (duplicates included)")] = 100.0,
    duration: Annotated[float, typer.Option(help="Seconds of traffic")] = 10.0,
    clicks: Annotated[int | None, typer.Option(help="Total requests instead of --duration")] = None,
    seed: Annotated[int, typer.Option(help="Seed: same seed and start -> same traffic")] = 42,
    target: Annotated[
        Target, typer.Option(case_sensitive=False, help="http: capture service; kafka: topic")
    ] = Target.http,
    url: Annotated[
        str | None, typer.Option(help="Capture base URL (default: settings.public_base_url)")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Requests in flight (default 16 http, 10000 kafka)")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Manifest path (default .local/loadgen/manifest.json)")
    ] = None,
    late_fraction: Annotated[float, typer.Option(help="Share of clicks sent late")] = 0.05,
    duplicate_fraction: Annotated[
        float, typer.Option(help="Share of requests that re-fetch a link")
    ] = 0.05,
    bot_fraction: Annotated[float, typer.Option(help="Share of fraud-like clicks")] = 0.03,
    advertisers: Annotated[int, typer.Option(help="Advertisers")] = 5,
    campaigns: Annotated[int, typer.Option(help="Campaigns per advertiser")] = 4,
    ads: Annotated[int, typer.Option(help="Ads per campaign")] = 3,
    zipf: Annotated[float, typer.Option(help="Zipf exponent of campaign popularity")] = 1.1,
    run_id: Annotated[
        str | None, typer.Option(help="Impression-id namespace (default: from seed+start)")
    ] = None,
) -> None:
    """Send seeded click traffic and write its ground truth (manifest + events.jsonl)."""
    from rich.console import Console

    from clickagg_platform.loadgen import LoadPlan
    from clickagg_platform.settings import get_settings

    console = Console(stderr=True)
    settings = get_settings()
    try:
        plan = LoadPlan(
            seed=seed,
            rate=rate,
            duration_s=duration,
            clicks=clicks,
            advertisers=advertisers,
            campaigns_per_advertiser=campaigns,
            ads_per_campaign=ads,
            zipf_s=zipf,
            duplicate_fraction=duplicate_fraction,
            late_fraction=late_fraction,
            bot_fraction=bot_fraction,
            run_id=run_id,
        )
        _check_positive(concurrency=1 if concurrency is None else concurrency)
    except ValueError as err:
        _fail(console, str(err))
    path = manifest or settings.local_dir / "loadgen" / "manifest.json"
    stats = LoadStats(planned=plan.total_requests)
    if target is Target.http:
        work = run_http_load(
            plan,
            url or settings.public_base_url,
            concurrency or DEFAULT_HTTP_CONCURRENCY,
            path,
            settings=settings,
            stats=stats,
        )
    else:
        work = run_kafka_load(
            plan,
            path,
            settings=settings,
            in_flight=concurrency or DEFAULT_KAFKA_IN_FLIGHT,
            stats=stats,
        )
    began = time.time()
    try:
        result = asyncio.run(_with_progress(work, stats, console))
    except KeyboardInterrupt:
        wrote = path.exists() and path.stat().st_mtime >= began
        _fail(console, "interrupted" + (f"; partial manifest: {path}" if wrote else ""), 130)
    except (ValueError, RuntimeError) as err:
        _fail(console, str(err), code=1)
    _summary(result, console)
    failed = result.truth.totals["failed"]
    if not result.truth.exact:
        hint = (
            " - does CLICKAGG_SIGNING_KEYS match the capture service's?"
            if stats.last_error == "HTTP 400"
            else ""
        )
        _fail(
            console,
            f"{result.truth.totals['undelivered_event_ids']} event_ids never got a 302/ack "
            f"(last error: {stats.last_error}){hint}; the ground truth is only a lower bound",
            code=1,
        )
    if result.stats.max_lag_ms > LAG_WARNING_MS:
        console.print(
            f"[yellow]warning:[/] the sender fell {result.stats.max_lag_ms / 1000:.1f} s behind "
            "schedule (clicks arrived later than their t); lower --rate, raise --concurrency or "
            "use --target kafka. The ground truth accounts for it."
        )
    if failed:
        console.print(
            f"[yellow]warning:[/] {failed} duplicate copies failed (last error: "
            f"{stats.last_error}); every event_id was delivered, the ground truth is exact"
        )
