"""Daily billing from the batch minute aggregates: the invoice of a closed UTC day, and explicit
adjustments for clicks that arrive after it was billed.

An invoice line, once issued, is never changed: re-billing a day compares the current truth with
what was invoiced plus every adjustment issued so far and issues the difference as new
adjustment rows (a new `version`), dated on the open invoice period (`invoice_day` = the day the
difference was detected). Re-running with no new clicks issues nothing (idempotent). A campaign
missing from the catalog is still billed (cpc 0, `in_catalog=False`) so it is never dropped
silently; the billing check fails and names it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

LineKey = tuple[str, str]  # (advertiser_id, campaign_id)


@dataclass(frozen=True)
class CatalogEntry:
    advertiser_id: str
    campaign_id: str
    cpc_micros: int
    name: str = ""


@dataclass(frozen=True)
class InvoiceLine:
    day: date
    advertiser_id: str
    campaign_id: str
    billable_clicks: int
    cpc_micros: int
    spend_micros: int
    billed_at: datetime
    version: int
    in_catalog: bool = True


@dataclass(frozen=True)
class Adjustment:
    billed_day: date
    advertiser_id: str
    campaign_id: str
    delta_clicks: int
    delta_spend_micros: int
    invoice_day: date
    detected_at: datetime
    version: int


def daily_clicks(rows: Iterable[tuple[str, str, int]]) -> dict[LineKey, int]:
    """(advertiser, campaign, clicks) rows (e.g. minute aggregates of one day) -> per line."""
    out: dict[LineKey, int] = {}
    for adv, cmp, n in rows:
        out[(adv, cmp)] = out.get((adv, cmp), 0) + int(n)
    return {k: v for k, v in out.items() if v}


def invoice(
    day: date, clicks: dict[LineKey, int], catalog: dict[str, CatalogEntry], billed_at: datetime
) -> list[InvoiceLine]:
    lines = []
    for (adv, cmp), n in sorted(clicks.items()):
        entry = catalog.get(cmp)
        cpc = entry.cpc_micros if entry else 0
        lines.append(InvoiceLine(day, adv, cmp, n, cpc, n * cpc, billed_at, 1, entry is not None))
    return lines


def adjust(
    day: date,
    clicks: dict[LineKey, int],
    issued: list[InvoiceLine],
    prior: list[Adjustment],
    catalog: dict[str, CatalogEntry],
    detected_at: datetime,
) -> list[Adjustment]:
    """New adjustment rows: current truth minus (invoiced + adjusted so far), per line.

    The price of a line is the one it was invoiced at; a line not on the invoice is priced from
    the catalog (0 if missing there too; the caller's check flags it)."""
    billed: dict[LineKey, int] = {
        (x.advertiser_id, x.campaign_id): x.billable_clicks for x in issued
    }
    price = {(x.advertiser_id, x.campaign_id): x.cpc_micros for x in issued}
    for a in prior:
        key = (a.advertiser_id, a.campaign_id)
        billed[key] = billed.get(key, 0) + a.delta_clicks
    version = max([x.version for x in issued] + [a.version for a in prior] + [1]) + 1
    out = []
    for key in sorted(set(billed) | set(clicks)):
        delta = clicks.get(key, 0) - billed.get(key, 0)
        if not delta:
            continue
        cpc = price.get(key)
        if cpc is None:
            entry = catalog.get(key[1])
            cpc = entry.cpc_micros if entry else 0
        out.append(
            Adjustment(
                day, key[0], key[1], delta, delta * cpc, detected_at.date(), detected_at, version
            )
        )
    return out


def missing_from_catalog(clicks: dict[LineKey, int], catalog: dict[str, CatalogEntry]) -> list[str]:
    return sorted({cmp for _adv, cmp in clicks if cmp not in catalog})
