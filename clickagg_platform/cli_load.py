"""`clickagg load`: send seeded click traffic (HTTP or straight to Kafka) and write its truth.

This module is only the command: options, a progress bar and a summary table. The traffic,
its ground truth and the runners (pacing on an absolute schedule, bounded concurrency,
transport retries, manifest + events.jsonl) live in the `clickagg_platform.loadgen` package.
Heavy imports (numpy, httpx, Kafka, rich) stay inside the functions so that `clickagg --help`
remains fast: `clickagg_platform.cli` imports this module on every start.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from clickagg_platform.loadgen.pacing import LoadStats
    from clickagg_platform.loadgen.session import LoadResult

LAG_WARNING_MS = 2_000


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
    from clickagg_platform.loadgen.pacing import LoadStats
    from clickagg_platform.loadgen.session import check_positive
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
        check_positive(concurrency=1 if concurrency is None else concurrency)
    except ValueError as err:
        _fail(console, str(err))
    path = manifest or settings.local_dir / "loadgen" / "manifest.json"
    stats = LoadStats(planned=plan.total_requests)
    if target is Target.http:
        from clickagg_platform.loadgen.run_http import DEFAULT_HTTP_CONCURRENCY, run_http_load

        work = run_http_load(
            plan,
            url or settings.public_base_url,
            concurrency or DEFAULT_HTTP_CONCURRENCY,
            path,
            settings=settings,
            stats=stats,
        )
    else:
        from clickagg_platform.loadgen.run_kafka import DEFAULT_KAFKA_IN_FLIGHT, run_kafka_load

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
