"""Platform health for the dashboard and on-call: read straight from the /metrics endpoints of
the capture services and stream workers (no Prometheus server needed locally)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, timeout: float = 1.0) -> dict[str, list[tuple[dict, float]]]:
    """{metric sample name: [(labels, value), ...]}; empty when the endpoint is down."""
    try:
        text = httpx.get(url, timeout=timeout).text
    except httpx.HTTPError:
        return {}
    out: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _sum(samples: dict, name: str) -> float | None:
    values = [v for _, v in samples.get(name, [])]
    return sum(values) if values else None


def _max(samples: dict, name: str) -> float | None:
    values = [v for _, v in samples.get(name, [])]
    return max(values) if values else None


def platform_health(capture_urls: list[str], stream_urls: list[str]) -> dict:
    """Consumer lag, watermark lag and spool depth summed/maxed over the processes that answer;
    None where no process exported the signal (down or not started)."""
    captures = [scrape(u) for u in capture_urls]
    streams = [scrape(u) for u in stream_urls]
    spool = [_sum(c, "clickagg_capture_spool_depth") for c in captures]
    lag = [_sum(s, "clickagg_stream_consumer_lag") for s in streams]
    wm = [_max(s, "clickagg_stream_watermark_lag_seconds") for s in streams]
    known = lambda xs: [x for x in xs if x is not None]  # noqa: E731
    return {
        "spool_depth": int(sum(known(spool))) if known(spool) else None,
        "consumer_lag": int(sum(known(lag))) if known(lag) else None,
        "watermark_lag_s": round(max(known(wm)), 1) if known(wm) else None,
        "captures_up": sum(1 for c in captures if c),
        "stream_workers_up": sum(1 for s in streams if s),
    }
