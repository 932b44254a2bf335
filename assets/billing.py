"""Daily billing: invoice lines per advertiser and campaign for a closed UTC day, adjustments
for clicks that arrived after the day was billed."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pyarrow as pa
from pydantic import Field

from assets.common import (
    ADJUSTMENT_SCHEMA,
    BILLING_SCHEMA,
    DAY_MS,
    HOUR_MS,
    TRANSIENT,
    adjustments_url,
    billing_url,
    day_pid,
    days_in,
    minute_agg_url,
    ms,
    read_table,
    utc,
)
from assets.partitions import daily
from clickagg_platform import billing as bill
from clickagg_platform import catalog as cat
from clickagg_platform import lake
from resources.clickhouse import ClickHouseResource
from resources.lake import LakeResource

MATCH = dg.AssetCheckSpec(
    "billing_matches_batch",
    asset="billing_daily",
    description="Invoiced + adjusted clicks equal the day's batch minute aggregates, per line",
    blocking=True,
)
IN_CATALOG = dg.AssetCheckSpec(
    "billing_campaigns_in_catalog",
    asset="billing_daily",
    description="Every billed campaign has a CPC in the catalog (else it is billed at 0 and "
    "named here)",
    blocking=True,
)


class BillingConfig(dg.Config):
    as_of: str = Field("", description="ISO time the run acts at (empty = now); for replays")
    close_grace_minutes: int = Field(
        60, description="A day closes this long after midnight UTC (lateness + reconcile)"
    )
    require_drift_ok: bool = Field(
        True, description="Refuse to bill while any hour of the day fails the drift gate"
    )


class DayNotReady(Exception):
    pass


def _gate(
    day: date,
    clickhouse: ClickHouseResource,
    lake_store: LakeResource,
    settings,
    config: BillingConfig,
    as_of: datetime,
) -> None:
    """Raise unless the day has closed, every hour is reconciled and (if required) every hour
    passed the drift gate."""
    start = ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
    closes = utc(start + DAY_MS) + timedelta(minutes=config.close_grace_minutes)
    if as_of < closes:
        raise DayNotReady(f"{day} closes at {closes:%Y-%m-%dT%H:%MZ} (as of {as_of:%H:%M})")
    hours = range(start, start + DAY_MS, HOUR_MS)
    missing = [
        utc(h).strftime("%H")
        for h in hours
        if read_table(minute_agg_url(lake_store.url, h), settings) is None
    ]
    if missing:
        raise DayNotReady(f"{day}: hours not reconciled yet: {', '.join(missing)}")
    if not config.require_drift_ok:
        return
    rows = clickhouse.query(
        f"""SELECT hour, argMax(passed, computed_at), argMax(unexplained_abs, computed_at)
        FROM {clickhouse.table("drift_hours")}
        WHERE hour >= %(s)s AND hour < %(e)s GROUP BY hour""",
        {"s": utc(start), "e": utc(start + DAY_MS)},
    )
    status = {ms(h.replace(tzinfo=UTC)): (p, u) for h, p, u in rows}
    bad = [
        f"{utc(h):%H}h"
        + (" (no drift report)" if h not in status else f" (unexplained {status[h][1]})")
        for h in hours
        if h not in status or not status[h][0]
    ]
    if bad:
        offenders = clickhouse.query(
            f"""SELECT window_start, campaign_id, ad_id, hot_clicks, batch_clicks, unexplained
            FROM {clickhouse.table("drift_report")}
            WHERE hour >= %(s)s AND hour < %(e)s AND unexplained != 0
            ORDER BY abs(unexplained) DESC LIMIT 10""",
            {"s": utc(start), "e": utc(start + DAY_MS)},
        )
        names = "; ".join(
            f"{c}/{a}@{w:%H:%M} hot={hh} batch={b}" for w, c, a, hh, b, _ in offenders
        )
        raise DayNotReady(f"{day}: drift gate failing for hours {', '.join(bad)}: {names}")


def _day_clicks(day: date, lake_store: LakeResource, settings) -> dict:
    start = ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
    rows = []
    for h in range(start, start + DAY_MS, HOUR_MS):
        t = read_table(minute_agg_url(lake_store.url, h), settings)
        rows += zip(
            t["advertiser_id"].to_pylist(),
            t["campaign_id"].to_pylist(),
            t["clicks"].to_pylist(),
            strict=True,
        )
    return bill.daily_clicks(rows)


def _table(rows: list, schema: pa.Schema) -> pa.Table:
    """Records (invoice lines, adjustments) -> a table: one column per schema field, read from
    the record's attribute of that name."""
    return pa.table({n: [getattr(r, n) for r in rows] for n in schema.names}, schema=schema)


def _issued(t: pa.Table | None, catalog) -> list[bill.InvoiceLine]:
    if t is None:
        return []
    return [
        bill.InvoiceLine(
            r["day"],
            r["advertiser_id"],
            r["campaign_id"],
            r["billable_clicks"],
            r["cpc_micros"],
            r["spend_micros"],
            r["billed_at"],
            r["version"],
            r["campaign_id"] in catalog,
        )
        for r in t.to_pylist()
    ]


def _prior(t: pa.Table | None) -> list[bill.Adjustment]:
    if t is None:
        return []
    return [bill.Adjustment(**r) for r in t.to_pylist()]


def bill_day(day, as_of, lake_store, clickhouse, settings, catalog) -> dict:
    """Issue the invoice (first run) or the adjustments (later runs) of one closed day."""
    clicks = _day_clicks(day, lake_store, settings)
    issued = _issued(read_table(billing_url(lake_store.url, day), settings), catalog)
    prior = _prior(read_table(adjustments_url(lake_store.url, day), settings))
    first = read_table(billing_url(lake_store.url, day), settings) is None
    new: list[bill.Adjustment] = []
    if first:
        issued = bill.invoice(day, clicks, catalog, as_of)
        url = billing_url(lake_store.url, day)
        lake.write_table(url, _table(issued, BILLING_SCHEMA), settings)
        clickhouse.replace_partitions(
            "billing_daily",
            [day_pid(day)],
            [
                "day",
                "advertiser_id",
                "campaign_id",
                "billable_clicks",
                "cpc_micros",
                "spend_micros",
                "in_catalog",
                "billed_at",
                "version",
            ],
            [
                (
                    x.day,
                    x.advertiser_id,
                    x.campaign_id,
                    x.billable_clicks,
                    x.cpc_micros,
                    x.spend_micros,
                    int(x.in_catalog),
                    x.billed_at,
                    x.version,
                )
                for x in issued
            ],
        )
    else:
        new = bill.adjust(day, clicks, issued, prior, catalog, as_of)
        if new:
            everything = prior + new
            table = _table(everything, ADJUSTMENT_SCHEMA)
            lake.write_table(adjustments_url(lake_store.url, day), table, settings)
            clickhouse.replace_partitions(
                "billing_adjustments",
                [day_pid(day)],
                [
                    "billed_day",
                    "advertiser_id",
                    "campaign_id",
                    "delta_clicks",
                    "delta_spend_micros",
                    "invoice_day",
                    "detected_at",
                    "version",
                ],
                [
                    (
                        a.billed_day,
                        a.advertiser_id,
                        a.campaign_id,
                        a.delta_clicks,
                        a.delta_spend_micros,
                        a.invoice_day,
                        a.detected_at,
                        a.version,
                    )
                    for a in everything
                ],
            )
            prior = everything
    # what the customer was charged in total for the day, per line
    charged: dict = {}
    for x in issued:
        charged[(x.advertiser_id, x.campaign_id)] = x.billable_clicks
    for a in prior:
        k = (a.advertiser_id, a.campaign_id)
        charged[k] = charged.get(k, 0) + a.delta_clicks
    charged = {k: v for k, v in charged.items() if v}
    return {
        "first": first,
        "clicks": clicks,
        "charged": charged,
        "lines": len(issued),
        "new_adjustments": new,
        "missing": bill.missing_from_catalog(clicks, catalog),
        "spend_micros": sum(x.spend_micros for x in issued)
        + sum(a.delta_spend_micros for a in prior),
    }


@dg.asset(
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=TRANSIENT,
    deps=["minute_aggregates", "drift_report", "campaign_catalog"],
    kinds={"parquet", "clickhouse"},
    group_name="billing",
    check_specs=[MATCH, IN_CATALOG],
)
def billing_daily(
    context: dg.AssetExecutionContext,
    config: BillingConfig,
    lake_store: LakeResource,
    clickhouse: ClickHouseResource,
) -> dg.MaterializeResult:
    """Billable clicks and spend per advertiser and campaign for a closed UTC day (invoices)."""
    as_of = datetime.fromisoformat(config.as_of) if config.as_of else datetime.now(UTC)
    as_of = (as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)).replace(microsecond=0)
    settings = lake_store.settings(clickhouse.settings())
    catalog = cat.read(settings)
    window = context.partition_time_window
    days = days_in(window.start, window.end)
    try:
        for day in days:
            _gate(day, clickhouse, lake_store, settings, config, as_of)
    except DayNotReady as exc:
        raise dg.Failure(description=f"not billing: {exc}", allow_retries=False) from exc
    results = {day: bill_day(day, as_of, lake_store, clickhouse, settings, catalog) for day in days}
    mismatched = [
        f"{d}: {sorted(set(r['clicks'].items()) ^ set(r['charged'].items()))[:5]}"
        for d, r in results.items()
        if r["clicks"] != r["charged"]
    ]
    missing = sorted({c for r in results.values() for c in r["missing"]})
    new_adj = [a for r in results.values() for a in r["new_adjustments"]]
    return dg.MaterializeResult(
        metadata={
            "days": ", ".join(str(d) for d in days),
            "invoiced_now": ", ".join(str(d) for d, r in results.items() if r["first"]) or "none",
            "billable_clicks": sum(sum(r["clicks"].values()) for r in results.values()),
            "spend_micros": sum(r["spend_micros"] for r in results.values()),
            "lines": sum(r["lines"] for r in results.values()),
            "new_adjustments": len(new_adj),
            "adjusted_clicks": sum(a.delta_clicks for a in new_adj),
            "adjustments": dg.MetadataValue.md(
                "| billed day | campaign | delta clicks | delta spend | invoice day |\n"
                "|---|---|---|---|---|\n"
                + "\n".join(
                    f"| {a.billed_day} | {a.campaign_id} | {a.delta_clicks} | "
                    f"{a.delta_spend_micros} | {a.invoice_day} |"
                    for a in new_adj[:50]
                )
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="billing_matches_batch",
                passed=not mismatched,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"mismatched": "; ".join(mismatched) or "none"},
            ),
            dg.AssetCheckResult(
                check_name="billing_campaigns_in_catalog",
                passed=not missing,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "campaigns_missing_from_catalog": ", ".join(missing) or "none",
                    "catalog_campaigns": len(catalog),
                },
            ),
        ],
    )
