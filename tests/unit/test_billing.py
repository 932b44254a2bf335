"""Billing: invoice lines priced from the catalog, adjustments instead of changed invoices."""

from datetime import UTC, date, datetime

from clickagg_platform.billing import (
    CatalogEntry,
    adjust,
    daily_clicks,
    invoice,
    missing_from_catalog,
)

D = date(2026, 1, 1)
CAT = {"c1": CatalogEntry("a1", "c1", 50_000), "c2": CatalogEntry("a1", "c2", 1_230_000)}
T1 = datetime(2026, 1, 2, 1, 30, tzinfo=UTC)
T2 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def test_invoice_prices_lines_and_keeps_unknown_campaigns():
    clicks = daily_clicks([("a1", "c1", 3), ("a1", "c1", 4), ("a1", "c2", 2), ("a2", "c9", 5)])
    lines = invoice(D, clicks, CAT, T1)
    got = {(x.campaign_id, x.billable_clicks, x.spend_micros, x.in_catalog) for x in lines}
    assert got == {("c1", 7, 350_000, True), ("c2", 2, 2_460_000, True), ("c9", 5, 0, False)}
    assert missing_from_catalog(clicks, CAT) == ["c9"]
    assert all(x.version == 1 and x.billed_at == T1 for x in lines)


def test_adjustments_are_deltas_against_invoice_plus_prior_adjustments():
    issued = invoice(D, {("a1", "c1"): 7, ("a1", "c2"): 2}, CAT, T1)
    first = adjust(D, {("a1", "c1"): 9, ("a1", "c2"): 2, ("a1", "c3"): 1}, issued, [], CAT, T2)
    assert [(a.campaign_id, a.delta_clicks, a.delta_spend_micros, a.version) for a in first] == [
        ("c1", 2, 100_000, 2),
        ("c3", 1, 0, 2),  # not in the catalog: billed at 0, flagged by the caller's check
    ]
    assert all(a.invoice_day == date(2026, 1, 5) and a.billed_day == D for a in first)
    # nothing new: nothing issued (idempotent)
    assert (
        adjust(D, {("a1", "c1"): 9, ("a1", "c2"): 2, ("a1", "c3"): 1}, issued, first, CAT, T2) == []
    )
    # a later correction downwards is explicit too
    again = adjust(D, {("a1", "c1"): 8, ("a1", "c2"): 2, ("a1", "c3"): 1}, issued, first, CAT, T2)
    assert [(a.campaign_id, a.delta_clicks, a.delta_spend_micros, a.version) for a in again] == [
        ("c1", -1, -50_000, 3)
    ]
