"""Lake layout of the raw click archive, and Parquet I/O through one code path for `file://`
and `s3://` (pyarrow.fs; `CLICKAGG_S3_ENDPOINT_URL` overrides the S3 endpoint).

Layout under the lake root:
    raw/topic=<topic>/partition=<p>/offsets=<first:012d>-<last:012d>.parquet
    raw/_hours/topic=<topic>/dt=<YYYY-MM-DD>/hour=<HH>/partition=<p>-offsets=<first>-<last>

A data file holds the records of one source partition with offsets in [first, last], where
`first` is a multiple of the block size: block k covers offsets [k*N, (k+1)*N). A block still
filling is flushed as a *partial* file (same `first`, smaller `last`) and later superseded by a
longer one; readers keep, per (partition, first), only the file with the largest `last`
(`resolve_blocks`), so they never read a record twice. Names depend only on offsets, so a replay
rewrites the same names with the same rows (the Kafka log is immutable).

One file spans many event hours (late clicks), so each file also drops an empty marker object
under `_hours/dt=/hour=` for every event hour it contains: the batch path lists one hour's prefix
to find every file holding that hour's clicks (`hour_files`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from clickagg_platform.settings import Settings, get_settings

_FILE = re.compile(r"partition=(\d+)[/-]offsets=(\d{12})-(\d{12})(?:\.parquet)?$")

RAW_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("impression_id", pa.string()),
        ("advertiser_id", pa.string()),
        ("campaign_id", pa.string()),
        ("ad_id", pa.string()),
        ("publisher_id", pa.string()),
        ("event_time", pa.int64()),
        ("received_at", pa.int64()),
        ("ip_hash", pa.string()),
        ("user_agent", pa.string()),
        ("user_key", pa.string()),
        ("token_key_id", pa.string()),
        ("schema_version", pa.int64()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("kafka_timestamp", pa.int64()),
        ("fraud_reason", pa.string()),  # stateless rules known at archive time (bot_ua)
        ("decode_error", pa.string()),  # set (and raw_value kept) for an undecodable record
        ("raw_value", pa.binary()),
    ]
)


@dataclass(frozen=True)
class RawFile:
    partition: int
    first: int
    last: int
    url: str


def filesystem(root: str, settings: Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a lake URL; s3:// honours the endpoint override."""
    s = settings or get_settings()
    if root.startswith("s3://") and s.s3_endpoint_url:
        scheme, _, host = s.s3_endpoint_url.partition("://")
        s3 = pafs.S3FileSystem(endpoint_override=host or scheme, scheme=scheme if host else "https")
        return s3, root[len("s3://") :]
    return pafs.FileSystem.from_uri(root)


def s3a_url(url: str) -> str:
    """The URL Spark's S3A connector reads for a lake URL: s3://bucket/key -> s3a://bucket/key
    (same object; Hadoop binds the S3A filesystem to the s3a scheme only). Other URLs are
    refused: only an s3:// lake is read through S3A."""
    if not url.startswith("s3://") or not url[len("s3://") :].split("/", 1)[0]:
        raise ValueError(f"not an s3://bucket/... URL: {url!r}")
    return "s3a://" + url[len("s3://") :]


def raw_file_url(root: str, topic: str, partition: int, first: int, last: int) -> str:
    return (
        f"{root.rstrip('/')}/raw/topic={topic}/partition={partition}/"
        f"offsets={first:012d}-{last:012d}.parquet"
    )


def hour_marker_url(root: str, topic: str, hour_ms: int, partition: int, first: int, last: int):
    h = datetime.fromtimestamp(hour_ms / 1000, UTC)
    return (
        f"{root.rstrip('/')}/raw/_hours/topic={topic}/dt={h:%Y-%m-%d}/hour={h:%H}/"
        f"partition={partition}-offsets={first:012d}-{last:012d}"
    )


def parse_raw_name(name: str, url: str = "") -> RawFile | None:
    m = _FILE.search(name)
    if not m:
        return None
    return RawFile(int(m.group(1)), int(m.group(2)), int(m.group(3)), url or name)


def resolve_blocks(files: list[RawFile]) -> list[RawFile]:
    """Per (partition, first offset) keep the longest file: partial flushes are prefixes."""
    best: dict[tuple[int, int], RawFile] = {}
    for f in files:
        key = (f.partition, f.first)
        if key not in best or f.last > best[key].last:
            best[key] = f
    return sorted(best.values(), key=lambda f: (f.partition, f.first))


def write_table(url: str, table: pa.Table, settings: Settings | None = None) -> None:
    """Write one Parquet file; on a local disk via a temp name + rename (never half a file)."""
    fs, path = filesystem(url, settings)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp"
        pq.write_table(table, tmp, filesystem=fs, compression="zstd")
        fs.move(tmp, path)
    else:  # an S3 PUT is atomic
        pq.write_table(table, path, filesystem=fs, compression="zstd")


def touch(url: str, settings: Settings | None = None) -> None:
    fs, path = filesystem(url, settings)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(b"")


def delete(urls: list[str], settings: Settings | None = None) -> None:
    for url in urls:
        fs, path = filesystem(url, settings)
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass


def _list(url: str, settings: Settings | None = None) -> list[str]:
    fs, path = filesystem(url, settings)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except FileNotFoundError:
        return []
    return [i.path for i in infos if i.type == pafs.FileType.File]


def raw_files(root: str, topic: str, settings: Settings | None = None) -> list[RawFile]:
    """Every raw data file of the topic, resolved (no superseded partial files)."""
    base = f"{root.rstrip('/')}/raw/topic={topic}"
    found = []
    for path in _list(base, settings):
        if path.endswith(".parquet"):
            f = parse_raw_name(path)
            if f:
                url = _url(base, path, settings)
                found.append(RawFile(f.partition, f.first, f.last, url))
    return resolve_blocks(found)


def hour_files(root: str, topic: str, hour: datetime, settings=None) -> list[RawFile]:
    """The raw files holding at least one click whose event time is in this UTC hour."""
    h = hour.astimezone(UTC) if hour.tzinfo else hour.replace(tzinfo=UTC)
    prefix = f"{root.rstrip('/')}/raw/_hours/topic={topic}/dt={h:%Y-%m-%d}/hour={h:%H}"
    found = []
    for path in _list(prefix, settings):
        f = parse_raw_name(path.rsplit("/", 1)[-1])
        if f:
            found.append(RawFile(f.partition, f.first, f.last, ""))
    return [
        RawFile(
            f.partition, f.first, f.last, raw_file_url(root, topic, f.partition, f.first, f.last)
        )
        for f in resolve_blocks(found)
    ]


def _url(base: str, path: str, settings: Settings | None = None) -> str:
    """Map a filesystem path found under `base` back to a URL under the lake root."""
    fs_base = filesystem(base, settings)[1]
    return base + path[len(fs_base) :]


def read_raw_listed(
    list_files: Callable[[], list[RawFile]], settings: Settings | None = None, attempts: int = 5
) -> tuple[list[RawFile], pa.Table]:
    """List, then read what was listed. A listed file can vanish before it is read: the archiver
    deletes a block's partial files once the block's full file is written, and that file holds
    every row of the partial ones, so listing again is enough."""
    for attempt in range(attempts):
        files = list_files()
        try:
            return files, read_raw(files, settings)
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def read_raw(files: list[RawFile], settings: Settings | None = None) -> pa.Table:
    tables = []
    for f in files:
        fs, path = filesystem(f.url, settings)
        tables.append(pq.read_table(path, filesystem=fs, schema=RAW_SCHEMA))
    return pa.concat_tables(tables) if tables else RAW_SCHEMA.empty_table()
