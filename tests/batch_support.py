"""Test support of the batch path: place seeded clicks on Kafka partitions, write them in the raw
archive's layout (the archiver's contract: one file per offset block + hour markers), and an
independent plain-Python recount of the billing rule to compare the batch against."""

from __future__ import annotations

import subprocess
from collections import Counter, defaultdict
from contextlib import contextmanager
from datetime import UTC, date, datetime

import pyarrow as pa

from clickagg_platform import lake
from clickagg_platform.loadgen import is_bot_user_agent
from clickagg_platform.model import CLICK_FIELDS, ClickEvent
from clickagg_platform.partitioner import partition_for

MIN = 60_000
HOUR = 3_600_000


def place(events: list[ClickEvent], partitions: int = 3) -> dict[int, list[ClickEvent]]:
    """Records per Kafka partition in offset order (partition from the key, like the producer)."""
    out: dict[int, list[ClickEvent]] = defaultdict(list)
    for ev in events:
        out[partition_for(ev.event_id.encode(), partitions)].append(ev)
    return dict(out)


def write_archive(
    root: str,
    topic: str,
    by_partition: dict[int, list[ClickEvent]],
    block: int = 100,
    offset_base: dict[int, int] | None = None,
    settings=None,
) -> None:
    """Raw files exactly as the archiver writes them; offsets start at `offset_base[p]`."""
    for p, events in by_partition.items():
        base = (offset_base or {}).get(p, 0)
        rows = [(base + i, ev) for i, ev in enumerate(events)]
        by_block: dict[int, list] = defaultdict(list)
        for off, ev in rows:
            by_block[off // block * block].append((off, ev))
        for first, recs in by_block.items():
            cols: dict[str, list] = {n: [] for n in lake.RAW_SCHEMA.names}
            hours = set()
            for off, ev in recs:
                for name in CLICK_FIELDS:
                    cols[name].append(getattr(ev, name))
                cols["kafka_partition"].append(p)
                cols["kafka_offset"].append(off)
                cols["kafka_timestamp"].append(ev.received_at)
                cols["fraud_reason"].append("bot_ua" if is_bot_user_agent(ev.user_agent) else None)
                cols["decode_error"].append(None)
                cols["raw_value"].append(None)
                hours.add(ev.event_time // HOUR * HOUR)
            last = recs[-1][0]
            table = pa.table(cols, schema=lake.RAW_SCHEMA)
            lake.write_table(lake.raw_file_url(root, topic, p, first, last), table, settings)
            for h in hours:
                lake.touch(lake.hour_marker_url(root, topic, h, p, first, last), settings)


def reference_clicks(by_partition: dict[int, list[ClickEvent]], threshold: int = 20):
    """Independent recount: {(minute_ms, advertiser, campaign, ad): billable clicks} and the
    fraud-like count per key. First copy per event_id in (partition, offset) order; fraud = bot
    UA, or more than `threshold` distinct event_ids of one ip in the minute (bots included)."""
    seen: set[str] = set()
    firsts = []
    for p in sorted(by_partition):
        for ev in by_partition[p]:
            if ev.event_id not in seen:
                seen.add(ev.event_id)
                firsts.append(ev)
    per_ip = Counter((ev.ip_hash, ev.event_time // MIN) for ev in firsts)
    billable: Counter = Counter()
    fraud: Counter = Counter()
    for ev in firsts:
        key = (ev.event_time // MIN * MIN, ev.advertiser_id, ev.campaign_id, ev.ad_id)
        if (
            is_bot_user_agent(ev.user_agent)
            or per_ip[(ev.ip_hash, ev.event_time // MIN)] > threshold
        ):
            fraud[key] += 1
        else:
            billable[key] += 1
    return billable, fraud


def in_hours(counts: Counter, start_ms: int, end_ms: int) -> Counter:
    return Counter({k: v for k, v in counts.items() if start_ms <= k[0] < end_ms and v})


def per_day(counts: Counter) -> Counter:
    """{(day, advertiser, campaign): clicks} from per-minute counts."""
    out: Counter = Counter()
    for (m, adv, cmp, _ad), n in counts.items():
        out[(datetime.fromtimestamp(m / 1000, UTC).date(), adv, cmp)] += n
    return out


def hour_key(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d-%H:00")


def day_key(d: date) -> str:
    return d.isoformat()


@contextmanager
def spark_cluster_up(spark_sh: str):
    """The local standalone cluster + Connect server of `infra/spark.sh`: started unless already
    up, stopped on exit only if started here."""
    up = subprocess.run([spark_sh, "status"], capture_output=True, text=True).returncode == 0
    if not up:
        subprocess.run([spark_sh, "start"], check=True, timeout=300)
    try:
        yield
    finally:
        if not up:
            subprocess.run([spark_sh, "stop"], check=True, timeout=120)
