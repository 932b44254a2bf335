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


def test_deltas_are_zstd_framed_and_unframed_ones_still_apply():
    """Checkpoints are compressed by the stream itself; a changelog written before that (plain
    msgpack) must still recover after an upgrade."""
    import msgspec

    from streaming.logic.counter import ClickCounter, CounterDelta
    from streaming.logic.framing import ZSTD_MAGIC, unpack
    from streaming.logic.windows import LatenessPolicy
    from tests.unit.stream_sim import make_events

    def counter() -> ClickCounter:
        return ClickCounter(0, LatenessPolicy(), 3_600_000, lambda ua: "bot" in ua.lower())

    a = counter()
    for off, ev in enumerate(make_events(5, 400)):
        a.process(ev, off)
    framed = a.delta()
    assert framed[:4] == ZSTD_MAGIC and len(framed) < len(unpack(framed)) / 2
    plain = msgspec.msgpack.encode(msgspec.msgpack.decode(unpack(framed), type=CounterDelta))
    for data in (framed, plain):
        b = counter()
        assert b.apply(data)
        assert (b.next_offset, b.rows(), len(b.dedup)) == (a.next_offset, a.rows(), len(a.dedup))
