"""The dashboard in a real headless browser (Debian's chromium driven by Playwright) against the
real API and ClickHouse: the charts render with data, and a screenshot is kept as an artefact
(.local/artifacts/dashboard.png)."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn

from clickagg_platform import clickhouse
from clickagg_platform.api.app import create_app
from clickagg_platform.api.keys import KeyStore
from tests.helpers import ROOT, free_port, wait_http

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _seed(settings, db) -> tuple[str, int]:
    """Two hours of minute clicks ending now; the older hour reconciled. Returns (key, total)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None)
    start = now.replace(minute=0) - timedelta(hours=1)
    hot, batch = [], []
    minute, total = start, 0
    while minute <= now:
        n = 5 + (minute.minute * 7) % 11
        hot.append((minute, "c1", "a1", 0, minute.minute % 6, n, 1))
        total += n
        if minute < start + timedelta(hours=1):
            batch.append(
                (start, minute, "adv1", "c1", "a1", n - (minute.minute % 5 == 0), 0, 0, now, "r")
            )
        minute += timedelta(minutes=1)
    c = clickhouse.client(settings)
    try:
        c.execute(
            f"INSERT INTO {db}.campaigns (advertiser_id, campaign_id, cpc_micros, name) VALUES",
            [("adv1", "c1", 250_000, "Shoes")],
        )
        c.execute(
            f"INSERT INTO {db}.hot_clicks (window_start, campaign_id, ad_id, source, "
            "source_partition, clicks, version) VALUES",
            hot,
        )
        c.execute(
            f"INSERT INTO {db}.minute_aggregates_batch (hour, window_start, advertiser_id, "
            "campaign_id, ad_id, clicks, fraud_clicks, stream_too_late, reconciled_at, "
            "run_id) VALUES",
            batch,
        )
        hot_h = sum(r[5] for r in hot if r[0] < start + timedelta(hours=1))
        batch_h = sum(r[5] for r in batch)
        c.execute(
            f"INSERT INTO {db}.drift_report (hour, window_start, campaign_id, ad_id, "
            "hot_clicks, batch_clicks, stream_too_late, drift, rel_drift, unexplained, "
            "status, computed_at, run_id) VALUES",
            [
                (
                    start,
                    start,
                    "c1",
                    "a1",
                    hot_h,
                    batch_h,
                    0,
                    hot_h - batch_h,
                    0.0,
                    0,
                    "differs",
                    now,
                    "r",
                )
            ],
        )
        c.execute(
            f"INSERT INTO {db}.drift_hours (hour, hot_total, batch_total, stream_too_late, "
            "unexplained_abs, unexplained_rel, keys, keys_missing_in_hot, "
            "keys_missing_in_batch, keys_differing, passed, computed_at, run_id) VALUES",
            [(start, hot_h, batch_h, 0, hot_h - batch_h, 0.01, 60, 0, 0, 12, 0, now, "r")],
        )
    finally:
        c.disconnect()
    key, _ = KeyStore(lambda: clickhouse.client(settings), db).create("adv1")
    return key, total


@pytest.fixture
def api_server(settings, ch_database):
    key, total = _seed(settings, ch_database)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_http(f"http://127.0.0.1:{port}/healthz")
    yield f"http://127.0.0.1:{port}", key, total
    server.should_exit = True
    thread.join(timeout=10)


def test_dashboard_renders_live_and_reconciled_charts(api_server, tmp_path):
    from playwright.sync_api import sync_playwright

    base, key, _total = api_server
    chromium = shutil.which("chromium")
    assert chromium, "chromium missing: infra/bootstrap.sh installs Debian's chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/dashboard#key={key}")
            page.wait_for_selector("#chart-minutes path.series.hot", timeout=20_000)
            page.wait_for_selector("#chart-minutes path.series.exact", timeout=20_000)
            page.wait_for_selector("#chart-drift rect.bar", timeout=20_000)
            page.wait_for_function(
                "document.querySelector('#health').textContent.includes('last reconciled hour')",
                timeout=20_000,
            )
            hot_points = page.eval_on_selector(
                "#chart-minutes path.series.hot", "e => e.getAttribute('d').split('L').length"
            )
            exact_points = page.eval_on_selector(
                "#chart-minutes path.series.exact", "e => e.getAttribute('d').split('L').length"
            )
            selected = page.eval_on_selector("#campaign", "e => e.value")
            status = page.text_content("#status")
            artefacts = ROOT / ".local" / "artifacts"
            artefacts.mkdir(parents=True, exist_ok=True)
            shot = artefacts / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert selected == "c1" and status.startswith("updated")
    # 3 h window by minute: the hot line has a point per minute, the reconciled one per minute
    # of the reconciled hour only
    assert hot_points >= 170 and exact_points == 60
    assert Path(shot).stat().st_size > 20_000
