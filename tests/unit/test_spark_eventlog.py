"""benchmarks/spark_eventlog.py: per-stage figures from Spark's event log.

The fixture is a real Spark 4.0 event log (trimmed to the events read) of
`spark.range(200000)` -> row_number over a window of 97 keys -> groupBy count -> collect, run
in job group "day": job 0 (stage 0, 2 tasks) and job 1 (stage 1 skipped, stage 2, 1 task)."""

import json
from pathlib import Path

from benchmarks.spark_eventlog import eventlog_conf, log_file, summarize, table_rows

FIXTURE = Path(__file__).parent / "data" / "spark40_eventlog.jsonl"


def _events():
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_real_spark_log():
    s = summarize(FIXTURE.read_text().splitlines(), "day")
    ev = _events()
    start = next(e for e in ev if e["Event"] == "SparkListenerJobStart")["Submission Time"]
    end = [e for e in ev if e["Event"] == "SparkListenerJobEnd"][-1]["Completion Time"]
    assert s.jobs == 2
    assert s.wall_ms == end - start
    assert [st.stage_id for st in s.stages] == [0, 2]  # stage 1 was skipped: never ran
    assert [st.tasks for st in s.stages] == [2, 1]
    assert s.stages[0].input_rows == 200_000
    assert s.stages[0].shuffle_write_bytes > 0 and s.stages[1].shuffle_read_bytes > 0
    assert s.stages[0].kind() == "- -> shuffle" and s.stages[1].kind() == "shuffle -> result"
    walls = [st.wall_ms for st in s.stages]
    assert s.in_stages_ms == sum(walls)  # the two stages ran one after the other
    assert s.outside_stages_ms == s.wall_ms - sum(walls) > 0
    assert "duration" in s.stages[0].sql_ms
    rows = table_rows(s)
    assert len(rows) == 3 and rows[-1][0].startswith("all 2 jobs")


def _job(job, stages, group, t0, t1):
    return [
        {
            "Event": "SparkListenerJobStart",
            "Job ID": job,
            "Submission Time": t0,
            "Stage IDs": stages,
            "Properties": {"spark.jobGroup.id": group},
        },
        {"Event": "SparkListenerJobEnd", "Job ID": job, "Completion Time": t1},
    ]


def _stage(sid, t0, t1, run, cpu_ns, input_bytes=0):
    task = {
        "Event": "SparkListenerTaskEnd",
        "Stage ID": sid,
        "Task Metrics": {
            "Executor Run Time": run,
            "Executor CPU Time": cpu_ns,
            "JVM GC Time": 1,
            "Input Metrics": {"Bytes Read": input_bytes, "Records Read": 10},
        },
    }
    done = {
        "Event": "SparkListenerStageCompleted",
        "Stage Info": {
            "Stage ID": sid,
            "Submission Time": t0,
            "Completion Time": t1,
            "Accumulables": [{"Name": "sort time", "Value": "7"}, {"Name": "x", "Value": 9}],
        },
    }
    return [task, task, done]


def test_other_groups_excluded_and_overlaps_counted_once():
    lines = [
        *_job(0, [0, 1], "other", 0, 50),
        *_stage(0, 0, 50, 5, 1_000_000),
        *_job(1, [2, 3], "day", 100, 400),
        *_stage(2, 110, 200, 40, 20_000_000, input_bytes=5),
        *_stage(3, 150, 300, 60, 30_000_000),  # overlaps stage 2 by 50 ms
    ]
    s = summarize([json.dumps(e) for e in lines], "day")
    assert s.jobs == 1 and s.wall_ms == 300
    assert [st.stage_id for st in s.stages] == [2, 3]
    assert s.in_stages_ms == 190 and s.outside_stages_ms == 110
    a, b = s.stages
    assert (a.tasks, a.run_ms, a.cpu_ms, a.gc_ms, a.input_rows) == (2, 80, 40.0, 2, 20)
    assert a.sql_ms == {"sort time": 7} and a.kind() == "scan -> result"
    assert b.cpu_ms == 60.0


def test_conf_and_log_file(tmp_path):
    conf = dict(eventlog_conf(tmp_path / "ev"))
    assert conf["spark.eventLog.enabled"] == "true"
    assert conf["spark.eventLog.dir"].startswith("file:///")
    (tmp_path / "ev" / "local-1.inprogress").write_text("")
    assert log_file(tmp_path / "ev").name == "local-1.inprogress"


def test_unended_job_is_open():
    lines = _job(0, [0], "day", 0, 10)[:1] + _stage(0, 0, 5, 1, 1)
    s = summarize([json.dumps(e) for e in lines], "day")
    assert s.jobs == 1 and s.open_jobs == 1 and s.wall_ms == 0
