from prometheus_client import CollectorRegistry, Histogram, generate_latest

from clickagg_platform.loopmetrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1, 2.5)


def _samples(text: bytes, prefix: str) -> list[str]:
    return sorted(line for line in text.decode().splitlines() if line.startswith(prefix))


def test_loop_histogram_exposes_what_prometheus_client_would():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hist = LoopHistogram("lat_seconds", "latency", "path", ("a", "b"), BUCKETS, ours)
    reference = Histogram("lat_seconds", "latency", ["path"], buckets=BUCKETS, registry=theirs)
    # boundaries included: a value equal to a bound falls in that bound's bucket
    for path, value in [("a", 0.0005), ("a", 0.001), ("a", 0.05), ("b", 1), ("b", 3), ("a", 2.5)]:
        hist.labels(path).observe(value)
        reference.labels(path).observe(value)
    assert _samples(generate_latest(ours), "lat_seconds_") == [
        s for s in _samples(generate_latest(theirs), "lat_seconds_") if "_created" not in s
    ]


def test_loop_counter_counts_per_label_and_ends_in_total():
    registry = CollectorRegistry()
    counter = LoopCounter("reqs", "requests", "outcome", ("ok", "bad"), registry)
    counter.labels("ok").inc()
    counter.labels("ok").inc(2)
    text = generate_latest(registry).decode()
    assert 'reqs_total{outcome="ok"} 3.0' in text
    assert 'reqs_total{outcome="bad"} 0.0' in text


def test_loop_histogram_refuses_unsorted_buckets():
    import pytest

    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("x", "x", "l", ("a",), (1, 0.5), CollectorRegistry())
