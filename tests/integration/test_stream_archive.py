"""Raw archive against the real broker: every record (duplicates and bot clicks included) lands
in the lake exactly once per (partition, offset), also after a SIGKILL mid-block and after a
full replay by another consumer group, which rewrites the same file names with the same rows;
the hour markers find every file holding an hour's clicks."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from clickagg_platform import lake
from tests.conftest import wait_until
from tests.integration.stream_harness import (
    ArchiverProc,
    Placed,
    now_ms,
    produce,
    produce_raw,
)
from tests.unit.stream_sim import make_events

pytestmark = [
    pytest.mark.integration,
    pytest.mark.fault,
    pytest.mark.usefixtures("stream_internal_topics"),
]


BLOCK = 200


def archived(settings) -> list[tuple[int, int, str, str | None]]:
    _, t = lake.read_raw_listed(lambda: lake.raw_files(settings.lake_root, settings.clicks_topic))
    return list(
        zip(
            t["kafka_partition"].to_pylist(),
            t["kafka_offset"].to_pylist(),
            t["event_id"].to_pylist(),
            t["fraud_reason"].to_pylist(),
            strict=True,
        )
    )


def expected(placed: Placed) -> list[tuple[int, int, str]]:
    return sorted((p, off, ev.event_id) for p, recs in placed.records.items() for off, ev in recs)


def mtimes(settings) -> dict[str, int]:
    fs, _ = lake.filesystem(settings.lake_root)
    files = lake.raw_files(settings.lake_root, settings.clicks_topic)
    return {f.url: fs.get_file_info(f.url.removeprefix("file://")).mtime_ns for f in files}


def full_files(settings) -> dict[str, list]:
    out = {}
    for f in lake.raw_files(settings.lake_root, settings.clicks_topic):
        if f.last == f.first + BLOCK - 1:
            out[f.url] = pq.read_table(f.url.removeprefix("file://")).to_pylist()
    return out


def test_archive_exactly_once_per_offset_after_kill_and_replay(
    settings, kafka_topic, tmp_path, unique
):
    start = now_ms() - 2 * 3_600_000
    first = make_events(seed=61, n=2500, start_ms=start, rate_per_s=2.0)
    second = make_events(seed=62, n=1500, start_ms=start + 1_000_000, rate_per_s=2.0)
    placed = Placed()
    garbage = produce_raw(settings, [b"\x00 not json"])
    produce(settings, first, placed)
    extra = {
        "CLICKAGG_STREAM_ARCHIVE_BLOCK_OFFSETS": str(BLOCK),
        "CLICKAGG_STREAM_ARCHIVE_FLUSH_INTERVAL_S": "0.5",
    }
    arch = ArchiverProc(settings, tmp_path / "a", f"t{unique}", **extra).start()

    def covered() -> bool:
        got = archived(settings)
        want = expected(placed) + [(p, o, None) for p, o in garbage]
        return sorted((p, o, e or "") for p, o, e, _ in got) == sorted(
            (p, o, e or "") for p, o, e in want
        )

    try:
        wait_until(lambda: len(archived(settings)) > 500, 60, "some blocks archived")
        arch.kill()  # mid-stream, probably mid-block
        produce(settings, second, placed)
        arch.start()
        wait_until(covered, 90, "every offset archived exactly once")
        rows = archived(settings)
        assert len(rows) == len(first) + len(second) + 1  # duplicates are kept: raw log
        table = lake.read_raw(lake.raw_files(settings.lake_root, settings.clicks_topic))
        bad = [r for r in table.to_pylist() if r["decode_error"] is not None]
        assert [(r["kafka_partition"], r["kafka_offset"], r["raw_value"]) for r in bad] == [
            (*garbage[0], b"\x00 not json")
        ]
        bots = Counter(r for *_, r in rows)
        assert bots["bot_ua"] > 0
        before = full_files(settings)
        assert len(before) >= 10
    finally:
        arch.stop()
    names, stamp = set(mtimes(settings)), mtimes(settings)

    # a replay from offset 0 by another group rewrites the same names with the same rows
    replay = ArchiverProc(settings, tmp_path / "b", f"r{unique}", **extra).start()
    try:
        wait_until(
            lambda: replay.log_path.exists() and "archiver" in replay.log_path.read_text(),
            60,
            "replay archiver joined",
        )
        wait_until(
            lambda: all(mtimes(settings).get(u, 0) > stamp[u] for u in before),
            90,
            "the replay rewrote every full block file",
        )
        wait_until(covered, 60, "coverage after replay")
        assert full_files(settings) == before  # same names, same rows
        assert set(mtimes(settings)) == names  # no file added next to the old ones
    finally:
        replay.stop()

    # the hour markers find every file that holds an hour's clicks
    events = first + second
    # the hour holding most of the clicks: the events span ~30 min from a wall-clock start, so
    # the last hour may hold only a handful of them
    hour = Counter(e.event_time // 3_600_000 * 3_600_000 for e in events).most_common(1)[0][0]
    in_hour = Counter(
        (p, off)
        for p, recs in placed.records.items()
        for off, ev in recs
        if ev.event_time // 3_600_000 * 3_600_000 == hour
    )
    files = lake.hour_files(
        settings.lake_root, settings.clicks_topic, datetime.fromtimestamp(hour / 1000, UTC)
    )
    t = lake.read_raw(files)
    got = Counter(
        (p, o)
        for p, o, et in zip(
            t["kafka_partition"].to_pylist(),
            t["kafka_offset"].to_pylist(),
            t["event_time"].to_pylist(),
            strict=True,
        )
        # the undecodable record has no event time; it shares a file with clicks of the hour
        if et is not None and et // 3_600_000 * 3_600_000 == hour
    )
    assert got == in_hour and sum(in_hour.values()) > 100
