"""Kafka as a Dagster resource: where the clicks topic lives (the raw archive's source)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class KafkaResource(dg.ConfigurableResource):
    """The clicks topic; the batch path reads its archive, and records the topic's end offsets
    next to what the archive holds, so a lagging archiver is visible in the UI."""

    bootstrap: str = Field("127.0.0.1:19092", description="Bootstrap servers")
    topic: str = Field("clicks", description="Topic of raw clicks")

    def end_offsets(self, timeout_s: float = 5.0) -> dict[int, int]:
        """{partition: high watermark} of the clicks topic ({} if the broker is unreachable)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "clickagg-dagster-probe",
                "enable.auto.commit": False,
            }
        )
        try:
            md = c.list_topics(timeout=timeout_s)  # all topics: never auto-creates ours
            t = md.topics.get(self.topic)
            if t is None or t.error is not None:
                return {}
            out = {}
            for p in t.partitions:
                _low, high = c.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=timeout_s
                )
                out[p] = high
            return out
        except Exception:  # noqa: BLE001 - informational only
            return {}
        finally:
            c.close()
