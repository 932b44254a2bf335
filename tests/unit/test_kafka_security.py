"""The security settings -> client configs mapping, and the combination rules (pure)."""

from __future__ import annotations

import ssl

import pytest
from pydantic import ValidationError

from clickagg_platform.kafka_security import (
    KafkaSecurity,
    aiokafka_kwargs,
    capture_client,
    faust_credentials,
    librdkafka_config,
)
from clickagg_platform.settings import Settings


@pytest.fixture
def ca(tmp_path):
    # a real CA file: the SSL context loads it
    import subprocess

    key, crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(crt), "-subj", "/CN=unit-ca"],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt


def sasl(ca, **kw) -> KafkaSecurity:
    base = dict(
        protocol="SASL_SSL",
        ssl_cafile=ca,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="s3cret-pw",
    )
    return KafkaSecurity(**{**base, **kw})


def test_plaintext_adds_nothing():
    sec = KafkaSecurity()
    assert librdkafka_config(sec) == {}
    assert aiokafka_kwargs(sec) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(sec) is None
    assert capture_client(sec, "loop") == ("loop", None)


def test_sasl_ssl_for_every_client_family(ca):
    sec = sasl(ca)
    assert librdkafka_config(sec) == {
        "security.protocol": "sasl_ssl",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(ca),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "s3cret-pw",
    }
    kw = aiokafka_kwargs(sec)
    assert isinstance(kw.pop("ssl_context"), ssl.SSLContext)
    assert kw == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret-pw",
    }
    creds = faust_credentials(sec)
    assert (creds.protocol.value, creds.mechanism.value, creds.username) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "svc",
    )
    client, why = capture_client(sec, "loop")
    assert client == "librdkafka" and "PLAINTEXT only" in why
    assert capture_client(sec, "librdkafka") == ("librdkafka", None)


def test_ssl_without_ca_uses_the_system_store():
    conf = librdkafka_config(KafkaSecurity(protocol="SSL"))
    assert conf["ssl.ca.location"] == "probe" and conf["security.protocol"] == "ssl"
    creds = faust_credentials(KafkaSecurity(protocol="SSL"))
    assert creds.protocol.value == "SSL" and creds.context.check_hostname
    assert aiokafka_kwargs(KafkaSecurity(protocol="SSL"))["ssl_context"].verify_mode == (
        ssl.CERT_REQUIRED
    )


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"protocol": "PLAINTEXT"}, "SECURITY_PROTOCOL is PLAINTEXT"),
        ({"protocol": "SSL"}, "use SASL_SSL for SASL"),
        ({"sasl_mechanism": None}, "SASL_MECHANISM is required"),
        ({"sasl_username": None}, "SASL_USERNAME is required"),
        ({"sasl_password": ""}, "SASL_PASSWORD is required"),
        ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
        ({"protocol": "SASL_PLAINTEXT"}, "protocol"),
        ({"ssl_certfile": "/etc/hostname"}, "SSL_CERTFILE and CLICKAGG_KAFKA_SSL_KEYFILE go"),
        ({"ssl_key_password": "x"}, "SSL_KEY_PASSWORD set without"),
        ({"ssl_cafile": "/nonexistent/ca.pem"}, "SSL_CAFILE=/nonexistent/ca.pem: no such file"),
    ],
)
def test_bad_combinations_are_refused_clearly(ca, kw, message):
    with pytest.raises(ValidationError, match=message) as err:
        sasl(ca, **kw)
    assert "s3cret-pw" not in str(err.value)


def test_settings_from_environment_validate_and_never_echo_the_password(monkeypatch, ca):
    monkeypatch.setenv("CLICKAGG_KAFKA_SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("CLICKAGG_KAFKA_SASL_MECHANISM", "PLAIN")
    with pytest.raises(ValidationError) as err:
        Settings()
    assert "SECURITY_PROTOCOL is PLAINTEXT" in str(err.value)
    assert "hunter2-secret" not in str(err.value)
    monkeypatch.setenv("CLICKAGG_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CLICKAGG_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("CLICKAGG_KAFKA_SSL_CAFILE", str(ca))
    s = Settings()
    assert librdkafka_config(s.kafka_security)["sasl.password"] == "hunter2-secret"
    assert "hunter2-secret" not in repr(s) and "hunter2-secret" not in str(s.model_dump())
    assert "hunter2" not in s.kafka_security.describe()
    assert s.kafka_security.describe() == f"SASL_SSL ca={ca} PLAIN user=svc"


def test_dagster_resource_builds_the_same_security(ca):
    from resources.kafka import KafkaResource

    r = KafkaResource(
        bootstrap="b:9093",
        security_protocol="SASL_SSL",
        ssl_cafile=str(ca),
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc",
        sasl_password="pw",
    )
    assert librdkafka_config(r.security()) == librdkafka_config(
        sasl(ca, sasl_mechanism="SCRAM-SHA-256", sasl_password="pw")
    )
    assert librdkafka_config(KafkaResource().security()) == {}
