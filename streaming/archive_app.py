"""The raw archiver: `faust -A streaming.archive_app worker` (own group, own process).

Writes every source record to the lake (`CLICKAGG_LAKE_URL`, file:// by default, s3:// through
the same code) as Parquet per (partition, offset block); see streaming/archiver.py and
clickagg_platform/lake.py. Web server (127.0.0.1, `CLICKAGG_STREAM_ARCHIVE_WEB_PORT`) serves
`/metrics` with the archive lag.
"""

from __future__ import annotations

from clickagg_platform.settings import get_settings
from streaming.archiver import Archiver
from streaming.config import get_stream_settings
from streaming.hosting import make_app

settings = get_settings()
stream_settings = get_stream_settings()

app, engine = make_app(
    f"{stream_settings.app_id}-archive",
    stream_settings.archive_web_port,
    settings,
    stream_settings,
    lambda: Archiver(settings, stream_settings),
)
