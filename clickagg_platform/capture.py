"""The capture service: `GET /c/{token}` -> durable ClickEvent -> 302 to the landing URL.

A raw ASGI app (no framework on the hot path). A click is answered only after it is durable:
acked by Kafka (idempotent producer, acks=all) within `produce_timeout_ms`, or else appended to
the local fsync'd spool. While the spool holds records, new clicks go to the spool too, so the
drainer replays them to Kafka in arrival order; once it is empty, clicks go straight to Kafka.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import time
from urllib.parse import parse_qs

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

from clickagg_platform.durable import DurableSink
from clickagg_platform.loopmetrics import LoopCounter, LoopHistogram
from clickagg_platform.model import ClickEvent, encode_click, event_id_for
from clickagg_platform.settings import Settings, get_settings
from clickagg_platform.tokens import TokenError, TokenVerifier

log = logging.getLogger("clickagg.capture")
disable_created_metrics()

FUTURE_SKEW_MS = 5000
GC_GEN0_THRESHOLD = 50_000
_TEXT = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]


OUTCOMES = ("kafka", "spooled", "invalid", "expired", "not_found", "bad_method", "error")


class CaptureMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # per-click metrics are lock-free (updated only on the event loop), see loopmetrics.py
        self.requests = LoopCounter(
            "clickagg_capture_requests", "Click requests by outcome", "outcome", OUTCOMES, r
        )
        self.produce_latency = LoopHistogram(
            "clickagg_capture_produce_seconds",
            "Time from accept to durable (Kafka ack or spool fsync)",
            "path",
            ("kafka", "spool"),
            (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            r,
        )
        self.spooled = Counter("clickagg_capture_spooled", "Clicks spooled", registry=r)
        self.drained = Counter("clickagg_capture_drained", "Spooled clicks acked", registry=r)
        self.spool_depth = Gauge("clickagg_capture_spool_depth", "Clicks in the spool", registry=r)
        self.kafka_healthy = Gauge(
            "clickagg_capture_kafka_healthy", "1 if clicks go straight to Kafka", registry=r
        )
        self.producer_failures = Counter(
            "clickagg_capture_producer_failures",
            "Times the loop producer failed and reconnected (clicks it had not sent, or all in "
            "flight if the connection was lost, were spooled)",
            registry=r,
        )
        self._outcome = {o: self.requests.labels(o) for o in OUTCOMES}
        self.kafka_latency = self.produce_latency.labels("kafka")
        self.spool_latency = self.produce_latency.labels("spool")

    def outcome(self, name: str) -> None:
        self._outcome[name].inc()


class ClientInfo:
    """What the request tells about the client, hashed so no raw IP or id is stored."""

    __slots__ = ("ip_hash", "user_agent", "user_key", "client_time")

    def __init__(self, scope: dict, salt: bytes, trusted: frozenset[str]):
        peer = scope.get("client")
        ip = peer[0] if peer else ""
        ua = ""
        uid = ""
        forwarded = ""
        for name, value in scope.get("headers", ()):
            if name == b"user-agent":
                ua = value.decode("latin-1")[:512]
            elif name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
            elif name == b"cookie":
                uid = _cookie(value, b"ca_uid") or uid
        if forwarded and ip in trusted:
            ip = forwarded.split(",")[0].strip()[:64]
        self.ip_hash = _hash(salt, b"ip:" + ip.encode())
        self.user_agent = ua
        self.user_key = (
            _hash(salt, b"u:" + uid.encode())
            if uid
            else _hash(salt, b"ipua:" + ip.encode() + b"|" + ua.encode())
        )
        self.client_time = _client_time(scope.get("query_string", b""))


_KEYED: dict[bytes, hashlib.blake2b] = {}


def _hash(salt: bytes, data: bytes) -> str:
    # keyed BLAKE2b; the keyed initial state is computed once per salt and copied per use
    base = _KEYED.get(salt)
    if base is None:
        base = _KEYED[salt] = hashlib.blake2b(key=salt, digest_size=12)
    h = base.copy()
    h.update(data)
    return h.hexdigest()


def _cookie(header: bytes, name: bytes) -> str:
    for part in header.split(b";"):
        k, sep, v = part.strip().partition(b"=")
        if sep and k == name:
            return v.decode("latin-1")[:128]
    return ""


def _client_time(query: bytes) -> int | None:
    if not query or b"t=" not in query:
        return None
    values = parse_qs(query.decode("latin-1")).get("t")
    if not values:
        return None
    try:
        return int(values[0])
    except ValueError:
        return None


def event_time_for(client_time: int | None, issued_at_s: int, received_at: int) -> int:
    """Client-reported click time (an SDK replaying queued clicks) if plausible, else receipt.

    Plausible means not before the link was minted and not in the future: a forged `t` can move a
    click inside its own token's lifetime, never outside it, and never change how often it counts.
    """
    if (
        client_time is not None
        and issued_at_s * 1000 <= client_time <= received_at + FUTURE_SKEW_MS
    ):
        return min(client_time, received_at)
    return received_at


class CaptureApp:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.verifier = TokenVerifier(self.settings.keyring())
        self.salt = self.settings.hash_salt.encode()
        self.trusted = frozenset(p.strip() for p in self.settings.trusted_proxies.split(","))
        self.metrics = CaptureMetrics()
        self.sink: DurableSink | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/c/") and scope["method"] in ("GET", "HEAD"):
                await self.click(scope, send, path[3:])  # the hot path: one coroutine less
            else:
                await self.http(scope, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.sink = DurableSink(self.settings, self.metrics)
                    await self.sink.start()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    log.exception("capture startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                # a long-lived server with a steady allocation pattern: move the startup heap
                # out of the collector's sight and collect the young generation less often
                gc.collect()
                gc.freeze()
                gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.sink is not None:
                    await self.sink.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope, send):
        path: str = scope["path"]
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            self.metrics.outcome("bad_method")
            return await _plain(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
        if path == "/healthz":
            return await _plain(send, 200, b"ok\n")
        if path == "/readyz":
            return await self.ready(send)
        if path == "/metrics":
            if self.sink is not None:
                self.metrics.spool_depth.set(self.sink.spool_depth)
            body = generate_latest(self.metrics.registry)
            return await _plain(send, 200, body, ctype=b"text/plain; version=0.0.4")
        self.metrics.outcome("not_found")
        return await _plain(send, 404, b"not found\n")

    async def click(self, scope, send, token: str):
        received_at = int(time.time() * 1000)
        try:
            claims = self.verifier.verify(token, received_at / 1000)
        except TokenError as err:
            if err.reason == "expired":
                self.metrics.outcome("expired")
                return await _plain(send, 410, b"link expired\n")
            self.metrics.outcome("invalid")
            return await _plain(send, 400, b"invalid link\n")
        client = ClientInfo(scope, self.salt, self.trusted)
        event = ClickEvent(
            event_id=event_id_for(claims.impression_id),
            impression_id=claims.impression_id,
            advertiser_id=claims.advertiser_id,
            campaign_id=claims.campaign_id,
            ad_id=claims.ad_id,
            publisher_id=claims.publisher_id,
            event_time=event_time_for(client.client_time, claims.issued_at, received_at),
            received_at=received_at,
            ip_hash=client.ip_hash,
            user_agent=client.user_agent,
            user_key=client.user_key,
            token_key_id=claims.key_id,
        )
        assert self.sink is not None
        try:
            outcome = await self.sink.write(event.event_id.encode(), encode_click(event))
        except Exception:  # noqa: BLE001 - neither Kafka nor the spool took it: not durable
            log.exception("click not durable")
            self.metrics.outcome("error")
            return await _plain(send, 503, b"try again\n", [(b"retry-after", b"1")])
        self.metrics.outcome(outcome)
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [
                    (b"location", claims.landing_url.encode("ascii")),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def ready(self, send):
        sink = self.sink
        state = {
            "kafka_healthy": bool(sink and sink.kafka_healthy),
            "spool_depth": sink.spool_depth if sink else None,
            "spool_writable": bool(sink and sink.spool_writable()),
        }
        ok = state["kafka_healthy"] or state["spool_writable"]
        body = orjson.dumps(state) + b"\n"
        await _plain(send, 200 if ok else 503, body, ctype=b"application/json")


async def _plain(send, status: int, body: bytes, extra=(), ctype: bytes | None = None):
    headers = [(b"content-type", ctype)] + _TEXT[1:] if ctype else list(_TEXT)
    headers += [(b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app() -> CaptureApp:
    """uvicorn factory: `uvicorn --factory clickagg_platform.capture:create_app`."""
    return CaptureApp()
