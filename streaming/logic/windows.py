"""Event-time tumbling minutes, watermarks and the lateness policy."""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000
NO_WATERMARK = -(2**62)  # before the first event: nothing is late yet


def window_start(event_time_ms: int) -> int:
    """Start (epoch ms, UTC) of the one-minute tumbling window holding this event time."""
    return event_time_ms - event_time_ms % MINUTE_MS


@dataclass(frozen=True)
class LatenessPolicy:
    """Watermark = max event time seen minus `out_of_orderness_ms`; a window accepts
    corrections until the watermark passes window end + `allowed_lateness_ms`."""

    out_of_orderness_ms: int = 5_000
    allowed_lateness_ms: int = 600_000

    def watermark(self, max_event_time: int) -> int:
        if max_event_time == NO_WATERMARK:
            return NO_WATERMARK
        return max_event_time - self.out_of_orderness_ms

    def first_open_window(self, watermark: int) -> int:
        """Windows starting before this no longer take corrections (for per-click loops:
        `start < first_open_window(wm)` is `is_too_late(start, wm)`)."""
        return watermark - MINUTE_MS - self.allowed_lateness_ms

    def is_too_late(self, start: int, watermark: int) -> bool:
        """True once the window [start, start+1min) no longer takes corrections."""
        return start < self.first_open_window(watermark)

    def is_closed_by(self, start: int, watermark: int) -> bool:
        """Same as `is_too_late`: state of such a window can be dropped."""
        return self.is_too_late(start, watermark)

    @staticmethod
    def is_correction(start: int, watermark: int) -> bool:
        """The watermark already passed the window's end: this click corrects a 'complete'
        window (counted as a late correction, still within allowed lateness)."""
        return watermark >= start + MINUTE_MS
