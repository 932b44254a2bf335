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
            live.confirm(off)
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
    # ids are 16 raw bytes now (they were 32 hex characters, which zstd halved): the frame
    # still shrinks the rest (window rows, repeated minutes)
    assert framed[:4] == ZSTD_MAGIC and len(framed) < len(unpack(framed))
    assert len(framed) < 30 * len(a.ids)
    plain = msgspec.msgpack.encode(msgspec.msgpack.decode(unpack(framed), type=CounterDelta))
    for data in (framed, plain):
        b = counter()
        assert b.apply(data)
        assert (b.next_offset, b.rows(), len(b.ids)) == (a.next_offset, a.rows(), len(a.ids))


def test_a_delta_written_before_id_blocks_still_applies():
    """Changelogs written before the RocksDB store listed ids as (hex string, minute) pairs;
    after the upgrade they recover into the same stored ids as the new packed blocks."""
    import msgspec

    from streaming.logic.counter import ClickCounter
    from streaming.logic.framing import pack, unpack
    from streaming.logic.windows import LatenessPolicy
    from tests.unit.stream_sim import make_events

    def counter() -> ClickCounter:
        return ClickCounter(0, LatenessPolicy(), 3_600_000, lambda ua: "bot" in ua.lower())

    a = counter()
    events = make_events(6, 300)
    for off, ev in enumerate(events):
        a.process(ev, off)
    new = msgspec.msgpack.decode(unpack(a.delta()))
    base, end, max_t, _ids, windows, pending, blocks, others = new
    old_ids = [[k.hex(), m] for m, block in blocks for k in _split(block)]
    old_ids += [[k[1:].decode(), m] for m, keys in others for k in keys]
    old = pack(msgspec.msgpack.encode([base, end, max_t, old_ids, windows, pending]))
    a.confirm(0)
    b = counter()
    assert b.apply(old, 0)
    assert b.ids.stored() == a.ids.stored() and len(b.ids.stored()) > 250
    assert (b.next_offset, b.rows()) == (a.next_offset, a.rows())


def _split(block: bytes) -> list[bytes]:
    return [block[i : i + 16] for i in range(0, len(block), 16)]
