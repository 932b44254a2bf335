"""TLS and SASL to Kafka, against a private broker with a throwaway CA (tests/kafka_pki.py):
seeded clicks go capture -> stream worker -> ClickHouse over SASL_SSL (SCRAM-SHA-256) and the
hot totals equal the generator's ground truth; wrong credentials or a wrong CA fail fast with a
clear error; mTLS (client certificate with an encrypted key) works for librdkafka and aiokafka;
the password shows in no log, no /metrics page and not in `clickagg config`."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from clickagg_platform import kafka_admin, lake
from clickagg_platform.kafka_security import KafkaSecurityError
from clickagg_platform.loadgen import LoadPlan
from clickagg_platform.loadgen.run_http import run_http_load
from clickagg_platform.settings import Settings
from resources.kafka import KafkaResource
from tests.conftest import wait_until
from tests.helpers import ROOT, capture_server, free_port, private_kafka, settings_env
from tests.integration.stream_harness import ArchiverProc, Worker, metric_value, wait_equal
from tests.integration.test_capture import make_links
from tests.kafka_pki import Pki, listener_conf, make_pki

pytestmark = pytest.mark.integration

USER = "clickagg-test"


@dataclass
class SecureBroker:
    pki: Pki
    sasl_ssl: str  # bootstrap of the SASL_SSL listener
    ssl: str  # bootstrap of the SSL listener (client certificate required)
    password: str


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    d = tmp_path_factory.mktemp("secure-kafka")
    pki = make_pki(d / "pki")
    plain, controller, sasl_ssl, ssl = (free_port() for _ in range(4))
    conf = d / "listeners.properties"
    conf.write_text(listener_conf(pki, plain, sasl_ssl, ssl, controller))
    password = secrets.token_urlsafe(18)
    scram = f"SCRAM-SHA-256=[name={USER},password={password}]"
    with private_kafka(
        d / "kafka",
        (plain, controller),
        CLICKAGG_KAFKA_EXTRA_CONF=str(conf),
        CLICKAGG_KAFKA_SCRAM=scram,
    ):
        yield SecureBroker(pki, f"127.0.0.1:{sasl_ssl}", f"127.0.0.1:{ssl}", password)


def sasl_settings(base: Settings, broker: SecureBroker, password: str | None = None) -> Settings:
    return Settings(
        **{
            k: v
            for k, v in base.model_dump().items()
            if k in ("clicks_topic", "clickhouse_database", "spool_dir", "lake_url")
        },
        signing_keys=base.signing_keys,
        kafka_bootstrap=broker.sasl_ssl,
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=broker.pki.ca,
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username=USER,
        kafka_sasl_password=password or broker.password,
    )


def sasl_resource(s: Settings, broker: SecureBroker) -> KafkaResource:
    """The Dagster kafka resource configured like `s` (as assets/definitions.py does)."""
    return KafkaResource(
        bootstrap=s.bootstrap,
        topic=s.clicks_topic,
        security_protocol="SASL_SSL",
        ssl_cafile=str(broker.pki.ca),
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username=USER,
        sasl_password=broker.password,
    )


def kafka_env(s: Settings) -> dict[str, str]:
    """The CLICKAGG_KAFKA_* variables of `s` (for the worker, which inherits the rest)."""
    return {k: v for k, v in settings_env(s).items() if k.startswith("CLICKAGG_KAFKA_")}


def clickagg(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clickagg_platform.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_clicks_travel_capture_worker_clickhouse_over_sasl_ssl(
    secure_broker, settings, ch_database, tmp_path, unique
):
    s = sasl_settings(settings, secure_broker)
    assert s.capture_producer == "loop"  # the default: the capture must switch by itself
    kafka_admin.wait_for_broker(s, timeout_s=30)
    assert kafka_admin.ensure_topic(s)  # the admin client over SASL_SSL
    plan = LoadPlan(
        seed=77, rate=300, clicks=600, duplicate_fraction=0, late_fraction=0, bot_fraction=0
    )
    worker = Worker(s, tmp_path / "w", f"t{unique}", **kafka_env(s)).start()
    archiver = ArchiverProc(
        s,
        tmp_path / "a",
        f"a{unique}",
        CLICKAGG_STREAM_ARCHIVE_FLUSH_INTERVAL_S="0.5",
        **kafka_env(s),
    ).start()
    capture_log = tmp_path / "capture.log"
    try:
        with capture_server(s, capture_log) as (base, _):
            result = asyncio.run(run_http_load(plan, base, concurrency=8, settings=s))
            capture_metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert result.manifest["totals"]["failed"] == 0
        want = Counter()
        for row in result.truth.per_minute:
            if row["billable"]:
                want[(row["minute_ms"], row["campaign_id"], row["ad_id"])] += row["billable"]
        assert sum(want.values()) == 600  # every click billable: exact count end to end
        wait_equal(s, want, timeout=90, workers=[worker])

        def archived() -> int:  # the archiver's files name their offset ranges
            return sum(f.last - f.first + 1 for f in lake.raw_files(s.lake_root, s.clicks_topic, s))

        wait_until(lambda: archived() == 600, 60, "the archiver to hold all 600 clicks")
        # the Dagster resource reads the topic's end offsets over SASL_SSL too
        resource = sasl_resource(s, secure_broker)
        assert sum(resource.end_offsets().values()) == 600
        # every click was acked by the broker over SASL_SSL, none went the spool way
        assert metric_value(capture_metrics, 'clickagg_capture_requests_total{outcome="kafka"}')
        assert metric_value(capture_metrics, "clickagg_capture_spooled_total") == 0
        worker_metrics = worker.metrics()
    finally:
        worker.stop()
        archiver.stop()
    capture_text = capture_log.read_text(errors="replace")
    assert "the loop producer speaks PLAINTEXT only, so this capture uses librdkafka" in (
        capture_text
    )
    # the secret shows nowhere: logs, /metrics, `clickagg config` (which masks it)
    shown = clickagg(settings_env(s, COLUMNS=250), "config", timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"CLICKAGG_KAFKA_SASL_PASSWORD\s*│ \*\*\* ", shown.stdout), shown.stdout
    outputs = {
        "capture log": capture_text,
        "worker log": worker.log_path.read_text(errors="replace"),
        "archiver log": archiver.log_path.read_text(errors="replace"),
        "capture /metrics": capture_metrics,
        "worker /metrics": worker_metrics,
        "clickagg config": shown.stdout + shown.stderr,
    }
    leaks = [name for name, text in outputs.items() if secure_broker.password in text]
    assert not leaks, f"SASL password found in {leaks}"


def test_wrong_password_fails_fast_with_a_clear_error(secure_broker, settings):
    s = sasl_settings(settings, secure_broker, password="not-the-password")
    start = time.monotonic()
    out = clickagg(settings_env(s), "topics", "--wait", "60")
    elapsed = time.monotonic() - start
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "refused the connection" in out.stderr and "Authentication failed" in out.stderr
    assert f"SCRAM-SHA-256 user={USER}" in out.stderr  # says who, never the password
    assert "not-the-password" not in out.stderr
    assert elapsed < 30, f"took {elapsed:.1f}s: a refused login must not wait out the timeout"


def test_worker_with_a_wrong_password_exits_with_the_reason(secure_broker, settings, tmp_path):
    s = sasl_settings(settings, secure_broker, password="not-the-password")
    worker = Worker(s, tmp_path / "w", "tbadpw", **kafka_env(s)).start()
    try:
        wait_until(lambda: not worker.alive(), 45, "the worker to exit")
    finally:
        worker.kill()
    text = worker.log_path.read_text(errors="replace")
    # (Faust's own aiokafka client connects first and stops the worker with aiokafka's reason)
    assert "SaslAuthenticationFailed: Authentication failed" in text, text[-3000:]
    assert "not-the-password" not in text


def test_wrong_ca_fails_fast_with_a_clear_error(secure_broker, settings):
    s = sasl_settings(settings, secure_broker).model_copy(
        update={"kafka_ssl_cafile": secure_broker.pki.other_ca}
    )
    start = time.monotonic()
    out = clickagg(settings_env(s), "topics", "--wait", "60")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "refused the connection" in out.stderr and "certificate verify failed" in out.stderr
    assert time.monotonic() - start < 30


def test_mutual_tls_with_an_encrypted_client_key(secure_broker, settings, unique):
    """The SSL listener requires a client certificate: librdkafka produces and aiokafka reads
    back with the configured cert/key/key password; without them the broker refuses."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as TP
    from confluent_kafka import Producer

    from clickagg_platform.kafka_security import aiokafka_connection, librdkafka_connection

    pki = secure_broker.pki
    s = Settings(
        clicks_topic=f"mtls_{unique}",
        kafka_bootstrap=secure_broker.ssl,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
        kafka_ssl_key_password=pki.key_password,
    )
    kafka_admin.wait_for_broker(s, timeout_s=30)
    kafka_admin.ensure_topic(s, partitions=1)
    p = Producer(librdkafka_connection(s, {"message.timeout.ms": 10000}))
    sent = [f"record-{i}".encode() for i in range(5)]
    for value in sent:
        p.produce(s.clicks_topic, value, b"k", 0)
    assert p.flush(15) == 0

    async def read_back() -> list[bytes]:
        c = AIOKafkaConsumer(**aiokafka_connection(s), auto_offset_reset="earliest")
        await c.start()
        try:
            c.assign([TP(s.clicks_topic, 0)])
            got: list[bytes] = []
            deadline = time.monotonic() + 20
            while len(got) < len(sent) and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=500)
                got += [m.value for msgs in batch.values() for m in msgs]
            return got
        finally:
            await c.stop()

    assert asyncio.run(read_back()) == sent

    no_cert = {
        "kafka_ssl_certfile": None,
        "kafka_ssl_keyfile": None,
        "kafka_ssl_key_password": None,
    }
    start = time.monotonic()
    with pytest.raises(KafkaSecurityError, match="refused the connection.*bad certificate"):
        kafka_admin.wait_for_broker(s.model_copy(update=no_cert), timeout_s=30)
    assert time.monotonic() - start < 15


def test_capture_with_refused_credentials_spools_and_says_why(secure_broker, settings, tmp_path):
    """The capture stays up (clicks are durable in the spool) and logs the refusal at ERROR."""
    s = sasl_settings(settings, secure_broker, password="not-the-password")
    log_path = tmp_path / "capture.log"
    with capture_server(s, log_path) as (base, _):
        link = make_links(s, 1, seed=5)[0]
        answer = httpx.get(f"{base}/c/{link['token']}", timeout=10)
        assert answer.status_code == 302  # durable: in the spool
        wait_until(
            lambda: "kafka refused the connection" in log_path.read_text(errors="replace"),
            30,
            "the capture to log the refused login",
        )
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
    assert metric_value(metrics, "clickagg_capture_spooled_total") == 1
    text = log_path.read_text(errors="replace")
    assert "Authentication failed" in text and "not-the-password" not in text


def test_load_generator_kafka_target_over_sasl_ssl(secure_broker, settings, tmp_path, unique):
    """`clickagg load --target kafka` (the loadgen's librdkafka sink) over SASL_SSL: every
    generated click lands, counted back by the Dagster resource's end offsets."""
    s = sasl_settings(settings, secure_broker).model_copy(update={"clicks_topic": f"load_{unique}"})
    kafka_admin.ensure_topic(s)
    out = clickagg(
        settings_env(s),
        "load", "--target", "kafka", "--clicks", "400", "--rate", "2000",
        "--duplicate-fraction", "0", "--manifest", str(tmp_path / "manifest.json"),
        timeout=90,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    resource = sasl_resource(s, secure_broker)
    assert sum(resource.end_offsets().values()) == 400
