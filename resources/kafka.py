"""Kafka as a Dagster resource: where the clicks topic lives (the raw archive's source)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class KafkaResource(dg.ConfigurableResource):
    """The clicks topic; the batch path reads its archive, and records the topic's end offsets
    next to what the archive holds, so a lagging archiver is visible in the UI."""

    bootstrap: str = Field("127.0.0.1:19092", description="Bootstrap servers")
    topic: str = Field("clicks", description="Topic of raw clicks")
    # TLS/SASL: the same settings as CLICKAGG_KAFKA_* (docs/operations.md "Kafka security")
    security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL or SASL_SSL")
    ssl_cafile: str = Field("", description="CA of the brokers (empty: system CAs)")
    ssl_certfile: str = Field("", description="Client certificate (mTLS)")
    ssl_keyfile: str = Field("", description="Client private key (mTLS)")
    ssl_key_password: str = Field("", description="Password of the client key")
    sasl_mechanism: str = Field("", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    sasl_username: str = Field("", description="SASL user")
    sasl_password: str = Field("", description="SASL password (set it with an EnvVar)")

    def security(self):
        from clickagg_platform.kafka_security import KafkaSecurity

        return KafkaSecurity(
            protocol=self.security_protocol,
            ssl_cafile=self.ssl_cafile or None,
            ssl_certfile=self.ssl_certfile or None,
            ssl_keyfile=self.ssl_keyfile or None,
            ssl_key_password=self.ssl_key_password or None,
            sasl_mechanism=self.sasl_mechanism or None,
            sasl_username=self.sasl_username or None,
            sasl_password=self.sasl_password or None,
        )

    def end_offsets(self, timeout_s: float = 5.0) -> dict[int, int]:
        """{partition: high watermark} of the clicks topic ({} if the broker is unreachable)."""
        from confluent_kafka import Consumer, TopicPartition

        from clickagg_platform.kafka_security import librdkafka_config

        c = Consumer(
            {
                **librdkafka_config(self.security()),
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
