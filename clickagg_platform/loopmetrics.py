"""Lock-free counters and histograms for metrics updated from one event-loop thread.

prometheus_client's metrics take a lock on every update because threads may share them. The
capture service updates its per-click metrics only on its event loop, a few times per click, and
those locks, label lookups and exemplar checks cost about a microsecond of every click. These
collectors keep plain Python numbers and expose the usual Prometheus families (`_total`,
`_bucket`/`_count`/`_sum`) through a `CollectorRegistry`. Only use them from one thread.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class _LoopMetric:
    """One metric family with one label whose values are known up front."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        values: Iterable[str],
        registry: CollectorRegistry,
    ):
        self.name, self.documentation, self.label = name, documentation, label
        self._children = {v: self._new_child() for v in values}
        registry.register(self)

    def _new_child(self):
        raise NotImplementedError

    def labels(self, value: str):
        return self._children[value]


class LoopCounter(_LoopMetric):
    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, child in self._children.items():
            family.add_metric([value], child.value)
        yield family


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left finds the first bound >= amount: Prometheus buckets are "less or equal"
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class LoopHistogram(_LoopMetric):
    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        values: Iterable[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ):
        self.bounds = tuple(float(b) for b in buckets)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram buckets must be strictly increasing")
        super().__init__(name, documentation, label, values, registry)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, child in self._children.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*child.bounds, float("inf")), child.counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            family.add_metric([value], buckets, child.sum)
        yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
