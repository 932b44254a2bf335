"""The Alertmanager webhook receiver's pure part: one JSON line per alert, bad payloads refused."""

from __future__ import annotations

import json

import pytest

from clickagg_platform.alert_log import alert_lines


def test_one_line_per_alert_with_its_status_labels_and_annotations():
    payload = {
        "receiver": "alert-log",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "A", "instance": "x"},
                "annotations": {"runbook": "docs/operations.md#a"},
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
            },
            {"status": "resolved", "labels": {"alertname": "B"}},
        ],
    }
    rows = [json.loads(line) for line in alert_lines(payload)]
    assert [(r["alertname"], r["status"]) for r in rows] == [("A", "firing"), ("B", "resolved")]
    assert rows[0]["annotations"] == {"runbook": "docs/operations.md#a"}
    assert rows[0]["labels"]["instance"] == "x" and rows[1]["receiver"] == "alert-log"


@pytest.mark.parametrize("bad", [None, [], {"status": "firing"}, {"alerts": "x"}])
def test_a_payload_without_an_alerts_list_is_refused(bad):
    with pytest.raises(ValueError, match="no 'alerts' list"):
        alert_lines(bad)
