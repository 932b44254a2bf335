"""Stream-specific knobs (env prefix ``CLICKAGG_STREAM_``), next to the platform `Settings`.

The fraud constants default to the ones the seeded traffic generator and its ground truth use
(`clickagg_platform.loadgen`), so stream, batch and ground truth share one definition.
"""

from __future__ import annotations

import hashlib
import socket
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clickagg_platform.loadgen import IP_RATE_THRESHOLD
from clickagg_platform.settings import Settings, get_settings


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLICKAGG_STREAM_", extra="ignore")

    app_id: str = Field("clickagg-stream", description="Faust app id; prefix of groups/topics")
    stages: str = Field(
        "all",
        pattern="^(all|counter|iprate)$",
        description="Stages this worker runs: all, counter (stage 1) or iprate (stage 2)",
    )
    dedup_horizon_s: int = Field(24 * 3600, description="Event-time span an event_id is kept")
    out_of_orderness_s: float = Field(5.0, description="Watermark = max event time minus this")
    allowed_lateness_s: float = Field(600.0, description="Corrections accepted past window end")
    ip_rate_threshold: int = Field(
        IP_RATE_THRESHOLD, description="More distinct clicks than this per (ip, minute) = fraud"
    )
    publish_interval_s: float = Field(1.0, description="How often dirty counts go to ClickHouse")
    checkpoint_interval_s: float = Field(1.0, description="How often state deltas are saved")
    checkpoint_max_events: int = Field(50_000, description="Checkpoint early after this many")
    checkpoint_timeout_s: float = Field(
        30.0, description="A checkpoint write not acked by Kafka within this fails (-> rewind)"
    )
    sink_backoff_max_s: float = Field(5.0, description="Longest wait between sink retries")
    fetch_max_records: int = Field(20_000, description="Records per consumer fetch")
    web_host: str = Field("127.0.0.1", description="Worker web server bind address")
    web_port: int = Field(16066, description="Worker web server port (/metrics)")
    state_dir: Path | None = Field(None, description="Local state; default <local_dir>/stream")
    instance_id: str = Field(
        "",
        description="Static consumer-group member id (KIP-345); default: host + state dir, so a"
        " worker restarted on its own disk rejoins with its partitions at once; 'none': dynamic",
    )
    state_block_cache_mb: int = Field(
        64, description="RocksDB block cache per stage-1 partition (bloom filters + hot blocks)"
    )
    state_write_buffer_mb: int = Field(
        8, description="RocksDB write buffer per stage-1 partition (x3 at most in memory)"
    )
    state_bucket_ids: int = Field(
        1_000_000,
        description="Ids a stage-1 partition writes into one RocksDB bucket (column family)"
        " before the next opens (also after 1/8 of the horizon); a bucket goes whole at expiry",
        gt=0,
    )
    state_filter_mb: int = Field(
        2,
        description="In-memory id filter per bucket per stage-1 partition; ~16 bits per id of a"
        " bucket keeps false positives ~0.3%",
        gt=0,
    )
    state_filter_generations: int = Field(
        32,
        description="Most filter arrays per stage-1 partition (past it the oldest merge): the"
        " filter's memory is at most this x CLICKAGG_STREAM_STATE_FILTER_MB",
        ge=2,
    )
    snapshot_url: str = Field(
        "", description="Where stage-1 state snapshots go; default <lake>/stream-state"
    )
    snapshot_interval_s: float = Field(
        600.0, description="Seconds between snapshots of a partition's state (0: none)"
    )
    # raw archive
    archive_web_port: int = Field(16067, description="Archiver web server port (/metrics)")
    archive_block_offsets: int = Field(
        5_000, description="Offsets per archive file: file k covers [k*N, (k+1)*N)"
    )
    archive_flush_interval_s: float = Field(
        10.0, description="Flush a partial block (as a part file) after this long"
    )

    def state_path(self, settings: Settings) -> Path:
        return self.state_dir or settings.local_dir / "stream"

    def group_instance_id(self, settings: Settings) -> str | None:
        if self.instance_id == "none":
            return None
        if self.instance_id:
            return self.instance_id
        state = str(self.state_path(settings).resolve())
        digest = hashlib.sha256(state.encode()).hexdigest()[:12]
        return f"{socket.gethostname()}-{self.stages}-{digest}"

    def snapshot_root(self, settings: Settings) -> str:
        return self.snapshot_url or f"{settings.lake_root.rstrip('/')}/stream-state"

    @property
    def horizon_ms(self) -> int:
        return int(self.dedup_horizon_s * 1000)

    @property
    def out_of_orderness_ms(self) -> int:
        return int(self.out_of_orderness_s * 1000)

    @property
    def allowed_lateness_ms(self) -> int:
        return int(self.allowed_lateness_s * 1000)


@lru_cache(maxsize=1)
def get_stream_settings() -> StreamSettings:
    return StreamSettings()


def both() -> tuple[Settings, StreamSettings]:
    return get_settings(), get_stream_settings()
