"""The stream worker: `faust -A streaming.app worker` (env vars: docs/streaming.md).

Stage 1 (dedup, bot rule, event-time minutes) and stage 2 (per-IP rate rule) with the
ClickHouse publisher run in `StreamRunner`, hosted by Faust (streaming/hosting.py).
processing_guarantee is "at_least_once" on purpose: effectively-once comes from deterministic
processing + one-record atomic state checkpoints + an absolute, versioned, idempotent sink, so
no Kafka transactions are needed (docs/streaming.md explains the crash cases).
"""

from __future__ import annotations

from clickagg_platform.settings import get_settings
from streaming.config import get_stream_settings
from streaming.hosting import make_app
from streaming.runner import StreamRunner

settings = get_settings()
stream_settings = get_stream_settings()

app, engine = make_app(
    stream_settings.app_id,
    stream_settings.web_port,
    settings,
    stream_settings,
    lambda: StreamRunner(settings, stream_settings),
)
handle_commands = engine["agent"]
