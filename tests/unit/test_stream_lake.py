"""Lake layout of the raw archive: deterministic names, partial files superseded, hour index."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from clickagg_platform import lake


def test_names_are_deterministic_and_parse_back():
    url = lake.raw_file_url("file:///l", "clicks", 3, 100, 199)
    assert url == "file:///l/raw/topic=clicks/partition=3/offsets=000000000100-000000000199.parquet"
    assert lake.parse_raw_name(url) == lake.RawFile(3, 100, 199, url)
    hour = int(datetime(2024, 5, 6, 7, tzinfo=UTC).timestamp() * 1000)
    marker = lake.hour_marker_url("s3://b/x", "clicks", hour + 123, 3, 100, 199)
    assert marker == (
        "s3://b/x/raw/_hours/topic=clicks/dt=2024-05-06/hour=07/"
        "partition=3-offsets=000000000100-000000000199"
    )
    assert lake.parse_raw_name(marker.rsplit("/", 1)[1]).last == 199


def test_resolve_keeps_the_longest_file_per_block():
    files = [
        lake.RawFile(0, 0, 57, "p0-partial"),
        lake.RawFile(0, 0, 99, "p0-full"),
        lake.RawFile(0, 0, 80, "p0-partial-stale"),
        lake.RawFile(0, 100, 120, "p0-next-partial"),
        lake.RawFile(1, 0, 10, "p1"),
    ]
    assert [f.url for f in lake.resolve_blocks(files)] == ["p0-full", "p0-next-partial", "p1"]


def test_write_list_and_hour_lookup_on_file_urls(tmp_path):
    root = f"file://{tmp_path}/lake"
    hour = int(datetime(2024, 5, 6, 7, tzinfo=UTC).timestamp() * 1000)
    cols = {name: [None, None] for name in lake.RAW_SCHEMA.names}
    cols.update(kafka_partition=[2, 2], kafka_offset=[0, 1], event_time=[hour + 5, hour + 9])
    table = pa.table(cols, schema=lake.RAW_SCHEMA)
    for last in (0, 1):  # a partial file, then the longer one
        lake.write_table(lake.raw_file_url(root, "t", 2, 0, last), table.slice(0, last + 1))
        lake.touch(lake.hour_marker_url(root, "t", hour, 2, 0, last))
    files = lake.raw_files(root, "t")
    assert [(f.partition, f.first, f.last) for f in files] == [(2, 0, 1)]
    assert lake.read_raw(files)["kafka_offset"].to_pylist() == [0, 1]
    found = lake.hour_files(root, "t", datetime(2024, 5, 6, 7, 30, tzinfo=UTC))
    assert [f.url for f in found] == [files[0].url]
    assert lake.hour_files(root, "t", datetime(2024, 5, 6, 8, tzinfo=UTC)) == []


def test_a_partial_file_deleted_between_listing_and_reading_is_listed_again(tmp_path):
    """The archiver deletes a block's partial files once its full file is written; a reader that
    listed the partial one lists again and reads the full one."""
    root = f"file://{tmp_path}/lake"
    cols = {name: [None] * 3 for name in lake.RAW_SCHEMA.names}
    cols.update(kafka_partition=[0, 0, 0], kafka_offset=[0, 1, 2])
    full = pa.table(cols, schema=lake.RAW_SCHEMA)
    partial_url = lake.raw_file_url(root, "clicks", 0, 0, 1)
    lake.write_table(partial_url, full.slice(0, 2))
    listings = []

    def listing():
        files = lake.raw_files(root, "clicks")
        listings.append([f.last for f in files])
        if len(listings) == 1:  # the block completes right after this listing
            lake.write_table(lake.raw_file_url(root, "clicks", 0, 0, 2), full)
            lake.delete([partial_url])
        return files

    files, table = lake.read_raw_listed(listing)
    assert listings == [[1], [2]]
    assert [f.last for f in files] == [2]
    assert table["kafka_offset"].to_pylist() == [0, 1, 2]
