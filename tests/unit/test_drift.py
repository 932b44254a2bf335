"""Drift math: explained (too late for the stream) vs unexplained drift, missing keys."""

from clickagg_platform.drift import compare, summarize

M = 1_767_225_600_000


def test_statuses_and_summary():
    hot = {(M, "c1", "a1"): 10, (M, "c1", "a2"): 4, (M, "c2", "a1"): 3, (M, "c3", "a1"): 2}
    batch = {
        (M, "c1", "a1"): (10, 0),  # equal
        (M, "c1", "a2"): (5, 1),  # one click too late for the stream: explained
        (M, "c2", "a1"): (5, 0),  # the hot path lost 2
        (M, "c4", "a1"): (1, 0),  # missing in hot
    }
    rows = {(r.campaign_id, r.ad_id): r for r in compare(hot, batch)}
    assert rows["c1", "a1"].status == "ok"
    assert (rows["c1", "a2"].status, rows["c1", "a2"].unexplained) == ("late_only", 0)
    assert (rows["c2", "a1"].drift, rows["c2", "a1"].rel_drift) == (-2, 0.4)
    assert rows["c2", "a1"].status == "differs"
    assert rows["c3", "a1"].status == "missing_in_batch" and rows["c3", "a1"].rel_drift == 1.0
    assert rows["c4", "a1"].status == "missing_in_hot"
    s = summarize(list(rows.values()))
    assert (s.hot_total, s.batch_total, s.stream_too_late) == (19, 21, 1)
    assert s.unexplained_abs == 2 + 2 + 1 and not s.passed
    assert (s.keys_missing_in_hot, s.keys_missing_in_batch, s.keys_differing) == (1, 1, 1)
    assert "c2/a1@2026-01-01T00:00Z: hot=3 batch=5" in s.describe()
    assert summarize(list(rows.values()), max_unexplained_abs=5).passed
    assert summarize(list(rows.values()), max_unexplained_rel=0.25).passed
    assert not summarize(list(rows.values()), max_unexplained_rel=0.2).passed


def test_only_late_drift_passes_and_empty_is_clean():
    rows = compare({(M, "c1", "a1"): 7}, {(M, "c1", "a1"): (9, 2), (M, "c1", "a2"): (1, 1)})
    s = summarize(rows)
    assert s.passed and s.drift == -3 and s.unexplained_abs == 0
    assert [r.status for r in rows] == ["late_only", "late_only"]
    assert summarize(compare({}, {})).passed
