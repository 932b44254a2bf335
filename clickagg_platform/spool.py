"""A local append-only, fsync'd spool for clicks that Kafka could not ack in time.

Layout: ``<dir>/slot-<n>/<seq:016d>.seg``; each record is
``len:u32 | crc32:u32 | key_len:u16 | key | value``. A process owns one slot through an exclusive
``flock`` (a restarted process takes the same free slot back and drains what its predecessor
left). Appends go to the newest segment; the drainer seals it, replays sealed segments in order
and deletes a segment only after every record in it was acked. A torn tail (crash mid-write) is
detected by length/CRC and dropped: such a record was never acknowledged to a client, because a
click is answered only after the fsync that covers it returned.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

_HEADER = struct.Struct(">II")
_KEYLEN = struct.Struct(">H")
_MAX_RECORD = 1 << 20


class SpoolError(RuntimeError):
    pass


def encode_record(key: bytes, value: bytes) -> bytes:
    body = _KEYLEN.pack(len(key)) + key + value
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def read_records(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """Yield (key, value) of every intact record; stop silently at a torn or corrupt tail."""
    data = path.read_bytes()
    pos, end = 0, len(data)
    while pos + _HEADER.size <= end:
        length, crc = _HEADER.unpack_from(data, pos)
        body_start = pos + _HEADER.size
        if length > _MAX_RECORD or body_start + length > end:
            return
        body = data[body_start : body_start + length]
        if zlib.crc32(body) != crc:
            return
        (klen,) = _KEYLEN.unpack_from(body, 0)
        yield body[2 : 2 + klen], body[2 + klen :]
        pos = body_start + length


class Spool:
    """Thread-safe: appends come from the server's writer thread, drains from the drain task."""

    def __init__(self, root: Path, segment_bytes: int = 16 * 1024 * 1024, max_slots: int = 64):
        self.root = Path(root)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        self.dir, self._lock_fd = self._claim_slot(max_slots)
        self._counts: dict[Path, int] = {}
        for seg in self._segments():
            self._counts[seg] = sum(1 for _ in read_records(seg))
            if self._counts[seg] == 0:
                seg.unlink()
                del self._counts[seg]
        self._active: Path | None = None
        self._fd: int | None = None
        self._active_size = 0

    def _claim_slot(self, max_slots: int) -> tuple[Path, int]:
        for n in range(max_slots):
            slot = self.root / f"slot-{n}"
            slot.mkdir(exist_ok=True)
            fd = os.open(slot / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slot, fd
        raise SpoolError(f"all {max_slots} spool slots under {self.root} are in use")

    def _segments(self) -> list[Path]:
        return sorted(self.dir.glob("*.seg"))

    def _next_path(self) -> Path:
        segs = self._segments()
        seq = int(segs[-1].stem) + 1 if segs else 1
        return self.dir / f"{seq:016d}.seg"

    def _open_new(self) -> None:
        self._active = self._next_path()
        self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._active_size = 0
        self._counts[self._active] = 0
        _fsync_dir(self.dir)

    def _close_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._active = None

    @property
    def depth(self) -> int:
        """Records written and not yet drained."""
        with self._lock:
            return sum(self._counts.values())

    def append_many(self, records: list[tuple[bytes, bytes]]) -> None:
        """Write and fsync; returns only when every record is on disk (group commit)."""
        blob = b"".join(encode_record(k, v) for k, v in records)
        with self._lock:
            if self._fd is None or self._active_size >= self.segment_bytes:
                self._close_active()
                self._open_new()
            assert self._fd is not None and self._active is not None
            written = 0
            while written < len(blob):
                written += os.write(self._fd, blob[written:])
            os.fsync(self._fd)
            self._active_size += len(blob)
            self._counts[self._active] += len(records)

    def seal(self) -> list[Path]:
        """Close the active segment so it can be drained; return sealed segments, oldest first."""
        with self._lock:
            self._close_active()
            return [s for s in self._segments() if s in self._counts]

    def sealed(self) -> list[Path]:
        """Segments not being appended to, oldest first."""
        with self._lock:
            return [s for s in self._segments() if s in self._counts and s != self._active]

    def remove(self, segment: Path) -> None:
        """Drop a fully acked segment."""
        with self._lock:
            if segment == self._active:
                raise SpoolError("cannot remove the active segment")
            segment.unlink(missing_ok=True)
            self._counts.pop(segment, None)
            _fsync_dir(self.dir)

    def close(self) -> None:
        with self._lock:
            self._close_active()
            os.close(self._lock_fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
