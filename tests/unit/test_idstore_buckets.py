"""The id store's buckets: ids go into the open bucket, a bucket is sealed when full or when it
spans an eighth of the horizon, dropped whole (its column family and files) once every minute
in it expired, and a lookup answers from the newest bucket holding a key. A store written
before buckets opens as one bucket; a bucket no meta names (a crash between creating it and
the write naming it) is dropped on open. (The rules themselves: test_counter_rules.py.)"""

from __future__ import annotations

import os

import msgspec
import pytest
from rocksdict import Options, Rdict

from streaming.logic.idstore import IdStore, StoreMeta, StoreTuning, bucket_cf
from streaming.logic.windows import MINUTE_MS

HORIZON = 80 * MINUTE_MS  # span 81 min; a bucket spans at most 10 minutes
T0 = 1_000_000 * MINUTE_MS


def tuning(bucket_ids: int) -> StoreTuning:
    return StoreTuning(
        block_cache_bytes=4 << 20,
        write_buffer_bytes=1 << 20,
        bucket_ids=bucket_ids,
        filter_bytes_per_generation=1 << 14,
        max_filter_generations=3,
    )


def flush(store: IdStore, minute: int, keys: list[bytes], offset: int, watermark=None) -> int:
    meta = StoreMeta(offset, offset + 1, minute, seq=0)
    wm = minute if watermark is None else watermark
    return store.flush([(minute, b"".join(keys))], [], meta, b"w", wm)


def value(store: IdStore, key: bytes) -> int | None:
    (raw,) = store.lookup([key], key)
    return None if raw is None else int.from_bytes(raw, "big") * MINUTE_MS


def test_buckets_seal_when_full_and_go_whole_once_expired(tmp_path):
    store = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=250))
    batches = [[os.urandom(16) for _ in range(100)] for _ in range(8)]
    for i, keys in enumerate(batches):  # one minute each: 100 ids; a bucket takes 3 flushes
        flush(store, T0 + i * MINUTE_MS, keys, i)
    assert [b.ids for b in store.meta.buckets] == [300, 300, 200]
    assert [b.number for b in store.meta.buckets] == [0, 1, 2]
    assert len(store.filter.gens) == 3
    assert all(value(store, k) == T0 + i * MINUTE_MS for i, ks in enumerate(batches) for k in ks)
    assert store.meta.live_ids == store.count_keys() == 800

    # minutes 0..3 expire: bucket 0 (minutes 0-2) goes whole, bucket 1 keeps minute 3's ids
    expired = flush(store, T0 + 84 * MINUTE_MS + 1, [os.urandom(16)], 8)
    assert expired == 400 and store.meta.live_ids == 401
    assert [b.number for b in store.meta.buckets] == [1, 2, 3]  # 3: the new id (a new span)
    assert bucket_cf(0) not in Rdict.list_cf(str(store.path))
    assert store.count_keys() == 501  # minute 3's expired ids stay until bucket 1 goes
    assert store.count_stored() == 401  # ... but are not live
    store.close()

    again = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=250))  # reopened: the same
    assert [b.number for b in again.meta.buckets] == [1, 2, 3]
    assert again.meta.live_ids == again.count_stored() == 401
    assert all(value(again, k) == T0 + 5 * MINUTE_MS for k in batches[5])
    assert again.filter.may_contain(b"".join(batches[4] + batches[7])).all()
    again.close()


def test_a_key_remembered_anew_is_read_from_the_newest_bucket(tmp_path):
    store = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=1_000_000))
    key = os.urandom(16)
    flush(store, T0, [key], 0)
    later = T0 + 82 * MINUTE_MS  # minute 0 expired: the key is new again (counter.py's rule)
    flush(store, later, [key], 1, watermark=later)
    assert len(store.meta.buckets) == 1 and store.meta.buckets[0].number == 1  # 0 went
    flush(store, later + 20 * MINUTE_MS, [os.urandom(16)], 2)  # (bucket 2: 10 minutes on)
    assert value(store, key) == later and store.meta.live_ids == 2
    store.close()


def test_a_store_written_before_buckets_opens_as_bucket_zero(tmp_path):
    """The layout of commit d71044a: one ``ids`` column family, expiry blobs keyed by minute,
    kind and sequence (13 bytes), a meta of six fields."""
    path = tmp_path / "old"
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    db = Rdict(str(path), opts)
    ids, exp = db.create_column_family("ids", opts), db.create_column_family("exp", opts)
    keys = [os.urandom(16) for _ in range(50)]
    minute = T0 // MINUTE_MS
    for k in keys:
        ids[k] = minute.to_bytes(4, "big")
    exp[minute.to_bytes(4, "big") + b"a" + (1).to_bytes(8, "big")] = b"".join(keys)
    db[b"meta"] = msgspec.msgpack.encode([0, 1, T0, -1, 50, 1])
    db[b"extra"] = b"w"
    ids.close(), exp.close(), db.close()

    store = IdStore(path, HORIZON, tuning(bucket_ids=1_000_000))
    assert [(b.number, b.last_minute, b.ids) for b in store.meta.buckets] == [(0, minute, 50)]
    assert all(value(store, k) == T0 for k in keys)  # through the rebuilt filter
    fresh = os.urandom(16)
    flush(store, T0 + 90 * MINUTE_MS, [fresh], 1)  # minute 0 expired: the old bucket goes
    assert [b.number for b in store.meta.buckets] == [1]
    assert store.meta.live_ids == 1 and value(store, fresh) == T0 + 90 * MINUTE_MS
    assert value(store, keys[0]) is None and "ids" not in Rdict.list_cf(str(path))
    store.close()


def test_a_bucket_no_meta_names_is_dropped_on_open(tmp_path):
    store = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=1_000_000))
    flush(store, T0, [os.urandom(16)], 0)
    store._attach(7)  # created, then a crash before the write naming it
    store._cfs[7][os.urandom(16)] = b"\0\0\0\0"
    store.close()
    assert bucket_cf(7) in Rdict.list_cf(str(tmp_path / "s"))
    again = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=1_000_000))
    assert bucket_cf(7) not in Rdict.list_cf(str(tmp_path / "s"))
    assert again.count_keys() == 1
    flush(again, T0 + 20 * MINUTE_MS, [os.urandom(16)], 1)  # a new bucket: never number 7
    assert [b.number for b in again.meta.buckets] == [0, 8]
    again.close()


def cf_keys(store: IdStore, number: int) -> int:
    return sum(1 for _ in store._cfs[number].keys())


def test_the_open_bucket_is_in_memory_and_written_once_when_sealed(tmp_path):
    """The open bucket's ids are never written one by one into RocksDB: they are in memory
    (and durable in the expiry blobs), then written as one ingested SST file at the seal."""
    store = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=250))
    batches = [[os.urandom(16) for _ in range(100)] for _ in range(4)]
    for i, keys in enumerate(batches[:3]):
        flush(store, T0 + i * MINUTE_MS, keys, i)
    assert [(b.number, b.in_memory) for b in store.meta.buckets] == [(0, True)]
    assert cf_keys(store, 0) == 0 and store.stats()["memory_bucket_ids"] == 300
    assert all(value(store, k) == T0 + i * MINUTE_MS for i in range(3) for k in batches[i])
    flush(store, T0 + 3 * MINUTE_MS, batches[3], 3)  # full: bucket 0 sealed, 1 opens
    assert [(b.number, b.in_memory) for b in store.meta.buckets] == [(0, False), (1, True)]
    assert cf_keys(store, 0) == 300 and 0 not in store._mem
    cf = store._cfs[0]  # ingested: nothing went through its write buffer
    assert cf.property_int_value("rocksdb.num-entries-active-mem-table") == 0
    assert cf.property_int_value("rocksdb.num-files-at-level0") == 0  # (the bottom level)
    assert not list(store.path.glob("*.sst.tmp")) and not list(store.path.glob("seal-*"))
    assert all(value(store, k) == T0 + i * MINUTE_MS for i, ks in enumerate(batches) for k in ks)
    assert store.count_keys() == store.count_stored() == store.meta.live_ids == 400
    store.close()

    again = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=250))  # rebuilt from the blobs
    assert again.stats()["memory_bucket_ids"] == 100 and cf_keys(again, 1) == 0
    assert all(value(again, k) == T0 + i * MINUTE_MS for i, ks in enumerate(batches) for k in ks)
    assert again.stored() == {k: T0 + i * MINUTE_MS for i, ks in enumerate(batches) for k in ks}
    again.close()


def test_a_crash_after_the_ingest_before_the_meta_write_loses_nothing(tmp_path):
    store = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=100))
    first = [os.urandom(16) for _ in range(100)]
    flush(store, T0, first, 0)
    real = store._db

    class Killed:  # the RocksDB, whose next atomic write never happens
        def __getattr__(self, name):
            return getattr(real, name)

        def write(self, _wb):
            raise OSError("killed")

    store._db = Killed()
    with pytest.raises(OSError, match="killed"):
        flush(store, T0 + MINUTE_MS, [os.urandom(16)], 1)  # seals 0 (ingested), write fails
    store._db = real
    assert store.meta.buckets[0].in_memory and 0 in store._mem  # as before the failed flush
    assert cf_keys(store, 0) == 100  # the ingested copy: harmless, the same ids
    store.close()
    again = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=100))
    assert [(b.number, b.in_memory) for b in again.meta.buckets] == [(0, True)]
    assert all(value(again, k) == T0 for k in first)
    later = [os.urandom(16) for _ in range(5)]
    flush(again, T0 + MINUTE_MS, later, 1)  # sealed again, now for good
    assert [(b.number, b.in_memory) for b in again.meta.buckets] == [(0, False), (2, True)]
    assert all(value(again, k) == T0 for k in first) and again.meta.live_ids == 105
    again.close()


def test_a_bucket_written_before_in_memory_buckets_is_sealed_at_the_next_flush(tmp_path):
    store = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=1_000_000))
    old = [os.urandom(16) for _ in range(20)]
    flush(store, T0, old, 0)
    # as a store of the previous layout left it: the bucket's ids in its column family, the
    # meta without the in-memory flag
    for k in old:
        store._cfs[0][k] = (T0 // MINUTE_MS).to_bytes(4, "big")
    store.meta.buckets[0].in_memory = False
    store._db.put(b"meta", msgspec.msgpack.encode(store.meta))
    store.close()
    again = IdStore(tmp_path / "s", HORIZON, tuning(bucket_ids=1_000_000))
    assert not again._mem and all(value(again, k) == T0 for k in old)  # read from RocksDB
    new = [os.urandom(16) for _ in range(3)]
    flush(again, T0 + MINUTE_MS, new, 1)
    assert [(b.number, b.in_memory) for b in again.meta.buckets] == [(0, False), (1, True)]
    assert all(value(again, k) == T0 for k in old) and all(value(again, k) for k in new)
    again.close()
