"""What the benchmarks read about a process from /proc."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (`taskset` execs: same pid)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> int:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (RocksDB names its background threads
    ``rocksdb:low`` / ``rocksdb:high``: compactions / memtable flushes), summed over threads of
    the same name; threads that ended since are not counted."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def rocksdb_share(before: dict[str, float], after: dict[str, float]) -> float:
    """The share of a process's CPU between two `thread_cpu` readings spent in RocksDB's
    background threads."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    total = sum(delta.values())
    rocks = sum(v for k, v in delta.items() if k.startswith("rocksdb"))
    return rocks / total if total > 0 else 0.0
