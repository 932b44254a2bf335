"""The query API (FastAPI; OpenAPI at /docs and /openapi.json).

Every request carries an advertiser API key (`Authorization: Bearer ck_...` or `X-API-Key`).
An advertiser only ever sees its own campaigns: a campaign of another advertiser and a campaign
that does not exist get the same 404. ClickHouse is read with the read-only user.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Response
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field

from clickagg_platform.api import queries as q
from clickagg_platform.api.cache import TtlCache
from clickagg_platform.api.health import platform_health
from clickagg_platform.api.keys import CACHE_TTL_S, ApiKey, KeyStore
from clickagg_platform.api.queries import ClickHouseReader, naive_utc, utc
from clickagg_platform.api.series import (
    Accuracy,
    Granularity,
    RangeError,
    TimeRange,
    bucket_is_reconciled,
    ceil,
    make_range,
    merge_auto,
    zero_fill,
)
from clickagg_platform.settings import Settings, get_settings

NOT_FOUND = {"detail": "campaign not found"}
STATIC = Path(__file__).parent / "static"


class PointOut(BaseModel):
    t: datetime = Field(description="Bucket start (UTC)")
    clicks: int
    source: str = Field(description="'hot' (stream, seconds fresh) or 'reconciled' (batch)")


class SeriesOut(BaseModel):
    campaign_id: str
    ad_id: str | None
    granularity: Granularity
    accuracy: Accuracy
    start: datetime
    end: datetime
    total: int
    points: list[PointOut]


class CampaignOut(BaseModel):
    campaign_id: str
    name: str
    cpc_micros: int


class DriftHourOut(BaseModel):
    hour: datetime
    hot_clicks: int
    batch_clicks: int
    stream_too_late: int = Field(description="Clicks the stream left to the batch (too late)")
    drift: int = Field(description="hot - batch")
    relative_drift: float = Field(description="(hot - batch) / batch (0 when both are 0)")


class DriftOut(BaseModel):
    campaign_id: str
    hours: list[DriftHourOut]


class TotalOut(BaseModel):
    campaign_id: str
    ad_id: str | None = None
    clicks: int


class SummaryOut(BaseModel):
    advertiser_id: str
    accuracy: Accuracy
    start: datetime
    end: datetime
    total: int
    sources: list[str] = Field(description="Sources used: hot and/or reconciled")
    campaigns: list[TotalOut]
    top_ads: list[TotalOut]


class BillingLineOut(BaseModel):
    day: date
    campaign_id: str
    billable_clicks: int
    cpc_micros: int
    spend_micros: int
    in_catalog: bool


class AdjustmentOut(BaseModel):
    billed_day: date = Field(description="The closed day the late clicks belong to")
    campaign_id: str
    delta_clicks: int
    delta_spend_micros: int
    invoice_day: date = Field(description="The statement day the adjustment is issued on")
    detected_at: datetime


class StatementOut(BaseModel):
    advertiser_id: str
    start: date
    end: date
    lines: list[BillingLineOut]
    adjustments: list[AdjustmentOut]
    billed_spend_micros: int
    adjustment_spend_micros: int
    total_spend_micros: int


class HealthOut(BaseModel):
    consumer_lag: int | None
    watermark_lag_s: float | None
    spool_depth: int | None
    captures_up: int
    stream_workers_up: int
    last_reconciled_hour: datetime | None
    max_relative_drift_24h: float | None


class Api:
    """Wiring: settings, ClickHouse reader (read-only user), key store, metrics."""

    def __init__(self, settings: Settings):
        from clickagg_platform import clickhouse

        self.settings = settings
        self.db = settings.clickhouse_database

        def factory():
            return clickhouse.client(
                settings,
                user=settings.api_clickhouse_user,
                password=settings.api_clickhouse_password,
            )

        self.reader = ClickHouseReader(factory)  # a pool of connections
        # statements of one request that may run at once (see series)
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="clickagg-ch")
        self.keys = KeyStore(factory, self.db)
        self._owners = TtlCache(CACHE_TTL_S)  # campaign -> advertiser
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "clickagg_api_requests", "API requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "clickagg_api_request_seconds",
            "API latency",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )

        self.registry.register(BatchCollector(self))

    def owner_check(self, key: ApiKey, campaign_id: str) -> None:
        """404 unless the caller's advertiser owns the campaign. Owners are cached as briefly as
        keys are (a campaign moved to another advertiser is seen within CACHE_TTL_S)."""
        if self._owners.get(campaign_id, self._owner) != key.advertiser_id:
            raise HTTPException(404, NOT_FOUND["detail"])

    def _owner(self, campaign_id: str) -> str | None:
        rows = self.reader.execute(q.campaign_owner_sql(self.db), {"campaign_id": campaign_id})
        return rows[0][0] if rows else None

    def reconciled_hours(self, rng: TimeRange) -> set[datetime]:
        first, end = rng.hours[0], ceil(rng.end, Granularity.hour)
        sql, params = q.reconciled_hours_statement(self.db, first, end)
        return q.reconciled_hours_of(self.reader.execute(sql, params), first, end)

    def series(self, rng: TimeRange, accuracy: Accuracy, campaign_id: str, ad_id: str | None):
        params = {
            "campaign_id": campaign_id,
            "ad_id": ad_id,
            "start": naive_utc(rng.start),
            "start_hour": naive_utc(rng.hours[0]),
            "end": naive_utc(rng.end),
        }
        g, ad = rng.granularity, ad_id is not None

        def fetch(sql: str, params: dict) -> dict[datetime, int]:
            return {utc(t): int(n) for t, n in self.reader.execute(sql, params)}

        hot_sql = q.hot_series_sql(self.db, g, ad=ad)
        exact_sql = q.exact_series_sql(self.db, g, ad=ad)
        if accuracy is Accuracy.fast:
            return zero_fill(rng, fetch(hot_sql, params), "hot")
        if accuracy is Accuracy.exact:
            return zero_fill(rng, fetch(exact_sql, params), "reconciled")
        # auto: the reconciled series and the set of reconciled hours do not depend on each
        # other, so they run at once (own connections); the hot tail needs the hours
        exact_future = self.pool.submit(fetch, exact_sql, params)
        done = self.reconciled_hours(rng)
        pending = [b for b in rng.buckets if not bucket_is_reconciled(b, g, done)]
        hot: dict[datetime, int] = {}
        step = timedelta(seconds=g.seconds)
        for first, last in spans(pending, step):  # hot rows only where batch has not settled
            span = {**params, "start": naive_utc(first), "end": naive_utc(last + step)}
            hot |= fetch(hot_sql, span)
        return merge_auto(rng, hot, exact_future.result(), done)

    def batch_health(self) -> tuple[datetime | None, float | None]:
        rows = self.reader.execute(q.batch_health_sql(self.db))
        last, drift, recent = rows[0] if rows else (None, None, 0)
        if last is None or last.year < 1971:  # max() over no rows gives the epoch
            return None, None
        return utc(last), (float(drift) if recent else None)


def spans(buckets: list[datetime], step: timedelta) -> list[tuple[datetime, datetime]]:
    """Runs of consecutive buckets as (first, last) pairs."""
    out: list[tuple[datetime, datetime]] = []
    for b in buckets:
        if out and out[-1][1] + step == b:
            out[-1] = (out[-1][0], b)
        else:
            out.append((b, b))
    return out


class BatchCollector:
    """Gauges computed from ClickHouse at scrape time: the batch path has no daemon of its own
    that could export them (alerts: drift above threshold, reconciliation overdue)."""

    def __init__(self, api: "Api"):
        self.api = api

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        try:
            last, drift = self.api.batch_health()
        except Exception:  # noqa: BLE001 - ClickHouse down: export nothing rather than fail
            return
        if last is not None:
            yield GaugeMetricFamily(
                "clickagg_last_reconciled_hour_seconds",
                "Start of the latest reconciled hour (epoch seconds)",
                value=last.timestamp(),
            )
        if drift is not None:
            yield GaugeMetricFamily(
                "clickagg_drift_max_relative",
                "Largest unexplained relative hot-vs-batch drift of an hour in the last 24 h",
                value=drift,
            )


class MeasureMiddleware:
    """Latency and status per route, as a plain ASGI middleware. (Starlette's
    `BaseHTTPMiddleware` re-streams every response through a memory channel: slower, and it
    raised "Response content shorter than Content-Length" when a browser dropped a file
    response mid-way.)"""

    def __init__(self, app, api: Api):
        self.app, self.api = app, api

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # what the server answers if the app raises before starting a response

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            name = getattr(scope.get("route"), "path", "unmatched")  # set by the router
            self.api.latency.labels(name).observe(time.perf_counter() - start)
            self.api.requests.labels(name, str(status)).inc()


def create_app(settings: Settings | None = None) -> FastAPI:
    api = Api(settings or get_settings())
    app = FastAPI(
        title="ClickAgg query API",
        version="1",
        description="Clicks per campaign and ad (fast from the stream, exact once reconciled), "
        "advertiser totals and billing statements. Authenticate with an advertiser API key.",
    )
    app.state.api = api

    app.add_middleware(MeasureMiddleware, api=api)

    @app.exception_handler(RangeError)
    async def range_error(_request, exc: RangeError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def advertiser(
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> ApiKey:
        presented = x_api_key or ""
        if authorization and authorization.lower().startswith("bearer "):
            presented = authorization[7:].strip()
        key = api.keys.verify(presented) if presented else None
        if key is None:
            raise HTTPException(
                401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"}
            )
        return key

    Key = Annotated[ApiKey, Depends(advertiser)]

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(api.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/campaigns", response_model=list[CampaignOut], tags=["campaigns"])
    def campaigns(key: Key) -> list[CampaignOut]:
        """The caller's campaigns."""
        rows = api.reader.execute(
            q.advertiser_campaigns_sql(api.db), {"advertiser_id": key.advertiser_id}
        )
        return [CampaignOut(campaign_id=c, name=n, cpc_micros=cpc) for c, n, cpc in rows]

    @app.get(
        "/v1/campaigns/{campaign_id}/clicks",
        response_model=SeriesOut,
        tags=["campaigns"],
        responses={400: {"description": "range too large or invalid"}, 404: {}},
    )
    def campaign_clicks(
        key: Key,
        campaign_id: str,
        start: Annotated[datetime, Query(alias="from", description="Range start (UTC)")],
        end: Annotated[datetime, Query(alias="to", description="Range end, exclusive")],
        granularity: Granularity = Granularity.minute,
        accuracy: Accuracy = Accuracy.auto,
        ad_id: str | None = None,
    ) -> SeriesOut:
        """Clicks of one campaign (or one of its ads) per minute, hour or day, zero-filled.

        `fast` reads the stream's hot table, `exact` the reconciled batch tables, `auto` exact
        for reconciled hours and hot elsewhere; every point names its source.
        """
        rng = make_range(start, end, granularity)
        api.owner_check(key, campaign_id)
        points = api.series(rng, accuracy, campaign_id, ad_id)
        # up to 10,000 points: serialised straight with orjson (the shape is SeriesOut, as
        # documented), skipping a pydantic object per point
        body = {
            "campaign_id": campaign_id,
            "ad_id": ad_id,
            "granularity": granularity.value,
            "accuracy": accuracy.value,
            "start": rng.start,
            "end": rng.end,
            "total": sum(p.clicks for p in points),
            "points": [{"t": p.t, "clicks": p.clicks, "source": p.source} for p in points],
        }
        return Response(orjson.dumps(body, option=orjson.OPT_UTC_Z), media_type="application/json")

    @app.get(
        "/v1/campaigns/{campaign_id}/drift",
        response_model=DriftOut,
        tags=["campaigns"],
        responses={404: {}},
    )
    def campaign_drift(
        key: Key,
        campaign_id: str,
        start: Annotated[datetime, Query(alias="from")],
        end: Annotated[datetime, Query(alias="to")],
    ) -> DriftOut:
        """Hot vs reconciled clicks of one campaign per reconciled hour."""
        rng = make_range(start, end, Granularity.hour)
        api.owner_check(key, campaign_id)
        params = {
            "campaign_id": campaign_id,
            "start": naive_utc(rng.start),
            "end": naive_utc(rng.end),
        }
        hours = []
        for h, hot, batch, late in api.reader.execute(q.campaign_drift_sql(api.db), params):
            d = int(hot) - int(batch)
            rel = d / batch if batch else (0.0 if d == 0 else 1.0)
            hours.append(
                DriftHourOut(
                    hour=utc(h),
                    hot_clicks=hot,
                    batch_clicks=batch,
                    stream_too_late=late,
                    drift=d,
                    relative_drift=rel,
                )
            )
        return DriftOut(campaign_id=campaign_id, hours=hours)

    @app.get("/v1/summary", response_model=SummaryOut, tags=["advertiser"])
    def summary(
        key: Key,
        start: Annotated[datetime, Query(alias="from")],
        end: Annotated[datetime, Query(alias="to")],
        accuracy: Accuracy = Accuracy.auto,
        top: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> SummaryOut:
        """Totals per campaign and the top ads of the caller over a range (hour-aligned)."""
        rng = make_range(start, end, Granularity.hour)
        params = {
            "advertiser_id": key.advertiser_id,
            "start": naive_utc(rng.start),
            "start_hour": naive_utc(rng.start),
            "end": naive_utc(rng.end),
        }

        def fetch(source: str) -> dict:
            rows = api.reader.execute(q.advertiser_totals_sql(api.db, source), params)
            return {(utc(t), c, a): int(n) for t, c, a, n in rows}

        if accuracy is Accuracy.fast:
            cells, sources = fetch("hot"), {"hot"}
        elif accuracy is Accuracy.exact:
            cells, sources = fetch("batch"), {"reconciled"}
        else:
            done = api.reconciled_hours(rng)
            exact = fetch("batch")
            pending = [h for h in rng.hours if h not in done]
            hot = {}
            if pending:  # hot rows only where the batch has not settled the hour
                params.update(start=naive_utc(pending[0]))
                hot = fetch("hot")
            cells = {k: v for k, v in exact.items() if k[0] in done}
            cells |= {k: v for k, v in hot.items() if k[0] not in done}
            sources = {"reconciled" if h in done else "hot" for h in rng.hours}
        by_campaign: dict[str, int] = {}
        by_ad: dict[tuple[str, str], int] = {}
        for (_, c, a), n in cells.items():
            by_campaign[c] = by_campaign.get(c, 0) + n
            by_ad[(c, a)] = by_ad.get((c, a), 0) + n
        ads = sorted(by_ad.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return SummaryOut(
            advertiser_id=key.advertiser_id,
            accuracy=accuracy,
            start=rng.start,
            end=rng.end,
            total=sum(by_campaign.values()),
            sources=sorted(sources),
            campaigns=[
                TotalOut(campaign_id=c, clicks=n)
                for c, n in sorted(by_campaign.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            top_ads=[TotalOut(campaign_id=c, ad_id=a, clicks=n) for (c, a), n in ads],
        )

    @app.get("/v1/billing/statement", response_model=StatementOut, tags=["billing"])
    def statement(
        key: Key,
        start: Annotated[date, Query(alias="from", description="First day (UTC)")],
        end: Annotated[date, Query(alias="to", description="Last day, inclusive")],
    ) -> StatementOut:
        """Billed days of the period plus the adjustments issued on them (late clicks of
        earlier, already billed days): a closed invoice is never changed."""
        if end < start or (end - start).days > 366:
            raise RangeError("a statement covers 1 to 366 days with 'to' >= 'from'")
        params = {"advertiser_id": key.advertiser_id, "start": start, "end": end}
        lines = [
            BillingLineOut(
                day=d,
                campaign_id=c,
                billable_clicks=n,
                cpc_micros=cpc,
                spend_micros=sp,
                in_catalog=bool(ok),
            )
            for d, c, n, cpc, sp, ok in api.reader.execute(q.billing_sql(api.db), params)
        ]
        adjustments = [
            AdjustmentOut(
                billed_day=bd,
                campaign_id=c,
                delta_clicks=dc,
                delta_spend_micros=ds,
                invoice_day=inv,
                detected_at=utc(at),
            )
            for bd, c, dc, ds, inv, at in api.reader.execute(q.adjustments_sql(api.db), params)
        ]
        billed = sum(x.spend_micros for x in lines)
        adjusted = sum(x.delta_spend_micros for x in adjustments)
        return StatementOut(
            advertiser_id=key.advertiser_id,
            start=start,
            end=end,
            lines=lines,
            adjustments=adjustments,
            billed_spend_micros=billed,
            adjustment_spend_micros=adjusted,
            total_spend_micros=billed + adjusted,
        )

    @app.get("/v1/ops/health", response_model=HealthOut, tags=["operations"])
    def health(_key: Key) -> HealthOut:
        """Consumer lag, watermark lag, spool depth, last reconciled hour (for the dashboard)."""
        s = api.settings
        live = platform_health(
            [u for u in s.capture_metrics_urls.split(",") if u],
            [u for u in s.stream_metrics_urls.split(",") if u],
        )
        last, drift = api.batch_health()
        return HealthOut(**live, last_reconciled_hour=last, max_relative_drift_24h=drift)

    @app.get("/", include_in_schema=False)
    @app.get("/dashboard", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    return app
