"""Stage 1's dedup ids on local disk: RocksDB (rocksdict), with memory bounded by configuration.

The dedup rule is unchanged (`DedupSet.add`): an id is a duplicate while the watermark is within
`1 min + horizon` of the minute its first copy was remembered with. What changes is where the
ids live. A Python dict of `str` cost ~830 bytes per id (2.37 GB for 2.85 M ids, issue 11); here
an id is a 16-byte key (the 128-bit id, not its hex) with a 4-byte minute, in RocksDB:

- **buckets**: ids are written into the open bucket, one column family each (``ids`` for
  bucket 0, ``ids.N`` after it): id -> minute (u32 minutes since the epoch). A bucket is sealed
  and the next one opened once it holds `StoreTuning.bucket_ids` ids or spans an eighth of the
  horizon, and is DROPPED (its files deleted, O(1)) once every minute it holds expired. So
  RocksDB never rewrites old ids: with one key space, random 128-bit keys made every
  compaction of new ids merge with ALL the stored ones (write amplification growing with the
  state: stage 1 at 20 M ids ran at 0.35 of the in-memory rate), and expiry wrote a tombstone
  per id. A bucket still holds ids of expired minutes until it goes; the rule treats a stored
  expired minute as new anyway (`counter.py`), and an id remembered anew is written into the
  open bucket, so a lookup reads the NEWEST bucket holding the key.
- the open bucket is in memory (`membucket.MemBucket`: sorted arrays of 16-byte keys), not
  written id by id: each new id's memtable insert, flush and compactions were most of the
  store's cost per click. Its ids are durable in the expiry-index blobs (below) and rebuilt
  from them on open; when it is sealed it is written ONCE, as one sorted SST file RocksDB
  ingests into its column family (`Bucket.in_memory` says which form a bucket is in).
- the in-memory `IdFilter` has a generation per bucket: it rules most keys out (a new id, the
  common case, touches no RocksDB at all) and names the bucket(s) the rest may be in; lookups are
  batched (one multi-get per bucket per chunk of a fetch).
- ``exp`` column family, the expiry index: per flushed checkpoint and minute, ONE value holding
  that minute's new ids packed back to back (key = minute, kind, sequence, bucket). It counts
  the live ids exactly (a minute's ids leave the count when it expires, blobs range-deleted)
  and rebuilds the filter on open: O(stored bytes), no per-id index key, no scan of the ids.
- default column family: ``meta`` (where the chain stands: changelog offset, next source offset,
  watermark, live id count, the live buckets) and the caller's small state blob (window counts),
  written in the same atomic WriteBatch as the ids, so the local store is always exactly the
  state after one changelog record. Bucket column families are created before and dropped after
  the write that names / forgets them; one no meta names is an orphan of a crash, dropped on open.

Ids of the checkpoint being built (`current`) and of the one being written (`inflight`) stay in
small dicts until the changelog record that carries them is acked by Kafka; only then are they
flushed here (never before: the local store must never hold state ahead of the durable chain).
Expiry runs at flush time, with the flushed checkpoint's own watermark, for the same reason.

Memory is the block cache + write buffers (of the expiry index) + the open bucket (16 bytes per
id, at most `bucket_ids`) + the filter (at most `max_filter_generations` arrays) + the two
small dicts (bounded by the checkpoint size), whatever the number of ids (`StoreTuning`).
"""

from __future__ import annotations

import re
import shutil
import struct
import tempfile
import uuid
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from streaming.logic.idfilter import IdFilter
from streaming.logic.membucket import MemBucket
from streaming.logic.windows import MINUTE_MS

_MINUTE = struct.Struct(">I")
_META = b"meta"
_EXTRA = b"extra"
_LINEAGE = b"lineage"
_ADDED, _OTHERS = b"a", b"o"


def minute_of_value(raw: bytes) -> int:
    """The minute (ms) stored for an id."""
    return int.from_bytes(raw, "big") * MINUTE_MS


def id_key(event_id: str) -> bytes:
    """The store key of an event id: the 16 bytes of a canonical (lowercase, 32-digit) hex id,
    else a distinct longer key (`b"\\xff"` + UTF-8, never 16 bytes long), so any string works
    and no two strings share a key. (`ClickCounter`'s loop inlines the fast branch.)"""
    if len(event_id) == 32 and (event_id.islower() or event_id.isdigit()):
        try:
            key = bytes.fromhex(event_id)
        except ValueError:
            pass
        else:
            if len(key) == 16:
                return key
    return other_key(event_id)


def other_key(event_id: str) -> bytes:
    raw = b"\xff" + event_id.encode("utf-8", "surrogatepass")
    return raw + b"\xff" if len(raw) == 16 else raw  # UTF-8 never holds 0xff: still injective


@dataclass(frozen=True)
class StoreTuning:
    """What bounds a store's memory: per partition, block cache + write buffers."""

    block_cache_bytes: int = 64 << 20
    write_buffer_bytes: int = 8 << 20
    write_buffers: int = 3
    bloom_bits_per_key: float = 10.0
    bucket_ids: int = 1_000_000  # ids written into a bucket before the next one opens
    filter_bytes_per_generation: int = 2 << 20  # one per bucket: ~16 bits per id of a bucket
    max_filter_generations: int = 32  # past this the oldest are merged (`IdFilter`)


class Bucket(msgspec.Struct, array_like=True):
    number: int
    opened_minute: int  # minute indexes (minutes since the epoch): the newest when it opened,
    last_minute: int  # the newest of its ids (it goes once this minute expired)
    ids: int = 0  # ids written into it (expired or not)
    # the open bucket lives in memory (`MemBucket`, rebuilt from the expiry blobs on open) and
    # is written once as an SST file when sealed; False: in its column family (sealed, or a
    # bucket of a store written before this)
    in_memory: bool = False


class StoreMeta(msgspec.Struct, array_like=True):
    changelog_offset: int = -1  # the changelog record this state is the result of
    next_offset: int | None = None  # next source offset to consume
    max_event_time: int = 0
    expired_upto: int = -1  # minute index: ids of minutes below it are expired
    live_ids: int = 0  # ids of minutes not expired (newest copy of each), exactly
    seq: int = 0  # flushes so far (makes expiry-index keys unique)
    buckets: list[Bucket] = []  # live buckets, oldest first; the last one is open


def bucket_cf(number: int) -> str:
    """A bucket's column family (bucket 0 is the one column family of ids stores before
    buckets: such a store opens as a store of one bucket)."""
    return "ids" if number == 0 else f"ids.{number}"


_BUCKET_CF = re.compile(r"^ids(\.\d+)?$")


def bucket_number(name: str) -> int | None:
    """The bucket of a column family name (`bucket_cf`'s inverse), None for other families."""
    if not _BUCKET_CF.match(name):
        return None
    return 0 if name == "ids" else int(name[4:])


_meta_enc = msgspec.msgpack.Encoder()
_meta_dec = msgspec.msgpack.Decoder(StoreMeta)


class Generation:
    """Ids remembered since the last checkpoint was taken, not yet in RocksDB."""

    __slots__ = ("minute_of", "by_minute", "moved", "mixed")

    def __init__(self) -> None:
        self.minute_of: dict[bytes, int] = {}  # key -> minute (ms): what lookups read
        self.by_minute: dict[int, list[bytes]] = {}  # minute (ms) -> keys, as added
        self.moved = False  # a key of this generation was remembered anew under another minute
        self.mixed = False  # keys other than 16-byte ids may be in it

    def grouped(self) -> tuple[list[tuple[int, bytes]], list[tuple[int, list[bytes]]]]:
        """The ids per minute: 16-byte keys packed back to back, and the keys of non-hex ids
        (how deltas and the expiry index hold them)."""
        by_minute = self.by_minute
        if self.moved:  # rare (a horizon shorter than a checkpoint): regroup by final minute
            by_minute = {}
            for key, minute in self.minute_of.items():
                by_minute.setdefault(minute, []).append(key)
        if not self.mixed:
            return [(m, b"".join(keys)) for m, keys in by_minute.items()], []
        packed, others = [], []
        for minute, keys in by_minute.items():
            ids = [k for k in keys if len(k) == 16]
            if ids:
                packed.append((minute, b"".join(ids)))
            if len(ids) < len(keys):
                others.append((minute, [k for k in keys if len(k) != 16]))
        return packed, others


def split_keys(block: bytes) -> list[bytes]:
    """A packed block of 16-byte keys back into keys (numpy makes the bytes objects in C: half
    the time of a regex split, a quarter of slicing in a comprehension)."""
    return np.frombuffer(block, dtype="V16").tolist()


_keys_enc = msgspec.msgpack.Encoder()
_keys_dec = msgspec.msgpack.Decoder(list[bytes])


class IdStore:
    """One source partition's dedup ids (see the module docstring)."""

    def __init__(self, path: Path, horizon_ms: int, tuning: StoreTuning | None = None) -> None:
        from rocksdict import Cache, Rdict

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.horizon_ms = horizon_ms
        self.span_ms = MINUTE_MS + horizon_ms
        # a bucket spans at most an eighth of the horizon (expiry granularity: stored ids of
        # expired minutes stay below ~1/8 of the live ones), and at least a minute
        self.seal_minutes = max(horizon_ms // MINUTE_MS // 8, 1)
        self.tuning = tuning or StoreTuning()
        self._cache = Cache(self.tuning.block_cache_bytes)  # one cache for all column families
        names = Rdict.list_cf(str(self.path)) if (self.path / "CURRENT").exists() else []
        cfs = {
            n: self._options(bloom=bucket_number(n) is not None) for n in names if n != "default"
        }
        cfs.setdefault("exp", self._options())
        self._db = Rdict(str(self.path), self._options(), column_families=cfs)
        self._exp = self._db.get_column_family("exp")
        self._exp_h = self._db.get_column_family_handle("exp")
        self._meta_h = self._db.get_column_family_handle("default")
        raw = self._db.get(_META)
        self.meta = _meta_dec.decode(raw) if raw is not None else StoreMeta()
        if not self.meta.buckets and "ids" in cfs:
            self.meta.buckets = self._adopt_unbucketed()
        self._cfs: dict[int, object] = {}  # bucket -> its column family (an Rdict), oldest first
        self._handles: dict[int, object] = {}
        self._next_number = 0  # above every bucket number used (a dropped one is not reused)
        self._mem: dict[int, MemBucket] = {}  # the open bucket (filled from the expiry blobs)
        for bucket in self.meta.buckets:
            self._attach(bucket.number)
            if bucket.in_memory:
                self._mem[bucket.number] = MemBucket()
        for name in cfs:  # column families of buckets no meta names: orphans of a crash
            number = bucket_number(name)
            if number is not None and number not in self._cfs:
                self._next_number = max(self._next_number, number + 1)
                self._db.drop_column_family(name)
        t = self.tuning
        self.filter = IdFilter(t.filter_bytes_per_generation * 8, 4, t.max_filter_generations)
        self._rebuild_filter()
        lineage = self._db.get(_LINEAGE)
        self.lineage = lineage.decode() if lineage is not None else self.renew_lineage()
        self.current = Generation()
        self.inflight: Generation | None = None
        self._temp: str | None = None

    @classmethod
    def temporary(cls, horizon_ms: int, tuning: StoreTuning | None = None) -> IdStore:
        """A store in a fresh temporary directory, removed on `close` (tests and tools)."""
        tmp = tempfile.mkdtemp(prefix="clickagg-ids-")
        small = StoreTuning(
            block_cache_bytes=8 << 20,
            write_buffer_bytes=1 << 20,
            write_buffers=2,
            filter_bytes_per_generation=1 << 16,
        )
        store = cls(Path(tmp) / "ids", horizon_ms, tuning or small)
        store._temp = tmp
        weakref.finalize(store, shutil.rmtree, tmp, True)  # also when never closed
        return store

    def _options(self, bloom: bool = False):
        from rocksdict import BlockBasedIndexType, BlockBasedOptions, DBCompressionType, Options

        t = self.tuning
        o = Options(raw_mode=True)
        o.create_if_missing(True)
        o.create_missing_column_families(True)
        o.set_write_buffer_size(t.write_buffer_bytes)
        o.set_max_write_buffer_number(t.write_buffers)
        o.set_max_background_jobs(2)
        o.set_keep_log_file_num(2)
        # random 128-bit ids do not compress; the expiry blobs are the same ids again
        o.set_compression_type(DBCompressionType.none())
        b = BlockBasedOptions()
        b.set_block_cache(self._cache)
        # Index and filters count against the cache (memory bounded by configuration), split in
        # small partitions so that any of them fits a cache shard: a whole-file filter of a
        # large SST is bigger than a shard, was never cached, and each miss then read it again
        # (13 us per lookup at 20 M ids with a 64 MiB cache, 0.6 us partitioned).
        b.set_cache_index_and_filter_blocks(True)
        b.set_pin_l0_filter_and_index_blocks_in_cache(True)
        b.set_index_type(BlockBasedIndexType.two_level_index_search())
        b.set_partition_filters(True)
        b.set_metadata_block_size(4096)
        b.set_pin_top_level_index_and_filter(True)
        if bloom:
            b.set_bloom_filter(t.bloom_bits_per_key, False)
            # (no bloom filter in the write buffers: the in-memory `IdFilter` screens lookups
            # now, and the buffer's filter cost 0.2 us per id written)
        o.set_block_based_table_factory(b)
        return o

    # --- buckets -----------------------------------------------------------------------------
    def _attach(self, number: int) -> None:
        """Open (or create) a bucket's column family. The maps are replaced, never mutated:
        lookups on the event loop read them while the flush thread changes them."""
        name = bucket_cf(number)
        try:
            cf = self._db.get_column_family(name)
        except Exception:  # noqa: BLE001 - not created yet (a new bucket)
            cf = self._db.create_column_family(name, self._options(bloom=True))
        self._cfs = {**self._cfs, number: cf}
        self._next_number = max(self._next_number, number + 1)
        self._handles = {**self._handles, number: self._db.get_column_family_handle(name)}

    def _adopt_unbucketed(self) -> list[Bucket]:
        """A store written before buckets: its one column family of ids becomes bucket 0,
        spanning the minutes its expiry index holds."""
        minutes = [_MINUTE.unpack(k[:4])[0] for k in self._exp.keys()]
        if not minutes:
            return []
        return [Bucket(0, max(minutes), max(minutes), self.meta.live_ids)]

    def _open_bucket(self, meta: StoreMeta, minutes: list[int]) -> Bucket:
        """The bucket this flush writes into (`meta.buckets[-1]`), a new one if the open one is
        full or spans too long with these minutes; its column family exists on return."""
        buckets = meta.buckets
        last = buckets[-1] if buckets else None
        hi = max(minutes)
        if (
            last is None
            or not last.in_memory  # (a store written before in-memory buckets: seal its last)
            or last.ids >= self.tuning.bucket_ids
            or hi - last.opened_minute >= self.seal_minutes
        ):
            number = self._next_number  # (never one in use, nor one dropped after this write)
            if last is not None:
                self._seal(last)
            last = Bucket(number, hi, hi, in_memory=True)
            buckets.append(last)
            self._attach(number)
        last.last_minute = max(hi, last.last_minute)
        return last

    def _seal(self, bucket: Bucket) -> None:
        """No more writes go to this bucket (`bucket` is the copy of the meta being written):
        an in-memory one is written to its column family as ONE sorted SST file, ingested
        (no memtable, no compaction); its memory goes once the meta saying so is written. A
        crash before that write leaves the meta saying "in memory": it is rebuilt from the
        blobs and written again at its next seal (the ingested copy is harmless)."""
        cf = self._cfs.get(bucket.number)
        mem = self._mem.get(bucket.number)
        if not bucket.in_memory or mem is None:
            if cf is not None:
                cf.flush()  # its write buffer goes to disk now (memory)
            return
        keys, values = mem.items()
        if keys:
            from rocksdict import IngestExternalFileOptions, SstFileWriter

            path = self.path / f"seal-{bucket.number}.sst"
            writer = SstFileWriter(options=self._options(bloom=True))
            writer.open(str(path))
            deque(map(writer.__setitem__, keys, values), maxlen=0)  # (loop: ~0.36 us/id)
            writer.finish()
            opts = IngestExternalFileOptions()
            opts.set_move_files(True)
            cf.ingest_external_file([str(path)], opts)
            path.unlink(missing_ok=True)
        bucket.in_memory = False

    def _drop_buckets(self, numbers: list[int]) -> None:
        """Drop buckets whose every minute expired: their files go at once. (A lookup still
        holding one reads it to the end: RocksDB keeps a dropped column family's data while a
        handle refers to it.)"""
        gone = set(numbers)
        self._mem = {n: m for n, m in self._mem.items() if n not in gone}
        self._cfs = {n: cf for n, cf in self._cfs.items() if n not in gone}
        self._handles = {n: h for n, h in self._handles.items() if n not in gone}
        for n in numbers:
            self._db.drop_column_family(bucket_cf(n))
        self.filter.drop(gone)

    # --- lookups (the per-click loop) --------------------------------------------------------
    def _rebuild_filter(self) -> None:
        """The filter from the expiry index: every stored 16-byte id of a live minute is in one
        of its packed blocks, by minute and bucket (O(stored bytes), numpy, no Python work per
        id). Keys of an unbucketed store's index (13 bytes) are bucket 0's."""
        live, mem = {b.number for b in self.meta.buckets}, self._mem
        for key, value in self._exp.items():
            bucket = int.from_bytes(key[13:17], "big") if len(key) > 13 else 0
            if key[4:5] == _ADDED and bucket in live:
                self.filter.add_block(bucket, value)
            if bucket in mem:  # the open bucket's ids, back in memory
                minute = _MINUTE.unpack(key[:4])[0]
                if key[4:5] == _ADDED:
                    mem[bucket].add(minute, value)
                else:
                    mem[bucket].add_others(minute, _keys_dec.decode(value))

    def _read(self, number: int, keys: list[bytes], order: list[int], out) -> list[int]:
        """Multi-get `keys[i]` for `i` in `order` from one bucket into `out`; the misses."""
        mem = self._mem.get(number)
        if mem is not None:
            return mem.read(keys, order, out)
        cf = self._cfs.get(number)
        if cf is None or not order:  # (dropped meanwhile: all its minutes expired)
            return order
        rest = []
        for i, raw in zip(order, cf[[keys[i] for i in order]], strict=True):
            if raw is None:
                rest.append(i)
            else:
                out[i] = raw
        return rest

    def _newest(self, keys: list[bytes], order: list[int], out: list[bytes | None]) -> None:
        """Fill `out[i]` for `i` in `order` from the newest bucket holding `keys[i]`."""
        for number in reversed(list(self._cfs)):
            order = self._read(number, keys, order, out)

    def lookup(self, keys: list[bytes], packed: bytes | None = None) -> list[bytes | None]:
        """RocksDB's value for each key (from the newest bucket holding it), or None
        (`minute_of_value` reads a value). With `packed` (every key is a 16-byte id, these are
        they back to back) the filter rules most keys out and names the buckets of the rest
        (one multi-get per bucket). The caller checks `current` and `inflight` first: they are
        newer than RocksDB."""
        out: list[bytes | None] = [None] * len(keys)
        if packed is None:
            self._newest(keys, list(range(len(keys))), out)
            return out
        todo = np.ones(len(keys), dtype=bool)  # not found yet
        for buckets, maybe in self.filter.candidates(packed):  # newest generation first
            order = np.flatnonzero(maybe & todo).tolist()
            if not order:
                continue
            missed = order
            for number in reversed(buckets):
                missed = self._read(number, keys, missed, out)
            found = set(order).difference(missed)
            if found:
                todo[list(found)] = False
        return out

    def stored_minute(self, key: bytes) -> int | None:
        """The minute (ms) of a key in RocksDB alone (newest bucket; tests and tools)."""
        out: list[bytes | None] = [None]
        self._newest([key], [0], out)
        return None if out[0] is None else minute_of_value(out[0])

    def __len__(self) -> int:
        """Live ids: flushed ones plus those of the unflushed generations (an id remembered
        anew after its horizon counts once)."""
        pending = {**(self.inflight.minute_of if self.inflight else {}), **self.current.minute_of}
        keys = list(pending)
        got: list[bytes | None] = [None] * len(keys)
        self._newest(keys, list(range(len(keys))), got)
        alive = self.meta.expired_upto
        fresh = sum(1 for raw in got if raw is None or int.from_bytes(raw, "big") < alive)
        return self.meta.live_ids + fresh

    # --- checkpoints -------------------------------------------------------------------------
    def take(self) -> Generation:
        """The current generation becomes the one being written (the previous one must have been
        flushed or dropped: checkpoints are written one at a time)."""
        if self.inflight is not None:
            raise RuntimeError("a checkpoint's ids are still being written")
        gen, self.current = self.current, Generation()
        self.inflight = gen
        return gen

    def drop_unflushed(self) -> None:
        """Forget both generations (a rewind to the durable state)."""
        self.current, self.inflight = Generation(), None

    def flush(
        self,
        blocks: list[tuple[int, bytes]],
        others: list[tuple[int, list[bytes]]],
        meta: StoreMeta,
        extra: bytes,
        watermark: int,
    ) -> int:
        """Apply one changelog record's ids and the state after it, expiring what its watermark
        expired, in ONE atomic write. Returns the number of ids expired.

        `blocks`: 16-byte keys packed per minute; `others`: keys of non-hex ids per minute.
        An id is only remembered anew once its old minute is expired by the rule, so by a
        watermark at most this record's: its old copy (in an older bucket, or overwritten in
        the open one) no longer counts and the new one is written into the open bucket. Ids
        whose minute is already expired are not stored (the rule treats them as new anyway).
        So `live_ids` stays exact: the expired minutes' blobs count what leaves, the written
        ids what comes. Blocking (RocksDB writes with the GIL released): the worker runs it off
        the event loop."""
        from rocksdict import WriteBatch

        wb = WriteBatch(raw_mode=True)
        first_alive = max(self.meta.expired_upto, -(-(watermark - self.span_ms) // MINUTE_MS))
        expired = self._expire_into(wb, first_alive)
        doomed = [b.number for b in self.meta.buckets if b.last_minute < first_alive]
        meta.buckets = [  # copies: `self.meta` stays as it is until the write succeeded
            msgspec.structs.replace(b) for b in self.meta.buckets if b.last_minute >= first_alive
        ]
        blocks = [(m, blk) for m, blk in blocks if m // MINUTE_MS >= first_alive and blk]
        others = [(m, keys) for m, keys in others if m // MINUTE_MS >= first_alive and keys]
        put, exp_h = wb.put, self._exp_h
        seq = meta.seq = self.meta.seq + 1
        live = self.meta.live_ids - expired
        bucket = None
        if blocks or others:
            bucket = self._open_bucket(meta, [m // MINUTE_MS for m, _ in blocks + others])
            # the open bucket's ids go into memory after the write; what makes them durable
            # is the expiry-index blob written here, per minute (it rebuilds them on open)
            tag = seq.to_bytes(8, "big") + bucket.number.to_bytes(4, "big")
            for minute, block in blocks:
                n = len(block) // 16
                live += n
                bucket.ids += n
                put(_MINUTE.pack(minute // MINUTE_MS) + _ADDED + tag, block, exp_h)
            for minute, keys in others:
                live += len(keys)
                bucket.ids += len(keys)
                raw = _MINUTE.pack(minute // MINUTE_MS)
                put(raw + _OTHERS + tag, _keys_enc.encode(keys), exp_h)
        meta.expired_upto = first_alive
        meta.live_ids = live
        put(_META, _meta_enc.encode(meta), self._meta_h)
        put(_EXTRA, extra, self._meta_h)
        self._db.write(wb)
        self.meta = meta
        in_memory = {b.number for b in meta.buckets if b.in_memory}
        mems = {n: m for n, m in self._mem.items() if n in in_memory}
        if bucket is not None:  # after the write: a key is looked up once stored
            mem = mems.get(bucket.number)
            mem = MemBucket() if mem is None else mem
            for minute, block in blocks:
                mem.add(minute // MINUTE_MS, block)
            for minute, keys in others:
                mem.add_others(minute // MINUTE_MS, keys)
            mems[bucket.number] = mem
        self._mem = mems  # (sealed buckets' memory goes: they are read from RocksDB now)
        for _minute, block in blocks:
            self.filter.add_block(bucket.number, block)
        if doomed:  # after the write that forgot them (a crash before: orphans, dropped on open)
            self._drop_buckets(doomed)
        return expired

    def _expire_into(self, wb, first_alive: int) -> int:
        """Range-delete, into `wb`, the expiry-index blobs of every minute index below
        `first_alive` (the rule of `DedupSet.expired`: minute m is expired once m + span <
        watermark). Returns how many ids they held (the ids themselves go with their bucket)."""
        if first_alive <= self.meta.expired_upto:
            return 0
        end = _MINUTE.pack(first_alive)
        n, found = 0, False
        for key, value in self._exp.items():
            if key >= end:
                break
            found = True
            n += len(value) // 16 if key[4:5] == _ADDED else len(_keys_dec.decode(value))
        if found:
            wb.delete_range(b"", end, self._exp_h)
        return n

    # --- recovery ----------------------------------------------------------------------------
    def extra(self) -> bytes | None:
        return self._db.get(_EXTRA)

    def stats(self) -> dict[str, int]:
        """Sizes for metrics and the capacity model."""

        def prop(cf, name: str) -> int:
            try:
                return int(cf.property_int_value(name) or 0)
            except Exception:  # noqa: BLE001 - a property this RocksDB does not know
                return 0

        cfs = [*self._cfs.values(), self._exp]
        return {
            "live_ids": self.meta.live_ids,
            "stored_ids": sum(b.ids for b in self.meta.buckets),
            "buckets": len(self.meta.buckets),
            "sst_bytes": sum(prop(cf, "rocksdb.total-sst-files-size") for cf in cfs),
            "memtable_bytes": sum(prop(cf, "rocksdb.cur-size-all-mem-tables") for cf in cfs),
            "block_cache_bytes": prop(self._exp, "rocksdb.block-cache-usage"),
            "filter_bytes": self.filter.memory_bytes,
            "memory_bucket_ids": sum(m.ids for m in self._mem.values()),
        }

    def stored(self) -> dict[bytes, int]:
        """Every live stored id with its minute (ms): the newest copy of each key, of a minute
        not expired. By a full scan (tests)."""
        out: dict[bytes, int] = {}
        for number, cf in self._cfs.items():  # oldest first: newer copies overwrite
            mem = self._mem.get(number)
            pairs = zip(*mem.items(), strict=True) if mem is not None else cf.items()
            for key, raw in pairs:
                out[key] = minute_of_value(raw)
        alive = max(self.meta.expired_upto, 0) * MINUTE_MS
        return {k: m for k, m in out.items() if m >= alive}

    def count_stored(self) -> int:
        """Live stored ids (`stored`), by a full scan (tests and the soak's expiry check)."""
        return len(self.stored())

    def count_keys(self) -> int:
        """Every id key stored, expired or not, by a full scan (the soak's bound on what
        expiry leaves behind): the keys of the buckets in RocksDB and of the one in memory."""
        mem = self._mem
        on_disk = sum(1 for n, cf in self._cfs.items() if n not in mem for _ in cf.keys())
        return on_disk + sum(m.distinct() for m in mem.values())

    def renew_lineage(self) -> str:
        """A new name for this store's life on this disk (snapshots name its files by it: a
        store restored from a snapshot writes files of its own under the same names)."""
        self.lineage = uuid.uuid4().hex[:12]
        self._db.put(_LINEAGE, self.lineage.encode())
        return self.lineage

    def checkpoint_to(self, target: Path) -> None:
        """A consistent on-disk copy (hard links where possible) of the flushed state; call it
        between flushes (the worker does, in the thread that flushes)."""
        from rocksdict import Checkpoint

        Checkpoint(self._db).create_checkpoint(str(target))

    def close(self) -> None:
        """Release the RocksDB (its lock is only freed once no handle refers to it)."""
        if self._db is None:
            return
        for cf in self._cfs.values():
            cf.close()
        self._exp.close()
        self._cfs, self._handles = {}, {}
        self._exp_h = self._meta_h = self._exp = None
        self._db.close()
        self._db = None
        if self._temp:
            shutil.rmtree(self._temp, ignore_errors=True)

    def destroy(self) -> None:
        """Close and delete the store (its state is stale: it is rebuilt from elsewhere)."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
