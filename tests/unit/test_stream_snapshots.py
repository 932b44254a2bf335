"""Snapshots of a stage-1 store in the object store (a local file:// root here, the same code as
s3://): a restored store holds exactly the ids and offsets of the one snapshotted; SST files are
uploaded once per lineage; only the two newest snapshots and their files are kept; a snapshot
the changelog no longer continues is never chosen."""

from __future__ import annotations

import copy
import os

from clickagg_platform.settings import Settings
from streaming.logic.idstore import IdStore, StoreMeta
from streaming.snapshots import SnapshotStore, usable

MIN = 60_000
HORIZON = 3_600_000


def fill(store: IdStore, n: int, minute: int, changelog_offset: int) -> None:
    meta = StoreMeta(changelog_offset, changelog_offset * 10, minute, seq=0)
    store.flush([(minute, os.urandom(16 * n))], [], meta, b"windows", minute)


def snapshot(store: IdStore, snaps: SnapshotStore, tmp_path, name="clicks-counter-0"):
    target = tmp_path / f"ckpt-{store.meta.changelog_offset}"
    store.checkpoint_to(target)
    return snaps.upload(name, target, store.lineage, copy.copy(store.meta))


def test_restore_gives_the_same_state_and_uploads_are_incremental(tmp_path):
    snaps = SnapshotStore(f"file://{tmp_path / 'lake'}", "app", Settings())
    store = IdStore(tmp_path / "a", HORIZON)
    for c in range(3):
        fill(store, 20_000, 100 * MIN + c * MIN, c)
        store._db.flush()  # an SST per step (as the write buffers would, at scale)
    first = snapshot(store, snaps, tmp_path)
    fill(store, 20_000, 104 * MIN, 3)
    store._db.flush()
    second = snapshot(store, snaps, tmp_path)
    shared = {n for n in first.files if n.endswith(".sst")} & set(second.files)
    assert shared and all(first.files[n] == second.files[n] for n in shared)  # not re-copied

    restored_dir = tmp_path / "b"
    m = snaps.restore("clicks-counter-0", restored_dir, begin=0, end=10)
    assert m.changelog_offset == 3
    b = IdStore(restored_dir, HORIZON)
    assert b.stored() == store.stored() and len(b.stored()) == 80_000
    assert (b.meta.changelog_offset, b.meta.next_offset, b.meta.live_ids) == (3, 30, 80_000)
    assert b.extra() == b"windows"
    assert b.filter.may_contain(b"".join(b.stored())).all()  # the filter was rebuilt
    assert b.lineage == store.lineage and b.renew_lineage() != store.lineage
    b.close()
    store.close()


def test_only_the_two_newest_snapshots_and_their_files_are_kept(tmp_path):
    snaps = SnapshotStore(f"file://{tmp_path / 'lake'}", "app", Settings())
    store = IdStore(tmp_path / "a", HORIZON)
    manifests = []
    for c in range(4):
        fill(store, 5_000, 100 * MIN + c * MIN, c)
        store._db.flush()
        manifests.append(snapshot(store, snaps, tmp_path))
    assert sorted(snaps.manifests("clicks-counter-0")) == [2, 3]
    files = set(os.listdir(tmp_path / "lake/app/clicks-counter-0/files"))
    assert files == set(manifests[2].files.values()) | set(manifests[3].files.values())
    store.close()


def test_a_snapshot_is_usable_only_if_the_changelog_continues_it():
    assert usable([4, 9, 15], begin=0, end=16) == 15
    assert usable([4, 9, 15], begin=0, end=12) == 9  # 15 is past the end: the topic was reset
    assert usable([4, 9], begin=11, end=20) is None  # retention removed what follows them
    assert usable([4, 9], begin=10, end=20) == 9
    assert usable([], begin=0, end=5) is None
