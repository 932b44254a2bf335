"""One load run's bookkeeping around the sender, shared by the HTTP and the Kafka runner.

`prepare` pins the start time and builds the lazy request stream; `finish` builds the truth,
writes the manifest + events.jsonl (each atomically) and re-raises a cancellation afterwards,
so an interrupted run still leaves a truth covering everything that may have been delivered.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from clickagg_platform.loadgen.catalog import Catalog, build_catalog
from clickagg_platform.loadgen.manifest import build_manifest, planned_counts, schedule_checks
from clickagg_platform.loadgen.pacing import LoadStats, wall_ms
from clickagg_platform.loadgen.plan import LoadPlan
from clickagg_platform.loadgen.requests import PlannedRequest, generate_requests
from clickagg_platform.loadgen.schedule import plan_schedule
from clickagg_platform.loadgen.truth import GroundTruth, GroundTruthBuilder
from clickagg_platform.settings import Settings


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


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


@dataclass
class Prepared:
    plan: LoadPlan
    catalog: Catalog
    planned: dict
    checks: dict
    requests: Iterator[PlannedRequest]
    builder: GroundTruthBuilder
    stats: LoadStats
    started_ms: int  # the schedule's start (elapsed and achieved rate count from here)


def prepare(plan: LoadPlan, settings: Settings, stats: LoadStats | None) -> Prepared:
    """Pin the start time, build catalog and schedule, and the lazy request stream.

    The default start lies a little ahead (~1 s per million requests) so building the schedule
    does not already put the first requests behind it.
    """
    plan = plan.resolved(wall_ms() + 100 + plan.total_requests // 1000)
    catalog = build_catalog(plan)
    schedule = plan_schedule(plan, catalog)
    requests = generate_requests(
        plan,
        catalog,
        settings.keyring(),
        settings.active_key_id,
        ttl_s=settings.token_ttl_s,
        schedule=schedule,
    )
    return Prepared(
        plan=plan,
        catalog=catalog,
        planned=planned_counts(plan, schedule),
        checks=schedule_checks(plan, schedule),
        requests=requests,
        builder=GroundTruthBuilder(catalog),
        stats=stats or LoadStats(planned=plan.total_requests),
        started_ms=plan.require_start_ms(),
    )


def finish(
    prep: Prepared,
    target: str,
    endpoint: str,
    run: dict,
    manifest_path: Path | None,
    interrupted: bool,
) -> LoadResult:
    """Build the truth and the manifest, write them, re-raise a cancellation afterwards."""
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
