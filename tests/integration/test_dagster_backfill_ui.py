"""A backfill of 24 hourly partitions launched the way the UI launches it (GraphQL
`launchPartitionBackfill` against `dagster dev -w workspace.yaml`, the daemon and the default
run launcher): one run (BackfillPolicy.single_run) reconciles the whole range, and the lake
holds exactly the independent recount for every hour."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.batch_support import (
    HOUR,
    MIN,
    hour_key,
    in_hours,
    place,
    reference_clicks,
    write_archive,
)
from tests.conftest import wait_until
from tests.helpers import settings_env
from tests.integration.stream_harness import free_port
from tests.integration.test_batch_assets import write_hot
from tests.unit.stream_sim import expected_billable, make_events

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY0 = 1_767_312_000_000  # 2026-01-02T00:00Z

LAUNCH = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on UnauthorizedError { message } } }"""
RUNS = """query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill",
  value: $id}]}) { ... on Runs { results { runId status } } } }"""
LOADED = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"


def gql(port: int, query: str, variables: dict | None = None) -> dict:
    r = httpx.post(
        f"http://127.0.0.1:{port}/graphql",
        json={"query": query, "variables": variables or {}},
        timeout=30,
    )
    r.raise_for_status()
    return r.json()["data"]


def test_ui_backfill_of_24_hours_is_one_run(settings, ch_database, tmp_path):
    events = make_events(seed=31, n=1500, start_ms=DAY0 + 10 * MIN, rate_per_s=0.018)
    parts = place(events, 3)
    write_archive(settings.lake_root, settings.clicks_topic, parts, block=200)
    billable, _ = reference_clicks(parts)
    write_hot(settings, expected_billable(parts))  # the hot table a correct stream leaves

    port = free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(  # launch runs at once (no queue): a faster test
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    env = settings_env(settings, DAGSTER_HOME=str(home))
    log = open(tmp_path / "dagster-dev.log", "wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def loaded():
            try:
                entries = gql(port, LOADED)["workspaceOrError"]["locationEntries"]
                return entries and all(e["loadStatus"] == "LOADED" for e in entries)
            except (httpx.HTTPError, KeyError, TypeError):
                return False

        wait_until(loaded, 90, "dagster dev loaded the code location", interval=1)
        keys = [hour_key(DAY0 + i * HOUR) for i in range(24)]
        params = {
            "partitionNames": keys,
            "assetSelection": [
                {"path": [a]} for a in ("raw_clicks", "minute_aggregates", "drift_report")
            ],
            "fromFailure": False,
        }
        out = gql(port, LAUNCH, {"p": params})["launchPartitionBackfill"]
        assert out["__typename"] == "LaunchBackfillSuccess", out
        backfill = out["backfillId"]

        def finished():
            runs = gql(port, RUNS, {"id": backfill})["runsOrError"]["results"]
            done = runs and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs)
            return runs if done else None

        runs = wait_until(finished, 180, "the backfill's runs finished", interval=2)
        assert [r["status"] for r in runs] == ["SUCCESS"]  # one run for the 24 partitions
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()

    from assets.common import minute_agg_url

    for i in range(24):
        h = DAY0 + i * HOUR
        t = pq.read_table(minute_agg_url(settings.lake_root, h).removeprefix("file://"))
        got = {
            (
                int(r["window_start"].timestamp() * 1000),
                r["advertiser_id"],
                r["campaign_id"],
                r["ad_id"],
            ): r["clicks"]
            for r in t.to_pylist()
        }
        assert got == dict(in_hours(billable, h, h + HOUR)), hour_key(h)
