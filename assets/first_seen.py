"""The first-seen index as a Dagster asset: per event hour, the first copy of every event_id
(clickagg_platform/first_seen.py has the layout and the rule). `minute_aggregates` joins the index
of the dedup horizon's earlier hours instead of re-reading their raw files."""

import os
import tempfile
import time
import uuid
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from assets.common import HOUR_MS, TRANSIENT, hours_in, raw_files_for, signature, utc
from assets.partitions import hourly
from clickagg_platform import first_seen as fs_
from clickagg_platform import lake
from resources.lake import LakeResource
from resources.spark import SparkResource

INDEX_CHECK = dg.AssetCheckSpec(
    "first_seen_index_matches_raw",
    asset="first_seen_index",
    description="Per hour, the index rows (event_id, first partition/offset) equal an independent "
    "DuckDB recount over the hour's raw files",
    blocking=True,
)


class IndexConfig(dg.Config):
    buckets: int = Field(
        fs_.DEFAULT_BUCKETS, description="Hash buckets per hour (files); 0 = sized from the rows"
    )
    force: bool = Field(False, description="Rebuild hours whose index is already current")


def read_pointer(root: str, topic: str, hour_ms: int, settings) -> fs_.Pointer | None:
    fsys, path = lake.filesystem(fs_.pointer_url(root, topic, hour_ms), settings)
    try:
        with fsys.open_input_stream(path) as fh:
            return fs_.Pointer.loads(fh.read())
    except (FileNotFoundError, OSError):
        return None


def _write_pointer(root: str, topic: str, hour_ms: int, ptr: fs_.Pointer, settings) -> None:
    url = fs_.pointer_url(root, topic, hour_ms)
    fsys, path = lake.filesystem(url, settings)
    fsys.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = path if not _is_local(fsys) else f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fsys.open_output_stream(tmp) as out:
        out.write(ptr.dumps())
    if tmp != path:
        fsys.move(tmp, path)  # rename: atomic on a local disk (an S3 PUT is atomic anyway)


def _is_local(fsys) -> bool:
    from pyarrow import fs as pafs

    return isinstance(fsys, pafs.LocalFileSystem)


def index_file_urls(root: str, topic: str, hour_ms: int, ptr: fs_.Pointer, settings) -> list[str]:
    if ptr.rows == 0:
        return []
    prefix = fs_.version_prefix(root, topic, hour_ms, ptr.version)
    base_path = lake.filesystem(prefix, settings)[1]
    return sorted(
        prefix + p[len(base_path) :] for p in lake._list(prefix, settings) if p.endswith(".parquet")
    )


def _drop_other_versions(root: str, topic: str, hour_ms: int, keep: str, settings) -> None:
    prefix = fs_.hour_prefix(root, topic, hour_ms)
    base_path = lake.filesystem(prefix, settings)[1]
    stale = [
        prefix + p[len(base_path) :]
        for p in lake._list(prefix, settings)
        if "/v=" in p and f"/v={keep}/" not in p
    ]
    lake.delete(stale, settings)


def build(
    session,
    lake_store: LakeResource,
    settings,
    hours: list[int],
    buckets: int,
    run_id: str,
    log=None,
    spark_s3a: bool = False,
) -> dict[int, fs_.Pointer]:
    """(Re)build the index of these event hours from their raw files: one Spark read of the
    hours' files (4 columns), one write, then per hour: publish the version, swap `_CURRENT`,
    drop the previous versions. Returns the new pointers. `spark_s3a` (an s3:// lake): Spark
    reads and writes s3a:// itself (SparkResource.s3a_on)."""
    from pyarrow import fs as pafs

    root, topic = lake_store.url, lake_store.topic
    if not hours:
        return {}
    listed = {h: raw_files_for(root, topic, [h], settings) for h in hours}
    files = lake.resolve_blocks([f for fl in listed.values() for f in fl])
    t0 = time.monotonic()
    # s3a: executors read the raw files and write the index into a staging prefix of the lake
    # themselves; otherwise Spark reads local copies and writes a temp dir of the run worker
    s3a = lake_store.is_s3 and spark_s3a
    with (
        lake_store.local_copies([] if s3a else files) as paths,
        tempfile.TemporaryDirectory(prefix="clickagg-index-") as tmp,
    ):
        if s3a:
            out_url = f"{fs_.topic_prefix(root, topic)}/_staging/{run_id}-{uuid.uuid4().hex[:8]}"
            paths, spark_out = [lake.s3a_url(f.url) for f in files], lake.s3a_url(out_url)
        else:
            out_url = spark_out = os.path.join(tmp, "out")
        out_fs, out_path = lake.filesystem(out_url, settings) if s3a else (None, out_url)
        if buckets <= 0:
            buckets = fs_.auto_buckets(rows_in(paths, settings) / len(hours))
        if paths:
            raw = session.read.parquet(*paths)
            rows = fs_.index_rows(raw, min(hours), max(hours) + HOUR_MS, buckets)
            wanted = session.createDataFrame([(h,) for h in hours], "hour long")
            rows = rows.join(wanted.hint("broadcast"), "hour", "left_semi")
            (
                rows.repartition("hour", "bucket")
                .sortWithinPartitions("event_id")
                .write.partitionBy("hour", "bucket")
                .option("compression", "zstd")  # entropy-codes the hex ids (~2x vs snappy)
                .parquet(spark_out)
            )
        out_fs = out_fs or pafs.LocalFileSystem()
        pointers = {}
        for h in hours:
            version = f"{signature(listed[h])}-{uuid.uuid4().hex[:8]}"
            src = f"{out_path}/hour={h}"
            n = _rows_under(out_fs, src)
            if n:
                dest_url = fs_.version_prefix(root, topic, h, version)
                dest_fs, dest_path = lake.filesystem(dest_url, settings)
                for rel in _parquet_under(out_fs, src):  # not Spark's .crc / _SUCCESS files
                    target = f"{dest_path}/{rel}"
                    dest_fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
                    pafs.copy_files(
                        f"{src}/{rel}",
                        target,
                        source_filesystem=out_fs,
                        destination_filesystem=dest_fs,
                    )
            ptr = fs_.Pointer(
                version=version,
                signature=signature(listed[h]),
                rows=n,
                buckets=buckets,
                built_at=datetime.now(UTC).isoformat(timespec="seconds"),
                run_id=run_id,
            )
            _write_pointer(root, topic, h, ptr, settings)
            _drop_other_versions(root, topic, h, version, settings)
            pointers[h] = ptr
        if s3a and out_fs.get_file_info(out_path).type != pafs.FileType.NotFound:
            out_fs.delete_dir(out_path)
    if log is not None:
        log.info(
            f"first-seen index: built {len(hours)} hour(s) from {len(files)} raw file(s), "
            f"{sum(p.rows for p in pointers.values())} ids in {time.monotonic() - t0:.1f} s"
        )
    return pointers


def rows_in(paths: list[str], settings=None) -> int:
    """Rows of Parquet files from their footers: local paths, or s3a:// URLs (read through the
    lake's S3 filesystem)."""
    import pyarrow.parquet as pq

    total = 0
    for p in paths:
        if p.startswith("s3a://"):
            fsys, path = lake.filesystem("s3://" + p[len("s3a://") :], settings)
            with fsys.open_input_file(path) as fh:
                total += pq.ParquetFile(fh).metadata.num_rows
        else:
            total += pq.ParquetFile(p).metadata.num_rows
    return total


def _parquet_under(fsys, directory: str) -> list[str]:
    """Relative paths of the Parquet files below a directory of `fsys` (none if missing)."""
    from pyarrow import fs as pafs

    infos = fsys.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
    return sorted(
        i.path[len(directory) + 1 :]
        for i in infos
        if i.type == pafs.FileType.File and i.path.endswith(".parquet")
    )


def _rows_under(fsys, directory: str) -> int:
    import pyarrow.parquet as pq

    total = 0
    for rel in _parquet_under(fsys, directory):
        with fsys.open_input_file(f"{directory}/{rel}") as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def current(
    session,
    lake_store: LakeResource,
    settings,
    hours: list[int],
    buckets: int,
    run_id,
    log=None,
    spark_s3a: bool = False,
) -> tuple[dict[int, fs_.Pointer], list[int]]:
    """Pointers of these hours with every missing or stale hour (raw file set changed since its
    build: late files) rebuilt first. Returns (pointers, hours rebuilt)."""
    root, topic = lake_store.url, lake_store.topic
    pointers = {h: read_pointer(root, topic, h, settings) for h in hours}
    sigs = {h: signature(raw_files_for(root, topic, [h], settings)) for h in hours}
    stale = fs_.stale_hours(hours, pointers, sigs)
    if stale:
        if log is not None:
            log.info(
                "first-seen index missing or stale for "
                + ", ".join(f"{utc(h):%Y-%m-%dT%H}" for h in stale[:10])
                + (f" (+{len(stale) - 10} more)" if len(stale) > 10 else "")
                + ": building"
            )
        pointers.update(
            build(session, lake_store, settings, stale, buckets, run_id, log, spark_s3a)
        )
    return pointers, stale


@dg.asset(
    partitions_def=hourly,
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=TRANSIENT,
    deps=["raw_clicks"],
    kinds={"spark", "parquet"},
    group_name="batch",
    check_specs=[INDEX_CHECK],
)
def first_seen_index(
    context: dg.AssetExecutionContext,
    config: IndexConfig,
    spark: SparkResource,
    lake_store: LakeResource,
) -> dg.MaterializeResult:
    """First copy (partition, offset, event time) of every event_id per event hour, bucketed by
    event_id: what later hours' reconcile joins instead of re-reading the horizon's raw files."""
    window = context.partition_time_window
    hours = hours_in(window.start, window.end)
    settings = lake_store.settings()
    root, topic = lake_store.url, lake_store.topic
    session = spark.session()
    args = (session, lake_store, settings, hours, config.buckets, context.run_id)
    if config.force:
        pointers, built = build(*args, spark_s3a=spark.s3a_on), hours
    else:
        pointers, built = current(*args, context.log, spark.s3a_on)
    problems, per_hour = [], {}
    for h in hours:
        ptr = pointers[h]
        raw = raw_files_for(root, topic, [h], settings)
        idx = index_file_urls(root, topic, h, ptr, settings)
        with lake_store.local_copies(raw) as raw_paths, lake_store.local_paths(idx) as idx_paths:
            want, got, differ = fs_.duckdb_index_diff(raw_paths, idx_paths, h, h + HOUR_MS)
        label = f"{utc(h):%Y-%m-%dT%H}"
        if differ or want != ptr.rows:
            problems.append(f"{label}: recount {want} ids, index {got} ({differ} rows differ)")
        per_hour[label] = {"ids": ptr.rows, "version": ptr.version, "rebuilt": h in built}
    return dg.MaterializeResult(
        metadata={
            "ids": sum(p.rows for p in pointers.values()),
            "hours_rebuilt": len(built),
            "per_hour": dg.MetadataValue.json(per_hour),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="first_seen_index_matches_raw",
                passed=not problems,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"problems": "; ".join(problems[:20]) or "none"},
            )
        ],
    )
