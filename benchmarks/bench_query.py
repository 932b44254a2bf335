"""bench-query: API latency of the dashboard's two heavy queries over a realistic volume, next to
the same SQL run directly on ClickHouse in the same run.

Data (generated inside ClickHouse, in its own database): 90 days of per-minute hot rows for 20
campaigns x 3 ads x 6 source partitions (46.7 M rows, about 140 M clicks), plus the reconciled
per-minute table for every hour but the last two (7.8 M rows, about 23 M clicks). Queries: one
campaign's last 24 h by minute and last 90 days by day, accuracy=auto (exact where reconciled,
hot elsewhere: three ClickHouse queries per request) and accuracy=fast (one query).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_capture import machine  # noqa: E402
from clickagg_platform import clickhouse  # noqa: E402
from clickagg_platform.api import queries as q  # noqa: E402
from clickagg_platform.api.keys import KeyStore  # noqa: E402
from clickagg_platform.api.series import Granularity  # noqa: E402
from clickagg_platform.settings import Settings  # noqa: E402
from tests.helpers import free_port, settings_env, wait_http  # noqa: E402

console = Console()
DB = "clickagg_bench_query"
CAMPAIGNS, ADS, PARTS, DAYS = 20, 3, 6, 90


def generate(settings: Settings, end: datetime) -> tuple[int, int]:
    """Fill the bench database; returns (hot rows, hot clicks)."""
    start = end - timedelta(days=DAYS)
    per_minute = CAMPAIGNS * ADS * PARTS
    minutes = DAYS * 1440
    c = clickhouse.client(settings)
    try:
        c.execute(f"DROP DATABASE IF EXISTS {DB}")
        clickhouse.migrate(settings, log=lambda _m: None)
        c.execute(
            f"INSERT INTO {DB}.campaigns (advertiser_id, campaign_id, cpc_micros, name) VALUES",
            [("bench-adv", f"bc{i}", 100_000, f"Bench {i}") for i in range(CAMPAIGNS)],
        )
        s = start.strftime("%Y-%m-%d %H:%M:%S")
        c.execute(f"""
INSERT INTO {DB}.hot_clicks (window_start, campaign_id, ad_id, source, source_partition, clicks,
    version)
SELECT toDateTime('{s}', 'UTC') + intDiv(number, {per_minute}) * 60,
    concat('bc', toString(intDiv(number % {per_minute}, {ADS * PARTS}))),
    concat('ad', toString(intDiv(number % {ADS * PARTS}, {PARTS}))),
    0, number % {PARTS}, toInt64(number % 7), 1
FROM numbers({per_minute * minutes})""")
        reconciled_minutes = minutes - 120
        c.execute(f"""
INSERT INTO {DB}.minute_aggregates_batch (hour, window_start, advertiser_id, campaign_id, ad_id,
    clicks, fraud_clicks, stream_too_late, reconciled_at, run_id)
SELECT toStartOfHour(t), t, 'bench-adv', c, a, n, 0, 0, now(), 'bench'
FROM
(
    SELECT toDateTime('{s}', 'UTC') + intDiv(number, {CAMPAIGNS * ADS}) * 60 AS t,
        concat('bc', toString(intDiv(number % {CAMPAIGNS * ADS}, {ADS}))) AS c,
        concat('ad', toString(number % {ADS})) AS a, toInt64(3 * {PARTS}) AS n
    FROM numbers({CAMPAIGNS * ADS * reconciled_minutes})
)""")
        rows, clicks = c.execute(f"SELECT count(), sum(clicks) FROM {DB}.hot_clicks")[0]
        c.execute(f"OPTIMIZE TABLE {DB}.hot_clicks FINAL")  # a long-running table is merged
    finally:
        c.disconnect()
    return rows, clicks


def percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[max(0, int(len(s) * 0.95) - 1)]


def time_calls(fn, n: int) -> list[float]:
    for _ in range(3):
        fn()  # warm-up
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(
    requests: int = typer.Option(50, help="Timed requests per query"),
    record: bool = typer.Option(True, help="Write the result into docs/benchmarks.md"),
    keep: bool = typer.Option(False, help="Keep the bench database afterwards"),
) -> None:
    settings = Settings(clickhouse_database=DB)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    with console.status("generating 90 days of aggregates inside ClickHouse"):
        t0 = time.perf_counter()
        rows, clicks = generate(settings, end)
        gen_s = time.perf_counter() - t0
    console.print(f"{rows:,} hot rows ({clicks:,} clicks) in {gen_s:.0f} s")
    key, _ = KeyStore(lambda: clickhouse.client(settings), DB).create("bench-adv")
    port = free_port()
    # the API in a process of its own (as deployed), not a thread sharing the client's GIL
    server = subprocess.Popen(
        [sys.executable, "-m", "clickagg_platform.cli", "api", "--port", str(port)],
        env=settings_env(settings),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=server)
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    ch = clickhouse.client(settings, user=settings.api_clickhouse_user)
    cases = [
        ("last 24 h by minute", end - timedelta(hours=24), Granularity.minute),
        ("last 90 days by day", end - timedelta(days=DAYS), Granularity.day),
    ]
    results = []
    for name, start, g in cases:
        params = {"from": start.isoformat(), "to": end.isoformat(), "granularity": g.value}
        for accuracy in ("auto", "fast"):

            def call(accuracy=accuracy, params=params):
                r = http.get("/v1/campaigns/bc7/clicks", params={**params, "accuracy": accuracy})
                r.raise_for_status()
                return r.json()

            points = len(call()["points"])
            api_p50, api_p95 = percentiles(time_calls(call, requests))
            sql_params = {
                "campaign_id": "bc7",
                "ad_id": None,
                "start": start.replace(tzinfo=None),
                "start_hour": start.replace(tzinfo=None),  # start is hour-aligned
                "end": end.replace(tzinfo=None),
            }
            # the same statements the API sends: auto reads the hot table only from the first
            # bucket the batch has not settled (here: the last two hours)
            hot_params = dict(sql_params)
            sqls = [(q.hot_series_sql(DB, g), hot_params)]
            if accuracy == "auto":
                unsettled = end - timedelta(hours=2)
                sqls = [
                    q.reconciled_hours_statement(DB, start, end),  # start, end: whole hours
                    (q.exact_series_sql(DB, g), sql_params),
                ]
                if g is Granularity.day:  # the partial first day and the unsettled last day
                    first = start.replace(hour=0, tzinfo=None)
                    sqls.append(
                        (
                            q.hot_series_sql(DB, g),
                            dict(sql_params, start=first, end=first + timedelta(days=1)),
                        )
                    )
                    unsettled = unsettled.replace(hour=0)
                sqls.append(
                    (
                        q.hot_series_sql(DB, g),
                        dict(sql_params, start=unsettled.replace(tzinfo=None)),
                    )
                )

            def direct(sqls=sqls):
                for sql, p in sqls:
                    ch.execute(sql, p)

            ch_p50, ch_p95 = percentiles(time_calls(direct, requests))
            results.append((name, accuracy, points, api_p50, api_p95, ch_p50, ch_p95))
            console.print(
                f"{name} {accuracy}: API p50 {api_p50:.1f} p95 {api_p95:.1f} ms; "
                f"ClickHouse p50 {ch_p50:.1f} p95 {ch_p95:.1f} ms"
            )
    server.terminate()
    server.wait(timeout=30)
    ch.disconnect()
    table = Table(title="bench-query (one campaign of 20; sequential requests)")
    for col in (
        "query",
        "accuracy",
        "points",
        "API p50",
        "API p95",
        "CH p50",
        "CH p95",
        "API/CH p95",
    ):
        table.add_column(col, justify="right")
    for name, acc, pts, a50, a95, c50, c95 in results:
        table.add_row(
            name,
            acc,
            str(pts),
            f"{a50:.1f}",
            f"{a95:.1f}",
            f"{c50:.1f}",
            f"{c95:.1f}",
            f"{a95 / c95:.2f}",
        )
    console.print(table)
    if record:
        write_doc(results, rows, clicks, requests)
    if not keep:
        c = clickhouse.client(settings)
        c.execute(f"DROP DATABASE IF EXISTS {DB}")
        c.disconnect()


def write_doc(results, rows, clicks, requests) -> None:
    import re

    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    lines = "\n".join(
        f"| {n} | {a} | {p} | {a50:.1f} ms | {a95:.1f} ms | {c50:.1f} ms | {c95:.1f} ms | "
        f"{a95 / c95:.2f} |"
        for n, a, p, a50, a95, c50, c95 in results
    )
    section = f"""## bench-query

Command: `make bench-query`. Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.
Data generated inside ClickHouse 18.16: {rows:,} hot per-minute rows ({clicks:,} clicks) over
90 days for 20 campaigns x 3 ads x 6 source partitions, plus the reconciled per-minute table for
every hour but the last two. One campaign queried; sequential requests ({requests} timed after 3
warm-up) through the API over HTTP (httpx, response parsed), and the same SQL statements sent
one after another on one clickhouse-driver connection (read-only user) in the same run. `auto`
= three statements: the reconciled hours (a row scan for ranges up to 72 h, partition metadata
beyond), the reconciled series, and the hot series of the unreconciled tail; the API runs the
reconciled series concurrently with the other two, which is why API/CH can be below 1.

Targets (the API's default accuracy, `auto`): p95 at most 50 ms (24 h by minute) and 500 ms (90
days by day). `fast` over 90 days reads 2.3 M hot rows of the campaign (90 d x 1,440 min x 3 ads
x 6 source partitions) and takes argMax per key: it is the hot table's job for recent hours, not
for quarters.

| query | accuracy | points | API p50 | API p95 | ClickHouse p50 | ClickHouse p95 | API/CH p95 |
|---|---|---:|---:|---:|---:|---:|---:|
{lines}
"""
    pattern = re.compile(r"## bench-query\n.*?(?=\n## |\Z)", re.S)
    text = (
        pattern.sub(section.rstrip() + "\n", text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    doc.write_text(text)
    console.print(f"recorded in {doc.relative_to(ROOT)}")


if __name__ == "__main__":
    typer.run(main)
