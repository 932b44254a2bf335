"""bench-capture: durable click capture vs a bare ASGI 302 (the ceiling), same run, same machine.

Each server runs pinned to core 0 (`taskset -c 0`, every thread of it included); wrk runs on
core 1 with 256 connections over a list of distinct signed links. The Kafka broker is not pinned
(it shares core 1 with wrk), which handicaps the capture runs, not the ceiling. Rounds alternate
bare / capture (the default loop producer) / capture with the librdkafka client (a same-run
baseline) and the median round of each is reported. After each capture round the accepted clicks
are checked against the topic's end offsets, so the rate counted is of durable clicks.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.procstat import cpu_seconds  # noqa: E402
from clickagg_platform import kafka_admin  # noqa: E402
from clickagg_platform.settings import Settings  # noqa: E402
from clickagg_platform.tokens import mint_token  # noqa: E402
from tests.helpers import free_port, settings_env, wait_http  # noqa: E402

console = Console()
UVICORN = [
    sys.executable,
    "-m",
    "uvicorn",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--no-proxy-headers",
    "--log-level",
    "warning",
    "--backlog",
    "4096",
]


def make_paths(settings: Settings, n: int, path: Path) -> None:
    keyring, kid = settings.keyring(), settings.active_key_id
    with path.open("w") as f:
        for i in range(n):
            token = mint_token(
                keyring,
                kid,
                impression_id=uuid.uuid4().hex,
                advertiser_id=f"adv{i % 10}",
                campaign_id=f"adv{i % 10}-c{i % 50}",
                ad_id=f"ad{i % 7}",
                landing_url=f"https://adv{i % 10}.example/landing?c={i % 50}",
            )
            f.write(f"/c/{token}\n")


def parse_wrk(out: str) -> dict:
    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "total": total,
        "p50": p50,
        "p99": p99,
        "non3xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def run_wrk(port: int, paths: Path, seconds: int, connections: int) -> dict:
    cmd = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(ROOT / "benchmarks" / "paths.lua"),
        f"http://127.0.0.1:{port}",
    ]
    out = subprocess.run(
        cmd,
        env={**os.environ, "BENCH_PATHS": str(paths)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return parse_wrk(out)


def start_server(args: list[str], env: dict, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *UVICORN, "--port", str(port), *args],
        env=env,
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30, proc=proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def accepted(port: int) -> tuple[int, int]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    pattern = r'clickagg_capture_requests_total\{outcome="(\w+)"\} ([\d.e+]+)'
    counts = dict(re.findall(pattern, text))
    return int(float(counts.get("kafka", 0))), int(float(counts.get("spooled", 0)))


def topic_size(settings: Settings) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "bench-size"})
    try:
        md = c.list_topics(settings.clicks_topic, timeout=10).topics[settings.clicks_topic]
        return sum(
            c.get_watermark_offsets(TopicPartition(settings.clicks_topic, p), timeout=10)[1]
            for p in md.partitions
        )
    finally:
        c.close()


def one_round(
    kind: str, settings: Settings, paths: Path, seconds: int, conns: int, workdir: Path
) -> dict:
    port = free_port()
    if kind == "bare":
        proc = start_server(
            ["benchmarks.bare_asgi:app"], dict(os.environ), port, workdir / "bare.log"
        )
    else:
        env = settings_env(settings)
        if kind == "librdkafka":  # the previous default client, same app: a same-run baseline
            env.update(CLICKAGG_CAPTURE_PRODUCER="librdkafka", CLICKAGG_PRODUCER_LINGER_MS="5")
        proc = start_server(
            ["--factory", "clickagg_platform.capture:create_app"],
            env,
            port,
            workdir / "capture.log",
        )
    try:
        run_wrk(port, paths, 2, conns)  # warm-up
        durable = kind != "bare"
        before = accepted(port) if durable else (0, 0)
        size_before = topic_size(settings) if durable else 0
        cpu_before = cpu_seconds(proc.pid)
        result = run_wrk(port, paths, seconds, conns)
        # server CPU per request: steadier than req/s on a shared VM (it does not move with how
        # much of the core the server got), and the ratio of the two is the work per click
        result["cpu_us"] = (cpu_seconds(proc.pid) - cpu_before) / result["total"] * 1e6
        if durable:
            kafka_n, spooled_n = accepted(port)
            result["kafka"], result["spooled"] = kafka_n - before[0], spooled_n - before[1]
            result["in_topic"] = topic_size(settings) - size_before
    finally:
        stop(proc)
    return result


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main(
    seconds: int = typer.Option(10, help="Measured seconds per round"),
    rounds: int = typer.Option(3, help="Alternating rounds per server; the median is reported"),
    connections: int = typer.Option(256, help="wrk connections"),
    links: int = typer.Option(50_000, help="Distinct signed links cycled by wrk"),
    record: bool = typer.Option(True, help="Write the result into docs/benchmarks.md"),
) -> None:
    workdir = ROOT / ".local" / "bench-capture"
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        clicks_topic=f"bench_capture_{int(time.time())}",
        spool_dir=workdir / f"spool-{int(time.time())}",
    )
    kafka_admin.wait_for_broker(settings)
    kafka_admin.ensure_topic(settings)
    paths = workdir / "paths.txt"
    with console.status(f"minting {links} signed links"):
        make_paths(settings, links, paths)
    results: dict[str, list[dict]] = {"bare": [], "capture": [], "librdkafka": []}
    for r in range(rounds):
        for kind in results:
            with console.status(f"round {r + 1}/{rounds}: {kind} ({seconds}s)"):
                results[kind].append(
                    one_round(kind, settings, paths, seconds, connections, workdir)
                )
            res = results[kind][-1]
            console.print(
                f"round {r + 1} {kind}: {res['rps']:,.0f} req/s "
                f"p50 {res['p50']:.1f} ms p99 {res['p99']:.1f} ms"
            )
    kafka_admin.delete_topic(settings, settings.clicks_topic)

    def med(kind: str) -> dict:
        return sorted(results[kind], key=lambda x: x["rps"])[len(results[kind]) // 2]

    bare, cap, rdk = med("bare"), med("capture"), med("librdkafka")
    lost = [x for x in results["capture"] + results["librdkafka"] if x["in_topic"] < x["kafka"]]
    table = Table(title=f"bench-capture: {connections} connections, server on 1 core")
    for col in (
        "server",
        "clicks/s",
        "p50 ms",
        "p99 ms",
        "non-3xx",
        "ratio to ceiling",
        "CPU us/click",
    ):
        table.add_column(col, justify="right")
    table.add_row(
        "bare ASGI 302 (ceiling)",
        f"{bare['rps']:,.0f}",
        f"{bare['p50']:.1f}",
        f"{bare['p99']:.1f}",
        str(bare["non3xx"]),
        "1.00",
        f"{bare['cpu_us']:.1f}",
    )
    table.add_row(
        "capture, durable produce",
        f"{cap['rps']:,.0f}",
        f"{cap['p50']:.1f}",
        f"{cap['p99']:.1f}",
        str(cap["non3xx"]),
        f"{cap['rps'] / bare['rps']:.2f}",
        f"{cap['cpu_us']:.1f}",
    )
    table.add_row(
        "capture, librdkafka client (before)",
        f"{rdk['rps']:,.0f}",
        f"{rdk['p50']:.1f}",
        f"{rdk['p99']:.1f}",
        str(rdk["non3xx"]),
        f"{rdk['rps'] / bare['rps']:.2f}",
        f"{rdk['cpu_us']:.1f}",
    )
    console.print(table)
    console.print(
        f"capture median round: {cap['kafka']:,} acked by Kafka, {cap['spooled']:,} "
        f"spooled, {cap['in_topic']:,} records landed in the topic"
    )
    if lost:
        console.print("[red]a round has fewer records in the topic than Kafka acks[/red]")
    if record:
        write_doc(bare, cap, rdk, results, connections, seconds, rounds)


def _row(name: str, r: dict, ceiling: dict) -> str:
    ratio = r["rps"] / ceiling["rps"]
    cpu_ratio = ceiling["cpu_us"] / r["cpu_us"]
    return (
        f"| {name} | {r['rps']:,.0f} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | {ratio:.2f} "
        f"| {r['cpu_us']:.1f} us | {cpu_ratio:.2f} |"
    )


def write_doc(bare, cap, rdk, results, connections, seconds, rounds) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    text = (
        doc.read_text()
        if doc.exists()
        else "# Benchmarks\n\nAll figures are measured by "
        "the `make bench-*` targets on the machine named in each section.\n"
    )
    all_rounds = ", ".join(f"{x['rps']:,.0f}" for x in results["capture"])
    all_rdk = ", ".join(f"{x['rps']:,.0f}" for x in results["librdkafka"])
    all_bare = ", ".join(f"{x['rps']:,.0f}" for x in results["bare"])
    section = f"""## bench-capture

Command: `make bench-capture` ({rounds} alternating rounds of {seconds} s, median reported,
wrk `-t1 -c{connections}` on core 1 over 50,000 distinct signed links; each server pinned to
core 0 with `taskset`; the Kafka broker unpinned). Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on
{machine()}.

| server | clicks/s | p50 | p99 | ratio | server CPU per click | CPU ratio |
|---|---:|---:|---:|---:|---:|---:|
{_row("bare ASGI fixed 302 (ceiling)", bare, bare)}
{_row("capture, durable (Kafka ack or spool fsync)", cap, bare)}
{_row("same app with the librdkafka client (the default before session 5)", rdk, bare)}

All rounds (clicks/s): ceiling {all_bare}; capture {all_rounds}; librdkafka client {all_rdk}.
The capture row is the default, the Kafka producer on the event loop; the librdkafka row runs
the same app with `CLICKAGG_CAPTURE_PRODUCER=librdkafka` (linger 5 ms, its former setting), in
the same rounds: capture / librdkafka = {cap["rps"] / rdk["rps"]:.2f} in clicks/s and
{rdk["cpu_us"] / cap["cpu_us"]:.2f} in CPU per click (docs/capture.md, "The loop producer").
Server CPU per click is the server process's user + system time (all threads, librdkafka's
included) over the measured
round divided by the requests answered; "CPU ratio" = ceiling's / this one's, the same ratio
counted in work instead of wall-clock rate. In the median capture round
{cap["kafka"]:,} clicks were acked by Kafka and {cap["spooled"]:,} spooled; the topic grew by
{cap["in_topic"]:,} records.
"""
    pattern = re.compile(r"## bench-capture\n.*?(?=\n## |\Z)", re.S)
    text = (
        pattern.sub(section.rstrip() + "\n", text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(text)
    console.print(f"recorded in {doc.relative_to(ROOT)}")


if __name__ == "__main__":
    typer.run(main)
