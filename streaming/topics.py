"""Names and creation of the stream's topics: source, IP-keyed forward topic, changelogs."""

from __future__ import annotations

from pathlib import Path

from aiokafka import TopicPartition as TP
from confluent_kafka.admin import NewTopic

from clickagg_platform import kafka_admin
from clickagg_platform.settings import Settings
from streaming.config import StreamSettings


class StreamTopics:
    def __init__(self, settings: Settings, ss: StreamSettings) -> None:
        self.s, self.ss = settings, ss
        self.source = settings.clicks_topic
        prefix = f"{ss.app_id}-{settings.clicks_topic}"
        self.forward = f"{prefix}-by-ip"
        self.counter_changelog = f"{prefix}-counter-changelog"
        self.iprate_changelog = f"{prefix}-iprate-changelog"
        self.partitions = settings.clicks_partitions
        self.state_dir: Path = ss.state_path(settings)

    def changelog_of(self, tp: TP) -> TP:
        name = self.counter_changelog if tp.topic == self.source else self.iprate_changelog
        return TP(name, tp.partition)

    def local_path(self, tp: TP) -> Path:
        return self.state_dir / f"{self.changelog_of(tp).topic}-{tp.partition}"

    def ensure(self) -> None:
        """Source must exist with the configured partitions; internal topics get as many."""
        kafka_admin.wait_for_broker(self.s, timeout_s=60)
        kafka_admin.ensure_topic(self.s)
        md = kafka_admin.admin(self.s).list_topics(self.source, timeout=10)
        self.partitions = len(md.topics[self.source].partitions)
        retention_ms = (self.ss.horizon_ms + self.ss.allowed_lateness_ms) * 2 + 3_600_000
        changelog_conf = {
            "cleanup.policy": "delete",
            "retention.ms": str(retention_ms),
            "max.message.bytes": str(16 * 1024 * 1024),
        }
        forward_conf = {"retention.ms": str(retention_ms), "max.message.bytes": "16777216"}
        wanted = [
            NewTopic(self.forward, self.partitions, self.s.clicks_replication, config=forward_conf),
            *(
                NewTopic(name, self.partitions, self.s.clicks_replication, config=changelog_conf)
                for name in (self.counter_changelog, self.iprate_changelog)
            ),
        ]
        a = kafka_admin.admin(self.s)
        existing = a.list_topics(timeout=10).topics
        missing = [t for t in wanted if t.topic not in existing]
        if missing:
            for fut in a.create_topics(missing).values():
                try:
                    fut.result(timeout=30)
                except Exception as exc:  # another worker created it first: fine
                    if "TOPIC_ALREADY_EXISTS" not in str(exc):
                        raise


def internal_topics(names: list[str], app_id: str, source: str) -> list[str]:
    """The stream's own topics for (app id, source topic) among `names` (for cleanup tools)."""
    prefix = f"{app_id}-"
    return [n for n in names if n.startswith(prefix) and source in n]
