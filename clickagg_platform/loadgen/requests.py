"""Requests: render the schedule into the exact URLs and headers to send.

Every request carries the client click time `t` explicitly (non-late clicks: t = scheduled send
time minus `CLOCK_MARGIN_MS`; late clicks: t further in the past), so the event time the capture
service assigns, and with it the minute bucket of every click, is known exactly to the
generator; nothing depends on when a request happens to reach the server. Duplicates
(double-clicks and client retries) re-send the *identical* URL, so every copy of an event_id
carries the same event time whichever copy the pipeline keeps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from clickagg_platform.loadgen.catalog import Catalog
from clickagg_platform.loadgen.identity import identity
from clickagg_platform.loadgen.plan import MAX_LATENESS_S, LoadPlan
from clickagg_platform.loadgen.rules import (
    CLIENT_TIME_MAX_AHEAD_MS,
    CLOCK_MARGIN_MS,
    REASON_BOT_UA,
    REASON_IP_RATE,
    is_bot_user_agent,
)
from clickagg_platform.loadgen.schedule import (
    DUP_NAMES,
    KIND_BURST,
    KIND_NAMES,
    Schedule,
    plan_schedule,
)
from clickagg_platform.model import ClickEvent, event_id_for
from clickagg_platform.tokens import mint_token

DEFAULT_TOKEN_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One GET /c/{token}?t=... exactly as it will be sent, plus what the truth needs of it."""

    seq: int
    offset_ms: int  # scheduled send time relative to plan.start_ms
    scheduled_ms: int  # absolute scheduled send time (epoch ms)
    path: str  # "/c/<token>?t=<event_time_ms>"
    headers: dict[str, str]
    event_id: str
    impression_id: str
    advertiser_id: str
    campaign_id: str
    ad_id: str
    publisher_id: str
    event_time_ms: int  # == t; what the capture service must record as event_time
    issued_at_s: int  # token issued-at (<= event_time_ms / 1000)
    token_key_id: str
    ip: str
    user_agent: str
    user_id: str
    kind: str  # "normal" | "bot_ua" | "burst"
    fraud_reason: str | None  # None | "bot_ua" | "ip_rate"
    duplicate: str | None  # None (original) | "double_click" | "retry"
    lateness_ms: int  # planned: scheduled send time minus event time, beyond CLOCK_MARGIN_MS
    late_band: str | None

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.path


def _fraud_reason(kind: int, user_agent: str) -> str | None:
    if is_bot_user_agent(user_agent):
        return REASON_BOT_UA
    if kind == KIND_BURST:
        return REASON_IP_RATE
    return None


def generate_requests(
    plan: LoadPlan,
    catalog: Catalog,
    keyring: dict[str, bytes],
    key_id: str,
    *,
    ttl_s: int = DEFAULT_TOKEN_TTL_S,
    schedule: Schedule | None = None,
) -> Iterator[PlannedRequest]:
    """Yield every request in send order, minting tokens lazily (memory stays flat)."""
    if ttl_s <= MAX_LATENESS_S:
        raise ValueError(f"ttl_s must exceed the largest lateness ({MAX_LATENESS_S} s)")
    sched = schedule if schedule is not None else plan_schedule(plan, catalog)
    start_ms, run_id = plan.require_start_ms(), plan.effective_run_id
    for seq in range(len(sched.req_unique)):
        u = int(sched.req_unique[seq])
        yield _render(plan, catalog, sched, seq, u, start_ms, run_id, keyring, key_id, ttl_s)


def _render(
    plan: LoadPlan,
    catalog: Catalog,
    s: Schedule,
    seq: int,
    u: int,
    start_ms: int,
    run_id: str,
    keyring: dict[str, bytes],
    key_id: str,
    ttl_s: int,
) -> PlannedRequest:
    """Build one request; all copies of a unique click get byte-identical URLs and headers."""
    kind = int(s.kind[u])
    camp = catalog.campaigns[int(s.campaign[u])]
    ad = camp.ads[int(s.ad[u])]
    lateness = int(s.lateness_ms[u])
    event_time = start_ms + int(s.primary_offset_ms[u]) - lateness - CLOCK_MARGIN_MS
    issued_at = event_time // 1000 - int(s.issue_delay_s[u])
    impression_id = f"imp-{run_id}-{u:08d}"
    publisher = catalog.publishers[int(s.publisher[u])]
    token = mint_token(
        keyring,
        key_id,
        impression_id=impression_id,
        advertiser_id=camp.advertiser_id,
        campaign_id=camp.campaign_id,
        ad_id=ad.ad_id,
        landing_url=ad.landing_url,
        publisher_id=publisher,
        ttl_s=ttl_s,
        now=issued_at,
    )
    ip, ua, uid = identity(kind, int(s.user[u]), u)
    band = int(s.band[u])
    offset = int(s.req_offset_ms[seq])
    return PlannedRequest(
        seq=seq,
        offset_ms=offset,
        scheduled_ms=start_ms + offset,
        path=f"/c/{token}?t={event_time}",
        headers={"User-Agent": ua, "X-Forwarded-For": ip, "Cookie": f"ca_uid={uid}"},
        event_id=event_id_for(impression_id),
        impression_id=impression_id,
        advertiser_id=camp.advertiser_id,
        campaign_id=camp.campaign_id,
        ad_id=ad.ad_id,
        publisher_id=publisher,
        event_time_ms=event_time,
        issued_at_s=issued_at,
        token_key_id=key_id,
        ip=ip,
        user_agent=ua,
        user_id=uid,
        kind=KIND_NAMES[kind],
        fraud_reason=_fraud_reason(kind, ua),
        duplicate=DUP_NAMES[int(s.req_dup[seq])],
        lateness_ms=lateness,
        late_band=plan.lateness_mix[band].name if band >= 0 else None,
    )


def _digest(domain: str, value: str) -> str:
    return hashlib.sha256(f"{domain}:{value}".encode()).hexdigest()[:16]


def simulate_capture(req: PlannedRequest, received_at_ms: int) -> ClickEvent:
    """The `ClickEvent` the capture service would produce for `req` (Kafka target).

    Applies the capture's client-time rule (`capture.event_time_for`: t is honoured if
    issued_at*1000 <= t <= received_at + 5 s, capped at received_at). ip_hash/user_key are
    deterministic stand-ins, not the capture's salted hashes.
    """
    t = req.event_time_ms
    honoured = req.issued_at_s * 1000 <= t <= received_at_ms + CLIENT_TIME_MAX_AHEAD_MS
    return ClickEvent(
        event_id=req.event_id,
        impression_id=req.impression_id,
        advertiser_id=req.advertiser_id,
        campaign_id=req.campaign_id,
        ad_id=req.ad_id,
        publisher_id=req.publisher_id,
        event_time=min(t, received_at_ms) if honoured else received_at_ms,
        received_at=received_at_ms,
        ip_hash=_digest("ip", req.ip),
        user_agent=req.user_agent,
        user_key=_digest("user", req.user_id),
        token_key_id=req.token_key_id,
    )
