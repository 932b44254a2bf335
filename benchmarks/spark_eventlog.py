"""Where a Spark job's time goes, from Spark's own event log (what the Spark UI shows).

bench-reconcile runs its Spark session with `spark.eventLog.enabled` (plain JSON lines, no
rolling, no compression: `eventlog_conf`) and tags the timed job with a job group; `summarize`
then reads, for the jobs of that group only:

- per stage: wall time (submission to completion), tasks, the tasks' summed run time, CPU time
  and JVM GC time, rows and bytes read from files, shuffle bytes read and written, and the SQL
  operators' own timing metrics (sort, aggregation build, scan, whole-stage codegen);
- for the whole group: its wall time (first job submitted to last job completed), the time
  covered by at least one running stage, and the rest: driver-side planning, scheduling and
  result collection between stages ("outside stages").

Field names are those of Spark's JsonProtocol (SparkListenerJobStart / StageCompleted /
TaskEnd), checked against a 4.0 log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# SQL metrics in milliseconds that say where a stage's task time went
_SQL_TIMINGS = ("sort time", "time in aggregation build", "scan time", "duration")


@dataclass
class Stage:
    stage_id: int
    name: str = ""
    tasks: int = 0
    submitted: int = 0  # ms since the epoch
    completed: int = 0
    run_ms: int = 0  # summed over tasks
    cpu_ms: float = 0.0
    gc_ms: int = 0
    input_rows: int = 0
    input_bytes: int = 0
    shuffle_read_bytes: int = 0
    shuffle_write_bytes: int = 0
    sql_ms: dict[str, int] = field(default_factory=dict)

    @property
    def wall_ms(self) -> int:
        return max(self.completed - self.submitted, 0)

    def kind(self) -> str:
        """What the stage does, from its inputs and outputs."""
        reads = "scan" if self.input_bytes else ("shuffle" if self.shuffle_read_bytes else "-")
        writes = "shuffle" if self.shuffle_write_bytes else "result"
        return f"{reads} -> {writes}"


@dataclass
class Summary:
    group: str
    jobs: int
    wall_ms: int
    in_stages_ms: int  # time with at least one stage of the group running
    stages: list[Stage]
    open_jobs: int = 0  # started but not (yet) ended in the log

    @property
    def outside_stages_ms(self) -> int:
        return max(self.wall_ms - self.in_stages_ms, 0)


def eventlog_conf(directory: Path) -> tuple[tuple[str, str], ...]:
    """Spark settings for a readable event log in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    return (
        ("spark.eventLog.enabled", "true"),
        ("spark.eventLog.dir", directory.resolve().as_uri()),
        ("spark.eventLog.rolling.enabled", "false"),
        ("spark.eventLog.compress", "false"),
    )


def log_file(directory: Path) -> Path:
    """The (single) application's log in `directory`, finished or in progress."""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    if not files:
        raise FileNotFoundError(f"no Spark event log in {directory}")
    return files[-1]


def _union_ms(intervals: list[tuple[int, int]]) -> int:
    total, end = 0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def summarize(lines: Iterable[str], group: str) -> Summary:
    """The jobs of job group `group` in an event log's lines (see the module docstring)."""
    stage_ids: set[int] = set()
    job_times: dict[int, list[int]] = {}
    stages: dict[int, Stage] = {}
    for line in lines:
        if not line.strip():
            continue
        e = json.loads(line)
        kind = e.get("Event")
        if kind == "SparkListenerJobStart":
            if (e.get("Properties") or {}).get("spark.jobGroup.id") == group:
                job_times[e["Job ID"]] = [e["Submission Time"], None]
                stage_ids.update(e["Stage IDs"])
        elif kind == "SparkListenerJobEnd" and e["Job ID"] in job_times:
            job_times[e["Job ID"]][1] = e["Completion Time"]
        elif kind == "SparkListenerTaskEnd" and e["Stage ID"] in stage_ids:
            st = stages.setdefault(e["Stage ID"], Stage(e["Stage ID"]))
            m = e.get("Task Metrics") or {}
            st.tasks += 1
            st.run_ms += m.get("Executor Run Time", 0)
            st.cpu_ms += m.get("Executor CPU Time", 0) / 1e6  # ns
            st.gc_ms += m.get("JVM GC Time", 0)
            inp = m.get("Input Metrics") or {}
            st.input_rows += inp.get("Records Read", 0)
            st.input_bytes += inp.get("Bytes Read", 0)
            sr = m.get("Shuffle Read Metrics") or {}
            st.shuffle_read_bytes += sr.get("Remote Bytes Read", 0) + sr.get("Local Bytes Read", 0)
            st.shuffle_write_bytes += (m.get("Shuffle Write Metrics") or {}).get(
                "Shuffle Bytes Written", 0
            )
        elif kind == "SparkListenerStageCompleted":
            info = e["Stage Info"]
            if info["Stage ID"] not in stage_ids:
                continue
            st = stages.setdefault(info["Stage ID"], Stage(info["Stage ID"]))
            st.name = info.get("Stage Name", "")
            st.submitted = info.get("Submission Time") or 0
            st.completed = info.get("Completion Time") or 0
            for acc in info.get("Accumulables", []):
                name = acc.get("Name")
                if name in _SQL_TIMINGS:
                    try:
                        st.sql_ms[name] = st.sql_ms.get(name, 0) + int(acc.get("Value", 0))
                    except (TypeError, ValueError):
                        pass
    ran = [s for s in stages.values() if s.completed]  # skipped stages never complete
    ended = [t for t in job_times.values() if t[1] is not None]
    wall = max(t[1] for t in ended) - min(t[0] for t in ended) if ended else 0
    return Summary(
        group=group,
        jobs=len(job_times),
        wall_ms=wall,
        in_stages_ms=_union_ms([(s.submitted, s.completed) for s in ran]),
        stages=sorted(ran, key=lambda s: s.submitted),
        open_jobs=len(job_times) - len(ended),
    )


def wait_for_group(directory: Path, group: str, timeout_s: float = 30.0) -> Summary:
    """The group's summary once the log holds the end of each of its jobs (Spark's listener
    bus writes the log asynchronously, after the action returned)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        s = summarize(log_file(directory).read_text().splitlines(), group)
        if s.jobs and not s.open_jobs:
            return s
        if time.monotonic() > deadline:
            raise TimeoutError(f"the event log never showed job group {group!r} ended")
        time.sleep(0.1)


def table_rows(s: Summary) -> list[tuple[str, ...]]:
    """Markdown-ready rows: one per stage, then the totals."""
    rows = []
    for st in s.stages:
        ops = ", ".join(f"{k} {v / 1000:.1f}" for k, v in sorted(st.sql_ms.items()) if v)
        rows.append(
            (
                f"stage {st.stage_id} ({st.kind()})",
                f"{st.wall_ms / 1000:.2f}",
                f"{st.tasks}",
                f"{st.run_ms / 1000:.1f} / {st.cpu_ms / 1000:.1f} / {st.gc_ms / 1000:.1f}",
                f"{st.input_rows:,} rows, {st.input_bytes / 2**20:.0f} MiB",
                f"{st.shuffle_read_bytes / 2**20:.0f} / {st.shuffle_write_bytes / 2**20:.0f} MiB",
                ops,
            )
        )
    rows.append(
        (
            f"all {s.jobs} jobs: wall / in stages / outside stages",
            f"{s.wall_ms / 1000:.2f} / {s.in_stages_ms / 1000:.2f} / "
            f"{s.outside_stages_ms / 1000:.2f}",
            f"{sum(st.tasks for st in s.stages)}",
            f"{sum(st.run_ms for st in s.stages) / 1000:.1f} / "
            f"{sum(st.cpu_ms for st in s.stages) / 1000:.1f} / "
            f"{sum(st.gc_ms for st in s.stages) / 1000:.1f}",
            "",
            "",
            "",
        )
    )
    return rows


HEADER = (
    "stage (reads -> writes)",
    "wall s",
    "tasks",
    "task run / CPU / GC s",
    "read from files",
    "shuffle read / write",
    "operator time s (SQL metrics)",
)
