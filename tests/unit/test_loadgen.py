"""The seeded traffic generator and its ground truth (pure logic; one in-process HTTP run).

Expectations are recounted here independently (Counters over the generated requests), never
read back from the builder under test.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import typer
from typer.testing import CliRunner

from clickagg_platform import loadgen as lg
from clickagg_platform.capture import event_time_for
from clickagg_platform.cli_load import load
from clickagg_platform.loadgen.run_http import run_http_load
from clickagg_platform.model import event_id_for
from clickagg_platform.settings import Settings
from clickagg_platform.tokens import verify_token

KEYRING = {"k1": b"unit-test-key"}
START_MS = 1_790_000_037_123  # a fixed start, mid-minute
MINUTE = 60_000


def make_plan(**overrides) -> lg.LoadPlan:
    base = dict(
        seed=7,
        rate=500.0,
        clicks=6_000,
        start_ms=START_MS,
        duplicate_fraction=0.1,
        late_fraction=0.1,
        bot_fraction=0.05,
    )
    return lg.LoadPlan(**(base | overrides))


def generate(plan: lg.LoadPlan) -> list[lg.PlannedRequest]:
    catalog = lg.build_catalog(plan)
    return list(lg.generate_requests(plan, catalog, KEYRING, "k1"))


@pytest.fixture(scope="module")
def plan() -> lg.LoadPlan:
    return make_plan()


@pytest.fixture(scope="module")
def catalog(plan: lg.LoadPlan) -> lg.Catalog:
    return lg.build_catalog(plan)


@pytest.fixture(scope="module")
def requests(plan: lg.LoadPlan) -> list[lg.PlannedRequest]:
    return generate(plan)


def t_param(req: lg.PlannedRequest) -> int:
    return int(parse_qs(urlsplit(req.path).query)["t"][0])


def token_of(req: lg.PlannedRequest) -> str:
    return urlsplit(req.path).path.removeprefix("/c/")


def wire(req: lg.PlannedRequest) -> tuple:
    return (req.seq, req.scheduled_ms, req.path, tuple(sorted(req.headers.items())))


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_requests(requests):
    again = generate(make_plan())
    assert [wire(r) for r in again] == [wire(r) for r in requests]


def test_other_seed_or_start_gives_other_traffic(requests):
    other_seed = generate(make_plan(seed=8))
    other_start = generate(make_plan(start_ms=START_MS + 1000))
    assert [r.path for r in other_seed] != [r.path for r in requests]
    ids = {r.event_id for r in requests}
    assert ids.isdisjoint({r.event_id for r in other_start}), "a new run must get new event_ids"


def test_catalog_is_deterministic_and_well_formed(plan, catalog):
    assert lg.build_catalog(plan) == catalog
    assert len(catalog.campaigns) == plan.advertisers * plan.campaigns_per_advertiser
    assert sorted(c.zipf_rank for c in catalog.campaigns) == list(range(len(catalog.campaigns)))
    for c in catalog.campaigns:
        assert c.cpc_micros > 0 and len(c.ads) == plan.ads_per_campaign
        n = int(c.advertiser_id.split("-")[1])
        for ad in c.ads:
            assert ad.landing_url.startswith(f"https://advertiser-{n}.example/landing?c=")


# --------------------------------------------------------------------------- shape of traffic


def test_request_counts_add_up(plan, requests):
    assert len(requests) == plan.clicks
    assert [r.seq for r in requests] == list(range(plan.clicks))
    copies = sum(r.duplicate is not None for r in requests)
    assert copies == round(plan.clicks * plan.duplicate_fraction)
    assert len({r.event_id for r in requests}) == plan.clicks - copies
    assert all(
        a.scheduled_ms <= b.scheduled_ms for a, b in zip(requests, requests[1:], strict=False)
    )


def test_duplicates_resend_the_identical_request_after_the_original(requests):
    by_event: dict[str, list[lg.PlannedRequest]] = defaultdict(list)
    for r in requests:
        by_event[r.event_id].append(r)
    dup_kinds = Counter()
    for copies in by_event.values():
        first, rest = copies[0], copies[1:]
        assert first.duplicate is None
        assert first.event_id == event_id_for(first.impression_id)
        for copy in rest:
            dup_kinds[copy.duplicate] += 1
            assert (copy.path, copy.headers) == (first.path, first.headers)
            assert copy.scheduled_ms > first.scheduled_ms
    assert dup_kinds["double_click"] > 0 and dup_kinds["retry"] > 0


def test_every_request_has_t_equal_to_its_event_time_and_a_valid_token(requests):
    for r in requests:
        t = t_param(r)
        assert t == r.event_time_ms
        claims = verify_token(token_of(r), KEYRING, now=r.scheduled_ms / 1000)
        assert (claims.campaign_id, claims.ad_id) == (r.campaign_id, r.ad_id)
        assert claims.issued_at * 1000 <= t <= r.scheduled_ms - lg.CLOCK_MARGIN_MS
        # sent no earlier than scheduled, the capture keeps t verbatim
        assert event_time_for(t, claims.issued_at, r.scheduled_ms) == t


def test_late_clicks_carry_a_past_t(plan, requests):
    bands = {b.name: b for b in plan.lateness_mix}
    seen = Counter()
    for r in requests:
        behind = r.scheduled_ms - t_param(r) - lg.CLOCK_MARGIN_MS
        if r.late_band is None:
            assert behind == 0 if r.duplicate is None else behind > 0
            continue
        if r.duplicate is None:
            band = bands[r.late_band]
            assert band.min_s * 1000 <= behind <= band.max_s * 1000
            seen[r.late_band] += 1
    assert set(seen) == set(bands), f"every lateness band should occur, got {seen}"
    very_late = [r for r in requests if r.late_band == "very_late"]
    assert all(r.scheduled_ms - r.event_time_ms > lg.VERY_LATE_THRESHOLD_MS for r in very_late)


def test_bot_user_agents_are_flagged_and_browsers_are_not(requests):
    assert all(lg.is_bot_user_agent(ua) for ua in lg.BOT_USER_AGENTS)
    assert not any(lg.is_bot_user_agent(ua) for ua in lg.NORMAL_USER_AGENTS)
    for r in requests:
        assert r.headers["User-Agent"] == r.user_agent
        assert (r.fraud_reason == "bot_ua") == lg.is_bot_user_agent(r.user_agent)
    assert any(r.fraud_reason == "bot_ua" for r in requests)


def test_burst_ips_send_only_bursts_above_threshold_and_others_stay_below(plan, requests):
    per_ip_minute = Counter((r.ip, r.event_time_ms // MINUTE) for r in requests)
    kinds_per_ip = defaultdict(set)
    for r in requests:
        kinds_per_ip[r.ip].add(r.kind)
        assert r.headers["X-Forwarded-For"] == r.ip
        assert (r.fraud_reason == "ip_rate") == (r.kind == "burst")
    burst_ips = {ip for ip, kinds in kinds_per_ip.items() if "burst" in kinds}
    assert burst_ips and all(kinds_per_ip[ip] == {"burst"} for ip in burst_ips)
    assert all(ip.startswith(("198.18.", "198.19.")) for ip in burst_ips)
    for (ip, _), n in per_ip_minute.items():
        if ip in burst_ips:
            assert n > lg.IP_RATE_THRESHOLD
        else:
            assert n <= lg.IP_RATE_THRESHOLD
    checks = lg.schedule_checks(plan, lg.plan_schedule(plan, lg.build_catalog(plan)))
    assert checks["fraud_rules_unambiguous"]
    assert checks["burst_ips"] == len(burst_ips)
    normal = [n for (ip, _), n in per_ip_minute.items() if ip not in burst_ips]
    assert checks["max_clicks_per_ip_minute_non_burst"] == max(normal)


def test_small_runs_turn_partial_bursts_into_bot_ua_clicks():
    reqs = generate(make_plan(clicks=200, bot_fraction=0.1))
    assert not any(r.kind == "burst" for r in reqs)
    assert sum(r.fraud_reason == "bot_ua" and r.duplicate is None for r in reqs) == round(
        (200 - 20) * 0.1
    )


def test_zipf_makes_the_hot_campaign_the_largest(catalog, requests):
    organic = Counter(r.campaign_id for r in requests if r.kind != "burst")
    top, top_n = organic.most_common(1)[0]
    assert top == catalog.hot_campaign().campaign_id
    assert top_n > 2 * organic.most_common(2)[1][1]
    flat = Counter(r.campaign_id for r in generate(make_plan(zipf_s=0.0)) if r.kind != "burst")
    assert max(flat.values()) < 1.5 * min(flat.values())


# --------------------------------------------------------------------------- ground truth


def outcomes(requests: list[lg.PlannedRequest], seed: int = 3) -> list[lg.SentClick]:
    """Deliver most requests; fail ~3% (incl. some originals whose copy then succeeds)."""
    rnd = random.Random(seed)
    sent = []
    for r in requests:
        ok = rnd.random() > 0.03
        attempts = 1 if ok and rnd.random() > 0.05 else rnd.randint(2, 4)
        sent.append(lg.SentClick(r, ok, attempts, r.scheduled_ms + rnd.randint(0, 30)))
    return sent


def recount(catalog: lg.Catalog, sent: list[lg.SentClick]) -> dict:
    """The expected truth, computed the simple way."""
    cpc = {c.campaign_id: c.cpc_micros for c in catalog.campaigns}
    delivered = {s.request.event_id for s in sent if s.delivered}
    first = {}
    first_received = {}
    for s in sorted(sent, key=lambda s: s.request.seq):
        first.setdefault(s.request.event_id, s.request)
        if s.delivered:
            first_received.setdefault(s.request.event_id, s.sent_ms)
    billable = [first[e] for e in delivered if first[e].fraud_reason is None]
    per_minute = Counter(
        ((r.event_time_ms // MINUTE) * MINUTE, r.campaign_id, r.ad_id) for r in billable
    )
    day = Counter(
        (datetime.fromtimestamp(r.event_time_ms / 1000, UTC).date().isoformat(), r.campaign_id)
        for r in billable
    )
    lag = {e: first_received[e] - first[e].event_time_ms for e in delivered}
    return {
        "per_minute": per_minute,
        "per_day": day,
        "spend": sum(cpc[r.campaign_id] for r in billable),
        "unique": len(delivered),
        "duplicates": sum(s.delivered for s in sent) - len(delivered),
        "fraud": Counter(first[e].fraud_reason for e in delivered if first[e].fraud_reason),
        "late": sum(v > 60_000 for v in lag.values()),
        "very_late": sum(v > 600_000 for v in lag.values()),
        "retries": sum(s.attempts - 1 for s in sent),
        "undelivered": len(first) - len(delivered),
    }


def test_ground_truth_matches_an_independent_recount(catalog, requests):
    sent = outcomes(requests)
    expected = recount(catalog, sent)
    truth = lg.build_ground_truth(catalog, sent)
    got_minute = Counter(
        {(r["minute_ms"], r["campaign_id"], r["ad_id"]): r["billable"] for r in truth.per_minute}
    )
    assert +got_minute == expected["per_minute"]
    got_day = {(r["day"], r["campaign_id"]): r["billable"] for r in truth.per_day}
    assert got_day == dict(expected["per_day"])
    assert all(r["spend_micros"] == r["billable"] * r["cpc_micros"] for r in truth.per_day)
    t = truth.totals
    assert t["requests_sent"] == len(requests)
    assert t["billable"] == sum(expected["per_minute"].values())
    assert t["spend_micros"] == expected["spend"]
    assert t["unique_event_ids"] == expected["unique"]
    assert t["duplicates"] == expected["duplicates"]
    assert t["fraud_like_by_reason"] == {
        "bot_ua": expected["fraud"]["bot_ua"],
        "ip_rate": expected["fraud"]["ip_rate"],
    }
    assert (t["late"], t["very_late"]) == (expected["late"], expected["very_late"])
    assert t["transport_retries"] == expected["retries"]
    assert t["undelivered_event_ids"] == expected["undelivered"] > 0
    assert truth.exact is False


def test_ground_truth_ignores_completion_order_and_counts_fraud_duplicates_never(catalog, requests):
    sent = [lg.SentClick(r, True, 1, r.scheduled_ms) for r in requests]
    shuffled = sent[:]
    random.Random(1).shuffle(shuffled)
    a, b = lg.build_ground_truth(catalog, sent), lg.build_ground_truth(catalog, shuffled)
    assert (a.totals, a.per_minute, a.per_day) == (b.totals, b.per_minute, b.per_day)
    assert a.exact
    fraud_ids = {r.event_id for r in requests if r.fraud_reason}
    assert any(r.duplicate and r.event_id in fraud_ids for r in requests)
    assert a.totals["billable"] == len({r.event_id for r in requests} - fraud_ids)


def test_event_rows_list_every_event_id_once(catalog, requests):
    builder = lg.GroundTruthBuilder(catalog)
    for s in outcomes(requests):
        builder.add(s)
    rows = list(builder.iter_event_rows())
    assert [r["event_id"] for r in rows] == list(dict.fromkeys(r.event_id for r in requests))
    assert sum(r["billable"] for r in rows) == builder.build().totals["billable"]


def test_simulate_capture_applies_the_client_time_rule(requests):
    late = next(r for r in requests if r.late_band == "very_late")
    event = lg.simulate_capture(late, late.scheduled_ms + 5)
    assert (event.event_id, event.event_time) == (late.event_id, late.event_time_ms)
    assert event.received_at == late.scheduled_ms + 5
    too_early = lg.simulate_capture(late, late.issued_at_s * 1000 - 10_000)
    assert too_early.event_time == too_early.received_at


def test_manifest_is_stable_json_with_the_fraud_rules(plan, catalog, requests):
    truth = lg.build_ground_truth(catalog, [lg.SentClick(r, True, 1, 0) for r in requests])
    schedule = lg.plan_schedule(plan, catalog)

    def doc() -> str:
        manifest = lg.build_manifest(
            plan,
            catalog,
            truth,
            target="http",
            endpoint="http://x",
            run={},
            planned=lg.planned_counts(plan, schedule),
            checks=lg.schedule_checks(plan, schedule),
            events_file="events.jsonl",
        )
        return json.dumps(manifest, sort_keys=True)

    text = doc()
    assert text == doc()
    manifest = json.loads(text)
    assert manifest["fraud_rules"]["bot_ua_markers"] == list(lg.BOT_UA_MARKERS)
    assert manifest["fraud_rules"]["ip_rate_threshold"] == lg.IP_RATE_THRESHOLD
    assert manifest["plan"]["run_id"] == plan.effective_run_id
    assert manifest["planned"]["requests"] == plan.clicks


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rate": -1.0}, "rate must be a positive"),
        ({"rate": float("nan")}, "rate must be a positive"),
        ({"clicks": 0}, "clicks must be between"),
        ({"clicks": None, "duration_s": 0.0}, "duration must be a positive"),
        ({"duplicate_fraction": 0.95}, "duplicate_fraction must be between 0 and 0.9"),
        ({"late_fraction": -0.1}, "late_fraction must be between"),
        ({"bot_fraction": 1.5}, "bot_fraction must be between"),
        ({"advertisers": 0}, "advertisers must be an integer"),
        ({"zipf_s": -1.0}, "zipf_s must be >= 0"),
        ({"run_id": "has space"}, "run_id must be"),
        ({"lateness_mix": (lg.LatenessBand("x", 1.0, 10.0, 5.0),)}, "need 0 < min_s <= max_s"),
        ({"start_ms": 1234}, "start_ms must be an epoch time"),
    ],
)
def test_bad_plans_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_plan(**overrides)


def test_plan_without_start_must_be_resolved():
    plan = make_plan(start_ms=None)
    with pytest.raises(ValueError, match="start_ms is not set"):
        lg.plan_schedule(plan, lg.build_catalog(plan))
    assert plan.resolved(START_MS).start_ms == START_MS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "-5"], "rate must be a positive"),
        (["--clicks", "0"], "clicks must be between"),
        (["--concurrency", "0"], "concurrency must be positive"),
        (["--bot-fraction", "2"], "bot_fraction must be between"),
    ],
)
def test_cli_rejects_bad_options_before_sending(args, message):
    app = typer.Typer()
    app.command("load")(load)
    app.command("other")(lambda: None)  # keep `load` a named subcommand
    result = CliRunner().invoke(app, ["load", *args])
    assert result.exit_code == 2
    assert message in result.output


# --------------------------------------------------------------------------- in-process HTTP


class FakeCapture:
    """A minimal ASGI capture: verifies the token, applies the real `event_time_for` rule,
    answers 503 to the first try of every 7th distinct URL (the generator must retry it)."""

    def __init__(self, keyring: dict[str, bytes]):
        self.keyring = keyring
        self.events: list[dict] = []
        self.tries: Counter[str] = Counter()

    async def __call__(self, scope, receive, send):
        import time

        received = int(time.time() * 1000)
        url = scope["path"] + "?" + scope["query_string"].decode()
        self.tries[url] += 1
        status, headers = 302, [(b"location", b"https://example.invalid/")]
        if len(self.tries) % 7 == 0 and self.tries[url] == 1:
            status, headers = 503, []
        else:
            claims = verify_token(scope["path"].removeprefix("/c/"), self.keyring)
            t = int(parse_qs(scope["query_string"].decode())["t"][0])
            h = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            self.events.append(
                {
                    "event_id": event_id_for(claims.impression_id),
                    "campaign_id": claims.campaign_id,
                    "ad_id": claims.ad_id,
                    "event_time": event_time_for(t, claims.issued_at, received),
                    "ip": h["x-forwarded-for"],
                    "ua": h["user-agent"],
                }
            )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


async def test_http_run_matches_what_the_server_received(tmp_path):
    import httpx

    settings = Settings(signing_keys="k1:unit-test-key", local_dir=tmp_path)
    server = FakeCapture(settings.keyring())
    plan = lg.LoadPlan(seed=11, rate=4000.0, clicks=400, bot_fraction=0.35, run_id="unit1")
    manifest_path = tmp_path / "manifest.json"
    result = await run_http_load(
        plan,
        "http://capture.test",
        concurrency=16,
        manifest_path=manifest_path,
        settings=settings,
        transport=httpx.ASGITransport(app=server),
    )
    assert result.truth.exact and result.stats.retries > 0
    # the server's view, recounted: dedup by event_id, drop bot UAs and burst IPs
    burst_ips = {ip for ip, n in Counter(e["ip"] for e in server.events).items() if n > 20}
    assert burst_ips
    first = {}
    for e in server.events:
        first.setdefault(e["event_id"], e)
    billable = Counter(
        (e["event_time"] // MINUTE * MINUTE, e["campaign_id"], e["ad_id"])
        for e in first.values()
        if not lg.is_bot_user_agent(e["ua"]) and e["ip"] not in burst_ips
    )
    manifest = json.loads(manifest_path.read_text())
    rows = Counter(
        {
            (r["minute_ms"], r["campaign_id"], r["ad_id"]): r["billable"]
            for r in manifest["per_minute"]
        }
    )
    assert +rows == billable
    assert manifest["totals"]["attempts"] == sum(server.tries.values())
    assert manifest["totals"]["requests_sent"] == plan.clicks
    assert manifest["totals"]["duplicates"] == len(server.events) - len(first)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {e["event_id"] for e in events} == set(first)
    assert {e["event_id"]: e["event_time"] for e in events} == {
        k: v["event_time"] for k, v in first.items()
    }
    assert replace(plan, start_ms=result.plan.start_ms) == result.plan
