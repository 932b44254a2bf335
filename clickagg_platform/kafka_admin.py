"""Topic administration: create the `clicks` topic with the configured partitions, idempotently."""

from __future__ import annotations

import logging
import time

from confluent_kafka.admin import AdminClient, NewTopic

from clickagg_platform.kafka_security import (
    ErrorReporter,
    KafkaSecurityError,
    librdkafka_connection,
)
from clickagg_platform.settings import Settings, get_settings

log = logging.getLogger("clickagg.kafka")


def admin(settings: Settings | None = None, **conf) -> AdminClient:
    s = settings or get_settings()
    return AdminClient(librdkafka_connection(s, {"socket.timeout.ms": 10000, **conf}))


def wait_for_broker(settings: Settings | None = None, timeout_s: float = 60.0) -> None:
    """Block until the cluster answers a metadata request, or raise TimeoutError; raise
    KafkaSecurityError at once if the broker refuses our TLS handshake or credentials."""
    s = settings or get_settings()
    errors = ErrorReporter(log)
    a = admin(s, error_cb=errors)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        a.poll(0)  # serves error_cb
        if errors.security_error:
            raise KafkaSecurityError(
                f"Kafka at {s.bootstrap} ({s.kafka_security.describe()}) refused the connection: "
                f"{errors.security_error}"
            )
        try:
            md = a.list_topics(timeout=2)
            if md.brokers:
                return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"Kafka at {(settings or get_settings()).bootstrap} not ready: {last}")


def ensure_topic(
    settings: Settings | None = None, name: str | None = None, partitions: int | None = None
) -> bool:
    """Create the topic if missing; True if created. A mismatched partition count is an error."""
    s = settings or get_settings()
    name = name or s.clicks_topic
    partitions = partitions or s.clicks_partitions
    a = admin(s)
    md = a.list_topics(timeout=10)
    if name in md.topics and md.topics[name].error is None:
        have = len(md.topics[name].partitions)
        if have != partitions:
            raise RuntimeError(f"topic {name!r} has {have} partitions, configured {partitions}")
        return False
    futures = a.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=s.clicks_replication)]
    )
    try:
        futures[name].result(timeout=30)
    except Exception as exc:  # TopicExistsError after a concurrent create is fine
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
        return False
    return True


def delete_topic(settings: Settings, name: str) -> None:
    a = admin(settings)
    a.delete_topics([name])[name].result(timeout=30)
