import os
import subprocess
import sys
import textwrap

import pytest

from clickagg_platform.spool import Spool, SpoolError, encode_record, read_records


def test_append_seal_read_remove(tmp_path):
    sp = Spool(tmp_path, segment_bytes=1 << 20)
    sp.append_many([(b"k1", b"v1"), (b"k2", b"v2")])
    sp.append_many([(b"k3", b"v3")])
    assert sp.depth == 3
    assert sp.sealed() == []  # the active segment is not drainable until sealed
    segs = sp.seal()
    assert [list(read_records(s)) for s in segs] == [
        [(b"k1", b"v1"), (b"k2", b"v2"), (b"k3", b"v3")]
    ]
    sp.remove(segs[0])
    assert sp.depth == 0


def test_segments_roll_and_keep_order(tmp_path):
    sp = Spool(tmp_path, segment_bytes=64)
    for i in range(10):
        sp.append_many([(f"k{i}".encode(), b"x" * 40)])
    segs = sp.seal()
    assert len(segs) > 1
    keys = [k for s in segs for k, _ in read_records(s)]
    assert keys == [f"k{i}".encode() for i in range(10)]


def test_survives_restart_and_drops_torn_tail(tmp_path):
    sp = Spool(tmp_path)
    sp.append_many([(b"a", b"1"), (b"b", b"2")])
    seg = sp.seal()[0]
    sp.close()
    with open(seg, "ab") as f:  # a crash mid-write leaves half a record
        f.write(encode_record(b"c", b"3")[:7])
    again = Spool(tmp_path)
    assert again.depth == 2
    assert [k for s in again.sealed() for k, _ in read_records(s)] == [b"a", b"b"]


def test_corrupt_record_stops_reading(tmp_path):
    path = tmp_path / "x.seg"
    good, bad = encode_record(b"a", b"1"), bytearray(encode_record(b"b", b"2"))
    bad[-1] ^= 0xFF
    path.write_bytes(good + bytes(bad) + encode_record(b"c", b"3"))
    assert list(read_records(path)) == [(b"a", b"1")]


def test_a_live_process_keeps_its_slot(tmp_path):
    first = Spool(tmp_path)
    second = Spool(tmp_path)
    assert first.dir != second.dir
    first.append_many([(b"a", b"1")])
    first.close()
    third = Spool(tmp_path)  # a restart takes the freed slot and finds the old records
    assert third.dir == first.dir and third.depth == 1


def test_no_free_slot_is_a_clear_error(tmp_path):
    Spool(tmp_path, max_slots=1)
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path, max_slots=1)


def test_records_written_before_sigkill_are_recovered(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal
        from clickagg_platform.spool import Spool
        sp = Spool({str(tmp_path)!r})
        for i in range(100):
            sp.append_many([(str(i).encode(), b"v")])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ})
    assert proc.returncode == -9
    sp = Spool(tmp_path)
    assert sp.depth == 100
