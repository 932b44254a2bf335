"""Partitions of the batch path: UTC event-time hours (raw, aggregates, drift) and UTC days
(billing). `end_offset=1` lists the current hour/day too, so an open period can be reconciled
ahead of time (idempotent); billing itself refuses a day that has not closed yet."""

from __future__ import annotations

import dagster as dg

START = "2024-01-01-00:00"

hourly = dg.HourlyPartitionsDefinition(start_date=START, timezone="UTC", end_offset=1)
daily = dg.DailyPartitionsDefinition(start_date=START[:10], timezone="UTC", end_offset=1)
