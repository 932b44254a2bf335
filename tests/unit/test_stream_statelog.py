"""Local delta store (rocksdict): pruning keeps exactly what recovery needs."""

from __future__ import annotations

from clickagg_platform.loadgen import is_bot_user_agent
from streaming.logic.counter import ClickCounter
from streaming.logic.windows import LatenessPolicy
from streaming.statelog import LocalDeltas, expired_before
from tests.unit.stream_sim import make_events

HORIZON, LATE = 3 * 60_000, 60_000
POLICY = LatenessPolicy(out_of_orderness_ms=5_000, allowed_lateness_ms=LATE)


def test_pruned_local_deltas_rebuild_the_same_state(tmp_path):
    # 30 minutes of traffic at 5 clicks/s with duplicates: far more than horizon + lateness
    events = make_events(seed=4, n=9000, rate_per_s=5.0, bursts=0, too_late_fraction=0)
    live = ClickCounter(0, POLICY, HORIZON, is_bot_user_agent)
    local = LocalDeltas(tmp_path / "deltas")
    pruned = 0
    for off, ev in enumerate(events[:7000]):
        live.process(ev, off)
        if off % 250 == 249:
            local.put(off, live.delta(), live.content_bound)
            pruned += local.prune(expired_before(live.watermark, HORIZON, LATE))
    kept = list(local.items())
    assert pruned > 10 and len(kept) < 28 - 10  # old deltas are really gone

    rebuilt = ClickCounter(0, POLICY, HORIZON, is_bot_user_agent)
    assert all(rebuilt.apply(d) for _, d in kept)
    assert rebuilt.next_offset == live.next_offset == 7000
    # same decisions and counts from here on as the never-restarted counter
    for off in range(7000, len(events)):
        assert rebuilt.process(events[off], off) == live.process(events[off], off)
    assert rebuilt.windows.counts == live.windows.counts
    local.close()
