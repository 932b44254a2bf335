"""Shared fixtures. Integration tests use the real local services that `make test` starts
(infra/kafka.sh, infra/clickhouse.sh); each test gets its own topic / database so tests never
see each other's data."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from clickagg_platform.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval=0.1):
    """Poll `predicate` until it returns a truthy value or the deadline passes (then fail)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last={last!r})")


async def async_wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval=0.05
):
    """`wait_until` for code running on an event loop: polls without blocking the loop."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last={last!r})")


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(tmp_path: Path, unique: str) -> Settings:
    """Settings for one test: own topic, own ClickHouse database, own spool and lake."""
    return Settings(
        clicks_topic=f"clicks_t{unique}",
        clickhouse_database=f"clickagg_t{unique}",
        spool_dir=tmp_path / "spool",
        lake_url=f"file://{tmp_path / 'lake'}",
        signing_keys="k2:test-key-two,k1:test-key-one",
    )


@pytest.fixture
def kafka_topic(settings: Settings) -> str:
    from clickagg_platform import kafka_admin

    kafka_admin.wait_for_broker(settings, timeout_s=60)
    kafka_admin.ensure_topic(settings)
    yield settings.clicks_topic
    try:
        kafka_admin.delete_topic(settings, settings.clicks_topic)
    except Exception:  # noqa: BLE001 - the broker may have been stopped by a fault test
        pass


@pytest.fixture
def ch_database(settings: Settings) -> str:
    from clickagg_platform import clickhouse

    clickhouse.migrate(settings, log=lambda _m: None)
    yield settings.clickhouse_database
    if os.environ.get("CLICKAGG_KEEP_TEST_DB") != "1":
        c = clickhouse.client(settings)
        try:
            c.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
        except Exception:  # noqa: BLE001 - ClickHouse may have been stopped by a fault test
            pass
        finally:
            c.disconnect()
