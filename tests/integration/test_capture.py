"""Capture service against the real broker: every accepted click is in `clicks`, keyed right."""

from __future__ import annotations

import hashlib
import random

import httpx
import msgspec
import pytest

from clickagg_platform.partitioner import murmur2_partition
from clickagg_platform.settings import Settings
from clickagg_platform.tokens import mint_token
from tests.helpers import capture_server, read_topic

pytestmark = pytest.mark.integration


def expected_event_id(impression_id: str) -> str:
    # written out here, independently of clickagg_platform.model.event_id_for
    return hashlib.sha256(b"click:" + impression_id.encode()).hexdigest()[:32]


def make_links(settings: Settings, n: int, seed: int, key_id: str = "k2"):
    rng = random.Random(seed)
    links = []
    for i in range(n):
        adv = f"adv{rng.randrange(3)}"
        links.append(
            dict(
                impression_id=f"imp-{seed}-{i}",
                advertiser_id=adv,
                campaign_id=f"{adv}-c{rng.randrange(4)}",
                ad_id=f"ad{rng.randrange(5)}",
                landing_url=f"https://{adv}.example/landing?i={i}",
                publisher_id="pub1",
            )
        )
    keyring = settings.keyring()
    for link in links:
        link["token"] = mint_token(keyring, key_id, **{k: v for k, v in link.items()})
    return links


@pytest.mark.parametrize("client", ["loop", "librdkafka"])
def test_clicks_through_http_land_in_kafka_exactly(settings, kafka_topic, tmp_path, client):
    settings = settings.model_copy(update={"capture_producer": client})
    links = make_links(settings, 300, seed=7)
    rng = random.Random(8)
    # retries and double-clicks: a third of the links are clicked again
    sends = links + rng.sample(links, 100)
    rng.shuffle(sends)
    with capture_server(settings, tmp_path / "capture.log") as (base, _):
        with httpx.Client(base_url=base, timeout=10) as http:
            for link in sends:
                r = http.get(f"/c/{link['token']}")
                assert r.status_code == 302
                assert r.headers["location"] == link["landing_url"]
            assert http.get("/c/" + links[0]["token"][:-3] + "AAA").status_code == 400
    records = read_topic(settings.bootstrap, kafka_topic, expected=len(sends))
    assert len(records) == len(sends)  # none lost, nothing extra (the bad token made no event)
    by_id: dict[str, list] = {}
    for key, value, partition, _ in records:
        event = msgspec.json.decode(value)
        assert key.decode() == event["event_id"]
        # every client puts an id on the same partition (Kafka's murmur2 of the key, like the
        # Java client): the stream's per-partition dedup depends on it
        assert partition == murmur2_partition(key, settings.clicks_partitions)
        by_id.setdefault(event["event_id"], []).append(event)
    assert set(by_id) == {expected_event_id(link["impression_id"]) for link in links}
    for link in links:
        events = by_id[expected_event_id(link["impression_id"])]
        for e in events:
            assert (e["advertiser_id"], e["campaign_id"], e["ad_id"]) == (
                link["advertiser_id"],
                link["campaign_id"],
                link["ad_id"],
            )
            assert e["token_key_id"] == "k2" and e["received_at"] >= e["event_time"]
    assert sum(len(v) for v in by_id.values()) == 400


def test_old_key_links_still_count_during_rotation(settings, kafka_topic, tmp_path):
    links = make_links(settings, 20, seed=9, key_id="k1")  # minted before rotation
    with capture_server(settings, tmp_path / "capture.log") as (base, _):
        with httpx.Client(base_url=base, timeout=10) as http:
            assert all(http.get(f"/c/{lk['token']}").status_code == 302 for lk in links)
    records = read_topic(settings.bootstrap, kafka_topic, expected=20)
    assert {msgspec.json.decode(v)["token_key_id"] for _, v, _, _ in records} == {"k1"}


def test_client_click_time_is_honoured_only_inside_the_token_lifetime(
    settings, kafka_topic, tmp_path
):
    import time

    now_ms = int(time.time() * 1000)
    keyring = settings.keyring()
    common = dict(advertiser_id="a", campaign_id="c", ad_id="d", landing_url="https://a.example/")
    late = mint_token(keyring, "k2", impression_id="late", now=now_ms / 1000 - 3600, **common)
    forged = mint_token(keyring, "k2", impression_id="forged", now=now_ms / 1000 - 60, **common)
    with capture_server(settings, tmp_path / "capture.log") as (base, _):
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get(f"/c/{late}?t={now_ms - 1_800_000}").status_code == 302
            # before the link existed: the server's own receive time is used instead
            assert http.get(f"/c/{forged}?t={now_ms - 7_200_000}").status_code == 302
    events = {
        msgspec.json.decode(v)["impression_id"]: msgspec.json.decode(v)
        for _, v, _, _ in read_topic(settings.bootstrap, kafka_topic, expected=2)
    }
    assert events["late"]["event_time"] == now_ms - 1_800_000
    assert events["forged"]["event_time"] == events["forged"]["received_at"]
