"""Ground truth: the expected results of a run, from what was actually sent and acknowledged.

`GroundTruthBuilder` turns the `SentClick`s into the expected billable counts per (minute,
campaign, ad) and per (day, advertiser, campaign), plus one row per unique event_id.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from clickagg_platform.loadgen.catalog import Catalog
from clickagg_platform.loadgen.requests import PlannedRequest
from clickagg_platform.loadgen.rules import (
    LATE_THRESHOLD_MS,
    REASON_BOT_UA,
    REASON_IP_RATE,
    VERY_LATE_THRESHOLD_MS,
)


@dataclass(frozen=True, slots=True)
class SentClick:
    """What happened to one planned request (after all its transport retries)."""

    request: PlannedRequest
    delivered: bool  # HTTP: answered 302; Kafka: acked
    attempts: int  # 1 + transport retries
    sent_ms: int  # wall clock just before the last attempt (~ the server's received_at)
    status: int | None = None  # final HTTP status, None if never answered / Kafka
    error: str | None = None


class _EventState:
    """Per event_id: the attributes of its first copy (no token, no headers: ~0.5 KB/click)."""

    __slots__ = (
        "seq",
        "impression_id",
        "advertiser_id",
        "campaign_id",
        "ad_id",
        "publisher_id",
        "event_time_ms",
        "kind",
        "fraud_reason",
        "late_band",
        "ip",
        "user_agent",
        "user_id",
        "copies_sent",
        "copies_delivered",
        "attempts",
        "received_ms",
    )

    def __init__(self, req: PlannedRequest) -> None:
        self.copies_sent = self.copies_delivered = self.attempts = 0
        self.received_ms: int | None = None  # earliest delivered copy's send time
        self.take_attributes(req)

    def take_attributes(self, req: PlannedRequest) -> None:
        self.seq = req.seq
        self.impression_id = req.impression_id
        self.advertiser_id = req.advertiser_id
        self.campaign_id = req.campaign_id
        self.ad_id = req.ad_id
        self.publisher_id = req.publisher_id
        self.event_time_ms = req.event_time_ms
        self.kind = req.kind
        self.fraud_reason = req.fraud_reason
        self.late_band = req.late_band
        self.ip = req.ip
        self.user_agent = req.user_agent
        self.user_id = req.user_id


def minute_start(ms: int) -> int:
    return ms - ms % 60_000


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def utc_day(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d")


@dataclass
class GroundTruth:
    """Expected results of a run. `exact` is False if some event_id never got a 302/ack: such
    a click may or may not be in the log, so counts are then only a lower bound."""

    totals: dict
    per_minute: list[dict]
    per_day: list[dict]
    exact: bool


class GroundTruthBuilder:
    """Accumulates `SentClick`s in any order (completion order is not send order).

    Rules: an event_id counts once if at least one copy was delivered; its event time is the
    `t` all its copies carry; fraud-like clicks (and every copy of them) are never billable;
    late / very late compare the first delivered copy's send time with the event time.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._campaigns = catalog.by_id()
        self._events: dict[str, _EventState] = {}
        self._requests = 0
        self._attempts = 0
        self._delivered_requests = 0
        self._dup_sent: Counter[str] = Counter()

    def add(self, sent: SentClick) -> None:
        req = sent.request
        st = self._events.get(req.event_id)
        if st is None:
            st = self._events[req.event_id] = _EventState(req)
        elif req.seq < st.seq:
            st.take_attributes(req)
        st.copies_sent += 1
        st.attempts += sent.attempts
        self._requests += 1
        self._attempts += sent.attempts
        if req.duplicate is not None:
            self._dup_sent[req.duplicate] += 1
        if sent.delivered:
            st.copies_delivered += 1
            self._delivered_requests += 1
            if st.received_ms is None or sent.sent_ms < st.received_ms:
                st.received_ms = sent.sent_ms

    def build(self) -> GroundTruth:
        minute: dict[tuple[int, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        day: Counter[tuple[str, str, str]] = Counter()
        fraud: Counter[str] = Counter()
        late = very_late = billable = spend = undelivered = 0
        for st in self._events.values():
            if st.received_ms is None:
                undelivered += 1
                continue
            lag = st.received_ms - st.event_time_ms
            late += lag > LATE_THRESHOLD_MS
            very_late += lag > VERY_LATE_THRESHOLD_MS
            key = (minute_start(st.event_time_ms), st.advertiser_id, st.campaign_id, st.ad_id)
            if st.fraud_reason is not None:
                fraud[st.fraud_reason] += 1
                minute[key][1] += 1
                continue
            billable += 1
            spend += self._campaigns[st.campaign_id].cpc_micros
            minute[key][0] += 1
            day[(utc_day(st.event_time_ms), st.advertiser_id, st.campaign_id)] += 1
        unique_delivered = len(self._events) - undelivered
        totals = {
            "requests_sent": self._requests,
            "attempts": self._attempts,
            "transport_retries": self._attempts - self._requests,
            "delivered": self._delivered_requests,
            "failed": self._requests - self._delivered_requests,
            "unique_event_ids_sent": len(self._events),
            "unique_event_ids": unique_delivered,
            "undelivered_event_ids": undelivered,
            "duplicates": self._delivered_requests - unique_delivered,
            "duplicates_sent_by_kind": dict(sorted(self._dup_sent.items())),
            "late": late,
            "very_late": very_late,
            "fraud_like": sum(fraud.values()),
            "fraud_like_by_reason": {r: fraud.get(r, 0) for r in (REASON_BOT_UA, REASON_IP_RATE)},
            "billable": billable,
            "spend_micros": spend,
        }
        return GroundTruth(
            totals=totals,
            per_minute=self._minute_rows(minute),
            per_day=self._day_rows(day),
            exact=undelivered == 0,
        )

    def _minute_rows(self, minute: dict) -> list[dict]:
        rows = []
        for (m, adv, cmp, ad), (billable, fraud) in sorted(minute.items()):
            rows.append(
                {
                    "minute_ms": m,
                    "minute": iso_utc(m),
                    "advertiser_id": adv,
                    "campaign_id": cmp,
                    "ad_id": ad,
                    "billable": billable,
                    "fraud_like": fraud,
                    "spend_micros": billable * self._campaigns[cmp].cpc_micros,
                }
            )
        return rows

    def _day_rows(self, day: Counter) -> list[dict]:
        rows = []
        for (d, adv, cmp), billable in sorted(day.items()):
            cpc = self._campaigns[cmp].cpc_micros
            rows.append(
                {
                    "day": d,
                    "advertiser_id": adv,
                    "campaign_id": cmp,
                    "billable": billable,
                    "cpc_micros": cpc,
                    "spend_micros": billable * cpc,
                }
            )
        return rows

    def iter_event_rows(self) -> Iterator[dict]:
        """One row per unique event_id, in first-send order (streamed: runs can be large)."""
        for event_id, st in sorted(self._events.items(), key=lambda kv: kv[1].seq):
            yield {
                "event_id": event_id,
                "impression_id": st.impression_id,
                "advertiser_id": st.advertiser_id,
                "campaign_id": st.campaign_id,
                "ad_id": st.ad_id,
                "publisher_id": st.publisher_id,
                "event_time": st.event_time_ms,
                "received_ms": st.received_ms,
                "kind": st.kind,
                "fraud_reason": st.fraud_reason,
                "billable": st.received_ms is not None and st.fraud_reason is None,
                "delivered": st.received_ms is not None,
                "late_band": st.late_band,
                "copies_sent": st.copies_sent,
                "copies_delivered": st.copies_delivered,
                "attempts": st.attempts,
                "ip": st.ip,
                "user_agent": st.user_agent,
                "user_id": st.user_id,
            }


def build_ground_truth(catalog: Catalog, sent: Iterable[SentClick]) -> GroundTruth:
    builder = GroundTruthBuilder(catalog)
    for s in sent:
        builder.add(s)
    return builder.build()
