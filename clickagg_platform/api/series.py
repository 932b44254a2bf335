"""Pure time-series logic of the query API: ranges, granularities, zero-filling and the
per-point choice between the hot (fast) and the reconciled (exact) source."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property

MAX_POINTS = 10_000


class Granularity(StrEnum):
    minute = "minute"
    hour = "hour"
    day = "day"

    @property
    def seconds(self) -> int:
        return {"minute": 60, "hour": 3600, "day": 86400}[self.value]


class Accuracy(StrEnum):
    fast = "fast"
    exact = "exact"
    auto = "auto"


class RangeError(ValueError):
    """A request whose range cannot be answered; the message is safe to show to the client."""


@dataclass(frozen=True)
class TimeRange:
    start: datetime  # inclusive, aligned to the granularity
    end: datetime  # exclusive, aligned
    granularity: Granularity

    @cached_property
    def buckets(self) -> list[datetime]:
        step = timedelta(seconds=self.granularity.seconds)
        out, t = [], self.start
        while t < self.end:
            out.append(t)
            t += step
        return out

    @cached_property
    def hours(self) -> list[datetime]:
        """Every UTC hour the range touches (reconciliation is tracked per hour)."""
        out, t = [], floor(self.start, Granularity.hour)
        while t < self.end:
            out.append(t)
            t += timedelta(hours=1)
        return out


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def floor(t: datetime, g: Granularity) -> datetime:
    t = as_utc(t)
    seconds = int(t.timestamp()) // g.seconds * g.seconds
    return datetime.fromtimestamp(seconds, UTC)


def ceil(t: datetime, g: Granularity) -> datetime:
    f = floor(t, g)
    return f if f == as_utc(t) else f + timedelta(seconds=g.seconds)


def make_range(
    start: datetime, end: datetime, granularity: Granularity, max_points: int = MAX_POINTS
) -> TimeRange:
    """Align [start, end) outward to the granularity; refuse empty or oversized ranges."""
    if as_utc(end) <= as_utc(start):
        raise RangeError("'to' must be after 'from'")
    s, e = floor(start, granularity), ceil(end, granularity)
    points = int((e - s).total_seconds()) // granularity.seconds
    if points > max_points:
        raise RangeError(
            f"{points} {granularity.value} points requested; at most {max_points} per query "
            f"(use a coarser granularity or a shorter range)"
        )
    return TimeRange(s, e, granularity)


@dataclass(frozen=True)
class Point:
    t: datetime
    clicks: int
    source: str  # "hot" | "reconciled"


def zero_fill(rng: TimeRange, values: Mapping[datetime, int], source: str) -> list[Point]:
    return [Point(b, int(values.get(b, 0)), source) for b in rng.buckets]


def bucket_is_reconciled(bucket: datetime, g: Granularity, reconciled: set[datetime]) -> bool:
    """A bucket is exact only if every hour it covers is reconciled."""
    if g is Granularity.day:
        return all(bucket + timedelta(hours=h) in reconciled for h in range(24))
    return bucket.replace(minute=0, second=0, microsecond=0) in reconciled


def merge_auto(
    rng: TimeRange,
    hot: Mapping[datetime, int],
    exact: Mapping[datetime, int],
    reconciled_hours: Iterable[datetime],
) -> list[Point]:
    """Exact where the bucket's hours are reconciled, hot elsewhere; every point labelled."""
    done = {as_utc(h) for h in reconciled_hours}
    out = []
    for b in rng.buckets:
        if bucket_is_reconciled(b, rng.granularity, done):
            out.append(Point(b, int(exact.get(b, 0)), "reconciled"))
        else:
            out.append(Point(b, int(hot.get(b, 0)), "hot"))
    return out
