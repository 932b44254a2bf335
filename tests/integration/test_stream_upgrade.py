"""Upgrading the stream worker under load: stop it gracefully, start a new release of the code
(a separate copy of the tree) on the same state, and the hot totals still equal the independent
recount: nothing lost, nothing counted twice (docs/operations.md#upgrading-the-stream-worker)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import wait_until
from tests.integration.stream_harness import (
    ROOT,
    Feed,
    Placed,
    Worker,
    delete_internal_topics,
    now_ms,
    totals,
    wait_equal,
)
from tests.integration.test_stream_faults import processed
from tests.unit.stream_sim import expected_billable, make_events

pytestmark = [pytest.mark.integration, pytest.mark.fault]
RELEASE_BANNER = "clickagg-stream release v2 starting"


def make_release(dest):
    """A new release of the worker: a copy of the code, marked so its start is visible."""
    for pkg in ("streaming", "clickagg_platform"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    init = dest / "streaming" / "__init__.py"
    init.write_text(init.read_text() + f"\nprint({RELEASE_BANNER!r}, flush=True)\n")
    return dest


class ReleaseWorker(Worker):
    """The worker started from another code tree (cwd and import path: the release copy)."""

    def __init__(self, *args, release, **kwargs):
        super().__init__(*args, **kwargs)
        self.release = release
        self.env["PYTHONPATH"] = str(release)

    def start(self) -> ReleaseWorker:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", self.module, "worker", "-l", "info"],
            cwd=self.release,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self


def test_stop_upgrade_resume_under_load(settings, kafka_topic, ch_database, tmp_path, unique):
    events = make_events(seed=51, n=20_000, start_ms=now_ms() - 3_600_000)
    placed = Placed()
    app_id = f"u{unique}"
    feed = Feed(settings, events, placed, chunks=4)
    old = Worker(settings, tmp_path / "state", app_id).start()
    try:
        feed.send()
        wait_until(lambda: processed(old) > 3000, 90, "the old release to be processing")
        feed.send()  # in flight when the old release stops
        old.stop()  # graceful: SIGTERM, the worker checkpoints and leaves the group
        assert old.proc.returncode == 0, old.log_tail()
        feed.send()  # arrives while no release runs: the upgrade window
        assert feed.left > 0, "the load must still be running during the upgrade"
        release = make_release(tmp_path / "release-v2")
        new = ReleaseWorker(settings, tmp_path / "state", app_id, release=release).start()
        feed.rest()  # and more once the new release runs
        assert feed.left == 0
        want = expected_billable(placed.by_partition())
        wait_equal(settings, want, 120, [new])
        assert RELEASE_BANNER in new.log_path.read_text(errors="replace")
        assert sum(totals(settings).values()) == sum(want.values())
    finally:
        old.stop()
        if "new" in locals():
            new.stop()
        delete_internal_topics(settings, app_id)
