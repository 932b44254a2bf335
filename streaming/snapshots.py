"""Snapshots of stage 1's local stores in the object store, so a new machine restores a
partition's state in time proportional to the state, not to the changelog's history.

A snapshot is a RocksDB checkpoint of one partition's `IdStore` (hard links, taken between two
flushes, so it is exactly the state after one changelog record) copied to
``<root>/<app id>/<changelog topic>-<partition>/``:

- ``files/<lineage>-<name>``: the checkpoint's files. SST files never change once written, so
  an SST already uploaded by the same store lineage is not copied again (incremental, like
  Flink's RocksDB checkpoints); the small CURRENT/MANIFEST/OPTIONS files are copied each time.
  A lineage is one store's life on one disk: a restored store starts a new one, since two
  stores can both write a file named 000123.sst with different contents.
- ``snap-<changelog offset>.json``: the manifest, written last (a snapshot without one does
  not exist): the changelog offset the state is the result of, the next source offset, and
  the files. The two newest are kept, with the files they name; the rest is deleted.

Restoring picks the newest manifest the changelog continues (its offset + 1 is still in the
changelog and not past its end), copies its files into the local store's directory, and
recovery then reads only the changelog after it. Without a usable snapshot, recovery reads the
whole changelog, as before.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pyarrow import fs as pafs

from clickagg_platform import lake
from clickagg_platform.settings import Settings

log = logging.getLogger("clickagg.stream.snapshots")

_SNAP = "snap-"
KEEP = 2


@dataclass(frozen=True)
class Manifest:
    changelog_offset: int
    next_offset: int | None
    live_ids: int
    files: dict[str, str]  # local file name -> object name under files/
    taken_at: float

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        return cls(**json.loads(data))


def manifest_name(changelog_offset: int) -> str:
    return f"{_SNAP}{changelog_offset:020d}.json"


def usable(offsets: list[int], begin: int, end: int) -> int | None:
    """The newest snapshot offset c whose continuation the changelog [begin, end) still holds
    (c + 1 >= begin and c + 1 <= end), else None."""
    ok = [c for c in offsets if begin <= c + 1 <= end]
    return max(ok) if ok else None


def unreferenced(names: list[str], kept: list[Manifest]) -> list[str]:
    """Object names under files/ that no kept manifest needs."""
    needed = {obj for m in kept for obj in m.files.values()}
    return [n for n in names if n not in needed]


class SnapshotStore:
    def __init__(self, root: str, app_id: str, settings: Settings) -> None:
        self.root = f"{root.rstrip('/')}/{app_id}"
        self.settings = settings
        self.fs, self.base = lake.filesystem(self.root, settings)
        self._uploaded: dict[str, dict[str, int]] = {}  # partition dir -> object -> size

    def _dir(self, name: str) -> str:
        return f"{self.base}/{name}"

    # --- taking ------------------------------------------------------------------------------
    def upload(self, name: str, checkpoint_dir: Path, lineage: str, meta) -> Manifest:
        """Copy a local checkpoint directory as a snapshot of `name` (blocking: run it in a
        thread), then drop old snapshots. `checkpoint_dir` is removed afterwards."""
        try:
            base = self._dir(name)
            self.fs.create_dir(f"{base}/files", recursive=True)
            known = self._known_files(name)
            files: dict[str, str] = {}
            local = pafs.LocalFileSystem()
            for path in sorted(checkpoint_dir.iterdir()):
                if path.name.endswith(".sst"):
                    obj = f"{lineage}-{path.name}"
                else:  # CURRENT, MANIFEST-*, OPTIONS-*: change between snapshots
                    obj = f"{lineage}-{meta.changelog_offset}-{path.name}"
                size = path.stat().st_size
                if known.get(obj) != size:
                    self._put_file(path, f"{base}/files/{obj}", local)
                    known[obj] = size
                files[path.name] = obj
            manifest = Manifest(
                meta.changelog_offset, meta.next_offset, meta.live_ids, files, time.time()
            )
            self._write(f"{base}/{manifest_name(meta.changelog_offset)}", manifest.to_json())
            self._retain(name)
            return manifest
        finally:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def _put_file(self, path: Path, target: str, local: pafs.FileSystem) -> None:
        """Copy one file in; on a local root, a hard link where the filesystem allows (SST
        files never change, so a link is as good as a copy: no bytes moved on the checkpoint
        thread's core)."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            try:
                os.link(path, f"{target}.tmp")
                os.replace(f"{target}.tmp", target)
                return
            except OSError:  # another filesystem, or links not allowed: copy
                pass
        pafs.copy_files(str(path), target, source_filesystem=local, destination_filesystem=self.fs)

    def _write(self, path: str, data: bytes) -> None:
        if isinstance(self.fs, pafs.LocalFileSystem):  # temp name + rename: never half a file
            with self.fs.open_output_stream(f"{path}.tmp") as out:
                out.write(data)
            self.fs.move(f"{path}.tmp", path)
        else:  # an S3 PUT is atomic
            with self.fs.open_output_stream(path) as out:
                out.write(data)

    def _known_files(self, name: str) -> dict[str, int]:
        if name not in self._uploaded:
            infos = self._ls(f"{self._dir(name)}/files")
            self._uploaded[name] = {i.base_name: i.size for i in infos}
        return self._uploaded[name]

    def _ls(self, path: str) -> list[pafs.FileInfo]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=False))
        except FileNotFoundError:
            return []
        return [i for i in infos if i.type == pafs.FileType.File]

    def manifests(self, name: str) -> dict[int, str]:
        """changelog offset -> manifest path, of the snapshots of `name`."""
        out = {}
        for info in self._ls(self._dir(name)):
            b = info.base_name
            if b.startswith(_SNAP) and b.endswith(".json"):
                out[int(b[len(_SNAP) : -len(".json")])] = info.path
        return out

    def _read(self, path: str) -> Manifest:
        with self.fs.open_input_stream(path) as f:
            return Manifest.from_json(f.read())

    def _retain(self, name: str) -> None:
        snaps = self.manifests(name)
        offsets = sorted(snaps)
        kept = [self._read(snaps[c]) for c in offsets[-KEEP:]]
        for c in offsets[:-KEEP]:
            self.fs.delete_file(snaps[c])
        known = self._known_files(name)
        for obj in unreferenced(list(known), kept):
            try:
                self.fs.delete_file(f"{self._dir(name)}/files/{obj}")
            except FileNotFoundError:
                pass
            known.pop(obj, None)

    # --- restoring ---------------------------------------------------------------------------
    def restore(self, name: str, target: Path, begin: int, end: int) -> Manifest | None:
        """Copy the newest usable snapshot of `name` into the empty directory `target`
        (blocking). None if there is none: the caller reads the whole changelog."""
        snaps = self.manifests(name)
        c = usable(list(snaps), begin, end)
        if c is None:
            return None
        manifest = self._read(snaps[c])
        tmp = target.with_name(f"{target.name}.restoring-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        local = pafs.LocalFileSystem()
        try:
            for local_name, obj in manifest.files.items():
                pafs.copy_files(
                    f"{self._dir(name)}/files/{obj}",
                    str(tmp / local_name),
                    source_filesystem=self.fs,
                    destination_filesystem=local,
                )
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)  # a half-copied snapshot is never opened as a store
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest
