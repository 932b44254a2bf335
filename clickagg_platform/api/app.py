"""The query API (FastAPI; OpenAPI at /docs and /openapi.json).

Every request carries an advertiser API key (`Authorization: Bearer ck_...` or `X-API-Key`).
An advertiser only ever sees its own campaigns: a campaign of another advertiser and a campaign
that does not exist get the same 404. ClickHouse is read with the read-only user.
"""


from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field

from clickagg_platform.api.keys import ApiKey, KeyStore
from clickagg_platform.api.queries import (
    ClickHouseReader,
    advertiser_campaigns_sql,
    campaign_owner_sql,
    hot_series_sql,
    naive_utc,
    utc,
)
from clickagg_platform.api.series import (
    Accuracy,
    Granularity,
    RangeError,
    make_range,
    zero_fill,
)
from clickagg_platform.settings import Settings, get_settings

NOT_FOUND = {"detail": "campaign not found"}


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

        self.reader = ClickHouseReader(factory)
        self.keys = KeyStore(factory, self.db)
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

    def owner_check(self, key: ApiKey, campaign_id: str) -> None:
        rows = self.reader.execute(campaign_owner_sql(self.db), {"campaign_id": campaign_id})
        if not rows or rows[0][0] != key.advertiser_id:
            raise HTTPException(404, NOT_FOUND["detail"])


def create_app(settings: Settings | None = None) -> FastAPI:
    api = Api(settings or get_settings())
    app = FastAPI(
        title="ClickAgg query API",
        version="1",
        description="Clicks per campaign and ad (fast from the stream, exact once reconciled), "
        "advertiser totals and billing statements. Authenticate with an advertiser API key.",
    )
    app.state.api = api

    @app.middleware("http")
    async def measure(request: Request, call_next):
        import time

        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        api.latency.labels(name).observe(time.perf_counter() - start)
        api.requests.labels(name, str(response.status_code)).inc()
        return response

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
            advertiser_campaigns_sql(api.db), {"advertiser_id": key.advertiser_id}
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
        params = {
            "campaign_id": campaign_id,
            "ad_id": ad_id,
            "start": naive_utc(rng.start),
            "end": naive_utc(rng.end),
        }
        sql = hot_series_sql(api.db, granularity, ad=ad_id is not None)
        hot = {utc(t): n for t, n in api.reader.execute(sql, params)}
        points = zero_fill(rng, hot, "hot")
        return SeriesOut(
            campaign_id=campaign_id,
            ad_id=ad_id,
            granularity=granularity,
            accuracy=accuracy,
            start=rng.start,
            end=rng.end,
            total=sum(p.clicks for p in points),
            points=[PointOut(t=p.t, clicks=p.clicks, source=p.source) for p in points],
        )

    return app
