"""The campaign catalog: advertisers, campaigns, ads, CPCs and the Zipf ranking."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from clickagg_platform.loadgen.plan import LoadPlan


@dataclass(frozen=True)
class Ad:
    ad_id: str
    landing_url: str


@dataclass(frozen=True)
class Campaign:
    advertiser_id: str
    campaign_id: str
    cpc_micros: int  # price of one billable click, in micros of the billing currency
    zipf_rank: int  # 0 = the hot campaign
    weight: float  # share of ordinary traffic
    ads: tuple[Ad, ...]


@dataclass(frozen=True)
class Catalog:
    campaigns: tuple[Campaign, ...]
    publishers: tuple[str, ...]

    def by_id(self) -> dict[str, Campaign]:
        return {c.campaign_id: c for c in self.campaigns}

    def hot_campaign(self) -> Campaign:
        return min(self.campaigns, key=lambda c: c.zipf_rank)

    def to_json(self) -> dict:
        advertisers: dict[str, list[dict]] = defaultdict(list)
        for c in self.campaigns:
            advertisers[c.advertiser_id].append(
                {
                    "campaign_id": c.campaign_id,
                    "cpc_micros": c.cpc_micros,
                    "zipf_rank": c.zipf_rank,
                    "weight": round(c.weight, 9),
                    "ads": [{"ad_id": a.ad_id, "landing_url": a.landing_url} for a in c.ads],
                }
            )
        return {
            "advertisers": [
                {"advertiser_id": adv, "campaigns": camps} for adv, camps in advertisers.items()
            ],
            "publishers": list(self.publishers),
        }


def build_catalog(plan: LoadPlan) -> Catalog:
    """Advertisers, campaigns, ads, CPCs and the Zipf ranking, from the seed alone.

    Uses its own random stream, so the catalog does not change with the traffic size.
    """
    rng = np.random.default_rng([plan.seed, 1])
    n = plan.advertisers * plan.campaigns_per_advertiser
    ranks = rng.permutation(n)
    raw = 1.0 / np.power(np.arange(1, n + 1, dtype=float), plan.zipf_s)
    weights = raw / raw.sum()
    cpcs = rng.integers(5, 301, size=n) * 10_000  # 0.05 .. 3.00 per click
    campaigns = []
    for i in range(n):
        a, c = divmod(i, plan.campaigns_per_advertiser)
        adv, cmp = f"adv-{a + 1:03d}", f"cmp-{a + 1:03d}-{c + 1:02d}"
        ads = tuple(
            Ad(
                ad_id=f"ad-{a + 1:03d}-{c + 1:02d}-{k + 1:02d}",
                landing_url=(
                    f"https://advertiser-{a + 1}.example/landing?c={cmp}"
                    f"&ad=ad-{a + 1:03d}-{c + 1:02d}-{k + 1:02d}"
                ),
            )
            for k in range(plan.ads_per_campaign)
        )
        rank = int(ranks[i])
        campaigns.append(Campaign(adv, cmp, int(cpcs[i]), rank, float(weights[rank]), ads))
    publishers = tuple(f"pub-{p + 1:03d}" for p in range(plan.publishers))
    return Catalog(tuple(campaigns), publishers)
