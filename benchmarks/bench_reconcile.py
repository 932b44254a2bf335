"""bench-reconcile: one UTC day of N clicks (default 10 million) reconciled by the Spark job,
and by DuckDB running the same dedup + fraud + aggregate over the same files (the
single-machine baseline), in the same run.

1. Generate the day straight into a lake dir in the raw archive's layout (6 Kafka partitions,
   one Parquet file per offset block, hour markers): ~5% duplicate copies at later offsets,
   ~5% late clicks (up to 20 min behind), ~3% bot UAs, IP bursts over the rate threshold.
2. Spark (`local[*]`, the SparkResource's session): read the day's files + reconcile + collect,
   timed from the read to the collected result (the session is started before the clock).
3. DuckDB: `reconcile.duckdb_reconcile` over the same files, same parameters.
Both results must be identical per (minute, advertiser, campaign, ad), else the run fails.
4. One hour with the 24 h before it in the lake (the last hour of the generated span), three
   ways: (a0) the hour's own files alone, no horizon (the floor); (a1) before the first-seen
   index: the hour's files + every raw file of the 24 h horizon; (a2) with the index: the hour's
   files + the index of the 24 earlier hours (built beforehand, untimed), and (a2+) the same plus
   building the hour's own index (what an hourly run does). Rows read and wall time; (a1) and
   (a2) must give identical results.
5. The day hour by hour (c): for each hour, build its index and reconcile it joining the index of
   the hours before; total time, and the sum must equal the whole-day run's result.
The generated span is the day plus the hour before it, so (a), the day's last hour, has a fully
populated 24 h horizon before it.
"""

from __future__ import annotations

import binascii
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import spark_eventlog  # noqa: E402
from clickagg_platform import lake  # noqa: E402
from clickagg_platform.loadgen.rules import BOT_USER_AGENTS, NORMAL_USER_AGENTS  # noqa: E402
from clickagg_platform.reconcile import (  # noqa: E402
    BROADCAST_MAX_ROWS,
    ReconcileParams,
    duckdb_reconcile,
    reconcile,
)

DAY0 = 1_767_225_600_000  # 2026-01-01T00:00Z
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
PARTITIONS = 6
# Offsets per raw file. The archiver's blocks hold a fixed number of offsets, so at production
# rates a file spans seconds to minutes of one partition; 25,000 keeps a file at ~20 min of a
# partition at 10 M clicks/day over 6 partitions (250,000 made one file span ~4 hours, and an
# "hour's own files" ~5 hours of clicks).
BLOCK = 25_000
TOPIC = "clicks"


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.bytes(16 * n)
    return np.frombuffer(binascii.hexlify(raw), dtype="S32")


SPAN0 = DAY0 - HOUR_MS  # the generated span: the hour before the day, then the day
SPAN_MS = DAY_MS + HOUR_MS


def generate(root: str, n: int, seed: int = 7, block: int = BLOCK) -> dict:
    """Write n clicks over [SPAN0, SPAN0 + SPAN_MS) as raw archive files; returns what was
    generated."""
    rng = np.random.default_rng(seed)
    n_dup = int(n * 0.05)
    n_unique = n - n_dup
    ids = _hex_ids(rng, n_unique)
    t = np.sort(rng.integers(SPAN0, SPAN0 + SPAN_MS, n_unique))
    late = rng.random(n_unique) < 0.05
    t = np.where(late, np.maximum(SPAN0, t - rng.integers(10_000, 1_200_000, n_unique)), t)
    ip = rng.integers(0, 2_000_000, n_unique)
    # bursts: 300 IPs x 45 clicks each inside one minute
    burst_idx = rng.choice(n_unique, 300 * 45, replace=False)
    burst_ip = 10_000_000 + np.repeat(np.arange(300), 45)
    burst_minute = np.repeat(rng.integers(SPAN0 // 60_000, (SPAN0 + SPAN_MS) // 60_000, 300), 45)
    ip[burst_idx] = burst_ip
    t[burst_idx] = burst_minute * 60_000 + rng.integers(0, 60_000, len(burst_idx))
    ua_pool = np.array(NORMAL_USER_AGENTS + BOT_USER_AGENTS, dtype=object)
    ua = np.where(
        rng.random(n_unique) < 0.03,
        rng.integers(len(NORMAL_USER_AGENTS), len(ua_pool), n_unique),
        rng.integers(0, len(NORMAL_USER_AGENTS), n_unique),
    )
    campaign = np.minimum(rng.zipf(1.3, n_unique), 40) - 1
    ad = rng.integers(0, 3, n_unique)
    part = rng.integers(0, PARTITIONS, n_unique)
    # duplicates: copies of random earlier clicks, appended (later offsets, same partition)
    src = np.concatenate([np.arange(n_unique), rng.integers(0, n_unique, n_dup)])
    order = np.argsort(
        np.concatenate([t, t[src[n_unique:]] + rng.integers(1, 30_000, n_dup)]), kind="stable"
    )
    rows = src[order]  # arrival order: index into the unique arrays
    camp_names = pa.array([f"cmp-{c:03d}" for c in range(40)])
    adv_names = pa.array([f"adv-{c // 4:03d}" for c in range(40)])
    ad_names = pa.array([f"ad-{c:03d}-{a}" for c in range(40) for a in range(3)])
    ip_names = pa.array([f"ip{x}" for x in range(int(ip.max()) + 1)])
    ua_names = pa.array(list(ua_pool))

    def dict_col(indices, names):
        return pa.DictionaryArray.from_arrays(pa.array(indices), names).cast(pa.string())

    files = 0
    for p in range(PARTITIONS):
        sel = rows[part[rows] == p]
        for first in range(0, len(sel), block):
            chunk = sel[first : first + block]
            m = len(chunk)
            camp = campaign[chunk]
            cols = {
                "event_id": pa.array(ids[chunk]).cast(pa.string()),
                "impression_id": pa.array(ids[chunk]).cast(pa.string()),
                "advertiser_id": dict_col(camp, adv_names),
                "campaign_id": dict_col(camp, camp_names),
                "ad_id": dict_col(camp * 3 + ad[chunk], ad_names),
                "publisher_id": pa.array(np.full(m, "pub-001", dtype=object)),
                "event_time": pa.array(t[chunk]),
                "received_at": pa.array(t[chunk] + 1_000),
                "ip_hash": dict_col(ip[chunk], ip_names),
                "user_agent": dict_col(ua[chunk], ua_names),
                "user_key": pa.array(np.full(m, "u", dtype=object)),
                "token_key_id": pa.array(np.full(m, "k1", dtype=object)),
                "schema_version": pa.array(np.ones(m, dtype=np.int64)),
                "kafka_partition": pa.array(np.full(m, p, dtype=np.int32)),
                "kafka_offset": pa.array(np.arange(first, first + m, dtype=np.int64)),
                "kafka_timestamp": pa.array(t[chunk] + 1_000),
                "fraud_reason": pa.nulls(m, pa.string()),
                "decode_error": pa.nulls(m, pa.string()),
                "raw_value": pa.nulls(m, pa.binary()),
            }
            table = pa.table(cols, schema=lake.RAW_SCHEMA)
            last = first + m - 1
            lake.write_table(lake.raw_file_url(root, TOPIC, p, first, last), table)
            for h in np.unique(t[chunk] // HOUR_MS * HOUR_MS):
                lake.touch(lake.hour_marker_url(root, TOPIC, int(h), p, first, last))
            files += 1
    return {"clicks": n, "unique": n_unique, "duplicates": n_dup, "files": files}


def main(
    clicks: str = typer.Option(
        "2000000,6000000", help="Clicks generated, one run per size (comma-separated)"
    ),
    workdir: Path = typer.Option(None, help="Where to generate (default: a temp dir)"),  # noqa: B008
    record: bool = typer.Option(True, help="Write the result into docs/benchmarks.md"),
    by_hour: bool = typer.Option(True, help="Also the hour and hour-by-hour runs (4, 5)"),
    block: int = typer.Option(BLOCK, help="Offsets per raw file (the archiver's block)"),
) -> None:
    console = Console()
    try:
        sizes = [int(x.replace("_", "")) for x in clicks.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--clicks: comma-separated integers, got {clicks!r}") from None
    if not sizes or min(sizes) < 10_000:
        raise typer.BadParameter("--clicks: at least one size, each >= 10000")
    columns = []
    for n in sizes:
        columns.append(run_size(n, block, by_hour, console, workdir))
    table = Table(title="bench-reconcile")
    table.add_column("measure")
    for n in sizes:
        table.add_column(f"{n:,} clicks", justify="right")
    rows = [(label, *(dict(c)[label] for c in columns)) for label, _ in columns[0]]
    rows += slopes(rows, sizes)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for n, summary in STAGES.items():
        st = Table(title=f"(b) Spark, {n:,} clicks: where the time goes (event log)")
        for col in spark_eventlog.HEADER:
            st.add_column(col)
        for r in spark_eventlog.table_rows(summary):
            st.add_row(*r)
        console.print(st)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:  # stopped first: its shutdown hook still writes the event log
        active.stop()
    shutil.rmtree(EVENTLOG, ignore_errors=True)
    if record:
        write_section(rows, sizes, block)


SLOPE_ROWS = ("(b) day, Spark", "(b) day, DuckDB", "(a0)", "(a1)", "(a2)", "(c)")


def slopes(rows, sizes: list[int]) -> list[tuple[str, ...]]:
    """Seconds per extra million clicks between the smallest and the largest size, for the
    timed rows: what grows with the data and what is fixed cost."""
    if len(sizes) < 2:
        return []
    out = []
    span_m = (sizes[-1] - sizes[0]) / 1e6
    for label, *vals in rows:
        if not label.startswith(SLOPE_ROWS):
            continue
        first, last = (float(v.split()[0]) for v in (vals[0], vals[-1]))
        slope = f"{(last - first) / span_m:+.2f} s per M clicks"
        out.append((f"slope of {label.split(':')[0]}", *([""] * (len(sizes) - 1)), slope))
    return out


# the Spark session's event log (one per process) and, per size, (b)'s stages read from it
EVENTLOG = Path(tempfile.mkdtemp(prefix="bench-reconcile-eventlog-"))
STAGES: dict[int, spark_eventlog.Summary] = {}
REPEATS = 3


def run_size(clicks: int, block: int, by_hour: bool, console, workdir) -> list[tuple[str, str]]:
    """One generated span of `clicks` clicks: steps 1-5 of the module doc."""
    from resources.spark import get_spark

    tmp = Path(workdir or tempfile.mkdtemp(prefix="bench-reconcile-")) / f"n{clicks}"
    root = f"file://{tmp / 'lake'}"
    try:
        t0 = time.monotonic()
        gen = generate(root, clicks, block=block)
        gen_s = time.monotonic() - t0
        console.print(f"generated {gen} in {gen_s:.1f}s under {tmp}")
        files = []
        for h in range(DAY0, DAY0 + DAY_MS, HOUR_MS):
            files += lake.hour_files(root, TOPIC, datetime.fromtimestamp(h / 1000, UTC))
        files = lake.resolve_blocks(list({f.url: f for f in files}.values()))
        paths = [f.url.removeprefix("file://") for f in files]
        params = ReconcileParams(DAY0, DAY0 + DAY_MS)

        spark = get_spark(conf=spark_eventlog.eventlog_conf(EVENTLOG))
        spark.range(1).count()  # JVM warm: the clock measures the job, not the session start
        group = f"day-{clicks}"
        spark.sparkContext.setJobGroup(group, "bench-reconcile (b), Spark")
        t0 = time.monotonic()
        got = _keyed(reconcile(spark.read.parquet(*paths), params).collect())
        spark_s = time.monotonic() - t0
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
        STAGES[clicks] = spark_eventlog.wait_for_group(EVENTLOG, group)

        t0 = time.monotonic()
        base = duckdb_reconcile(paths, params)
        duck_s = time.monotonic() - t0
        if got != base:
            diff = [k for k in set(got) | set(base) if got.get(k) != base.get(k)][:5]
            raise SystemExit(f"Spark and DuckDB disagree, e.g. {diff}")
        billable = sum(v[0] for v in got.values())
        fraud = sum(v[1] for v in got.values())
        day_rows = _rows(paths)
        hourly = hour_runs(spark, root, got, console) if by_hour else []
        return [
            ("clicks generated (the day + the hour before)", f"{clicks:,}"),
            ("raw files / duplicate copies", f"{gen['files']} / {gen['duplicates']:,}"),
            ("(b) raw rows read for the day", f"{day_rows:,}"),
            ("(b) billable / fraud-like (both engines agree)", f"{billable:,} / {fraud:,}"),
            ("(b) day, Spark local[*] wall time", f"{spark_s:.1f} s"),
            ("(b) day, DuckDB wall time", f"{duck_s:.1f} s"),
            ("(b) Spark time / DuckDB time", f"{spark_s / duck_s:.1f}x"),
            *hourly,
        ]
    finally:
        if workdir is None:
            shutil.rmtree(tmp.parent, ignore_errors=True)


def _rows(paths: list[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def _keyed(rows) -> dict:
    return {
        (
            int(r.window_start.replace(tzinfo=UTC).timestamp() * 1000),
            r.advertiser_id,
            r.campaign_id,
            r.ad_id,
        ): (r.clicks, r.fraud_clicks)
        for r in rows
    }


def hour_runs(spark, root: str, whole_day: dict, console) -> list[tuple[str, str]]:
    """Steps 4 and 5 of the module doc: the hour with its horizon, before/after the index, and
    the day hour by hour. Uses the asset's own index build (`assets.first_seen.build`)."""
    from assets.first_seen import build, index_file_urls
    from resources.lake import LakeResource

    store = LakeResource(url=root, topic=TOPIC)
    st = store.settings()

    def files_of(hours) -> list[str]:
        found = []
        for h in hours:
            found += lake.hour_files(root, TOPIC, datetime.fromtimestamp(h / 1000, UTC))
        resolved = lake.resolve_blocks(list({f.url: f for f in found}.values()))
        return [f.url.removeprefix("file://") for f in resolved]

    def timed(fn):
        t0 = time.monotonic()
        out = fn()
        return out, time.monotonic() - t0

    hour = DAY0 + 23 * HOUR_MS
    earlier = list(range(hour - 24 * HOUR_MS, hour, HOUR_MS))
    ptrs, index_all_s = timed(lambda: build(spark, store, st, earlier, 0, "bench"))
    seen = [
        u.removeprefix("file://")
        for h in earlier
        for u in index_file_urls(root, TOPIC, h, ptrs[h], st)
    ]
    index_rows = sum(p.rows for p in ptrs.values())
    index_bytes = sum(os.path.getsize(p) for p in seen)
    raw_bytes = sum(os.path.getsize(p) for p in files_of(earlier))
    raw_rows = _rows(files_of(earlier))
    own, horizon = files_of([hour]), files_of(earlier + [hour])
    params = ReconcileParams(hour, hour + HOUR_MS)
    console.print(f"index of 24 h built in {index_all_s:.1f} s ({index_rows:,} ids)")

    def own_only():
        return _keyed(reconcile(spark.read.parquet(*own), params).collect())

    def with_horizon():
        return _keyed(reconcile(spark.read.parquet(*horizon), params).collect())

    def with_index():
        seen_df = spark.read.parquet(*seen)
        small = _rows(own) <= BROADCAST_MAX_ROWS  # the asset's rule
        df = reconcile(spark.read.parquet(*own), params, seen=seen_df, broadcast_candidates=small)
        return _keyed(df.collect())

    # Rounds of (a0, a1, a2) in turn, the median of each: a single run mostly measured which
    # plan the JVM had compiled already (the same a0 took 3.6 s first and 2.4 s fourth here).
    times: dict[str, list[float]] = {"a0": [], "a1": [], "a2": []}
    results: dict[str, dict] = {}
    for _ in range(REPEATS):
        for name, fn in (("a0", own_only), ("a1", with_horizon), ("a2", with_index)):
            results[name], secs = timed(fn)
            times[name].append(secs)
    a0_s, a1_s, a2_s = (statistics.median(times[k]) for k in ("a0", "a1", "a2"))
    a1, a2 = results["a1"], results["a2"]
    rounds = "; ".join(f"{k} " + " ".join(f"{x:.1f}" for x in v) for k, v in times.items())
    console.print(f"(a) rounds: {rounds}")
    _, own_index_s = timed(lambda: build(spark, store, st, [hour], 0, "bench"))
    if a1 != a2:
        diff = [k for k in set(a1) | set(a2) if a1.get(k) != a2.get(k)][:5]
        raise SystemExit(f"index path and horizon path disagree, e.g. {diff}")
    if a2 != {k: v for k, v in whole_day.items() if hour <= k[0] < hour + HOUR_MS}:
        raise SystemExit("the hour differs from the whole-day run's hour")
    console.print(f"hour: own {a0_s:.1f} s, horizon {a1_s:.1f} s, index {a2_s:.1f} s")

    # (c) the day hour by hour: build the hour's index, reconcile joining the earlier ones
    day_total, merged, t_build, t_rec = 0.0, {}, 0.0, 0.0
    for h in range(DAY0, DAY0 + DAY_MS, HOUR_MS):
        _, b_s = timed(lambda h=h: build(spark, store, st, [h], 0, "bench"))
        prev = [x for x in range(h - 24 * HOUR_MS, h, HOUR_MS) if x >= DAY0 - HOUR_MS]
        urls = []
        for x in prev:
            from assets.first_seen import read_pointer

            urls += index_file_urls(root, TOPIC, x, read_pointer(root, TOPIC, x, st), st)
        paths = [u.removeprefix("file://") for u in urls]
        p_h = ReconcileParams(h, h + HOUR_MS)

        def one(h=h, paths=paths, p_h=p_h):
            seen_df = spark.read.parquet(*paths) if paths else None
            own_h = files_of([h])
            small = _rows(own_h) <= BROADCAST_MAX_ROWS
            df = reconcile(
                spark.read.parquet(*own_h), p_h, seen=seen_df, broadcast_candidates=small
            )
            return _keyed(df.collect())

        part, r_s = timed(one)
        merged.update(part)
        t_build += b_s
        t_rec += r_s
    day_total = t_build + t_rec
    if merged != whole_day:
        raise SystemExit("the day hour by hour differs from the whole-day run")
    console.print(f"day hour by hour: {day_total:.1f} s")
    return [
        ("(a) hour 23:00 with 24 h before it: raw rows read, own files only", f"{_rows(own):,}"),
        ("(a) raw rows read, own + horizon files (before the index)", f"{_rows(horizon):,}"),
        ("(a) rows read with the index (own raw + index ids)", f"{_rows(own) + index_rows:,}"),
        ("(a0) hour, own files only, no horizon (floor)", f"{a0_s:.1f} s"),
        ("(a1) hour + 24 h horizon re-read (before)", f"{a1_s:.1f} s ({a1_s / a0_s:.1f}x floor)"),
        ("(a2) hour + index join (after)", f"{a2_s:.1f} s ({a2_s / a0_s:.1f}x floor)"),
        (
            "(a2+) hour + index join + build own index (an hourly run)",
            f"{a2_s + own_index_s:.1f} s ({(a2_s + own_index_s) / a0_s:.1f}x floor)",
        ),
        ("index of 24 h: ids / build time (one job)", f"{index_rows:,} / {index_all_s:.1f} s"),
        (
            "index bytes per id / raw bytes per record (24 h)",
            f"{index_bytes / max(index_rows, 1):.1f} B / {raw_bytes / max(raw_rows, 1):.1f} B",
        ),
        (
            "(c) day hour by hour: total (index builds + reconciles)",
            f"{day_total:.1f} s ({t_build:.1f} + {t_rec:.1f}), equals the whole-day result",
        ),
    ]


def write_section(rows, sizes: list[int], block: int) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    head = "| measure | " + " | ".join(f"{n:,} clicks" for n in sizes) + " |"
    rule = "|---|" + "---|" * len(sizes)
    body = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    stages = ""
    for n, summary in STAGES.items():
        stages += (
            f"\n(b) Spark at {n:,} clicks, where the time goes, from Spark's event log (the Spark "
            "UI's numbers; `benchmarks/spark_eventlog.py`): per stage of the timed job, in order; "
            "task times are summed over the tasks (2 cores: up to 2 s of task time per second); "
            "'outside stages' is driver time (planning, AQE re-planning, scheduling, collecting "
            "the result) while no stage ran.\n\n"
        )
        stages += "| " + " | ".join(spark_eventlog.HEADER) + " |\n"
        stages += "|---" * len(spark_eventlog.HEADER) + "|\n"
        stages += "".join("| " + " | ".join(r) + " |\n" for r in spark_eventlog.table_rows(summary))
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    load = os.getloadavg()[0]
    section = f"""## bench-reconcile

`make bench-reconcile` (`python benchmarks/bench_reconcile.py`) on {platform.node()}
({os.cpu_count()} cores, load average {load:.1f} at the end), {when}, one run per size: a UTC
day plus the hour before it generated straight into a local lake in the raw archive's layout
(6 partitions, raw files of {block:,} offsets as the archiver's fixed blocks, ~5% duplicate
copies, ~5% late, ~3% bot UAs, 300 IP bursts). Spark = the reconcile transform in `local[*]`
(session started before the clock; read + dedup + fraud + aggregate + collect). DuckDB = the
same rule in SQL over the same files (`reconcile.duckdb_reconcile`), the single-machine
baseline. (b) fails unless both give identical per-minute results. (a): the day's last hour
with the 24 h before it in the lake: (a0) its own raw files only, no horizon (the floor); (a1)
own files + every raw file of the horizon (the path before the first-seen index); (a2) own
files + the index of the 24 earlier hours (built untimed); (a2+) plus building the hour's own
index, i.e. what an hourly run does; (a1) and (a2) must agree; a0, a1 and a2 run in turn
{REPEATS} times and each row is the median (a single run mostly measured whether the JVM had
compiled that plan yet). (c): the day hour by hour, each
hour building its index then reconciling against the earlier ones; must equal (b).

{head}
{rule}
{body}
{stages}"""
    pattern = re.compile(r"## bench-reconcile\n.*?(?=\n## |\Z)", re.S)
    if pattern.search(text):
        text = pattern.sub(section.rstrip("\n") + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)


if __name__ == "__main__":
    typer.run(main)
