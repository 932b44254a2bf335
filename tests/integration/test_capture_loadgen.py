"""The seeded generator through the real HTTP endpoint: the topic holds exactly the clicks of
the ground-truth manifest (every delivered copy, right keys, right event times, nothing else)."""

from __future__ import annotations

import asyncio
from collections import Counter

import msgspec
import pytest

from clickagg_platform.loadgen import LoadPlan
from clickagg_platform.loadgen.run_http import run_http_load
from tests.helpers import capture_server, read_topic

pytestmark = pytest.mark.integration


def test_generated_traffic_lands_in_kafka_exactly_as_the_manifest_says(
    settings, kafka_topic, tmp_path
):
    plan = LoadPlan(
        seed=1234,
        rate=400,
        clicks=1500,
        duplicate_fraction=0.1,
        late_fraction=0.1,
        bot_fraction=0.05,
    )
    with capture_server(settings, tmp_path / "capture.log") as (base, _):
        result = asyncio.run(
            run_http_load(
                plan,
                base,
                concurrency=16,
                manifest_path=tmp_path / "manifest.json",
                settings=settings,
            )
        )
    rows = {r["event_id"]: r for r in result.event_rows()}
    delivered_copies = sum(r["copies_delivered"] for r in rows.values())
    assert result.manifest["totals"]["failed"] == 0
    assert delivered_copies == 1500

    records = read_topic(settings.bootstrap, kafka_topic, expected=delivered_copies)
    assert len(records) == delivered_copies  # none lost, none extra
    copies = Counter()
    for key, value, _, _ in records:
        event = msgspec.json.decode(value)
        assert key.decode() == event["event_id"]
        truth = rows[event["event_id"]]
        assert (event["campaign_id"], event["ad_id"], event["event_time"]) == (
            truth["campaign_id"],
            truth["ad_id"],
            truth["event_time"],
        )
        copies[event["event_id"]] += 1
    assert copies == {eid: r["copies_delivered"] for eid, r in rows.items()}
    # the plan really exercised duplicates, lateness and fraud-like traffic
    totals = result.manifest["totals"]
    assert totals["duplicates"] > 0 and totals["late"] > 0 and totals["fraud_like"] > 0
