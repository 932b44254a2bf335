"""TLS and SASL to Kafka: the one place that turns the security settings into client configs.

Three client families talk to Kafka here: librdkafka (confluent-kafka: capture, admin, loadgen,
rekey, the Dagster resource), aiokafka (stream runner, archiver, changelog recovery) and Faust
(the worker's control agent, over aiokafka). Each gets its config from `KafkaSecurity`, so a
protocol, CA or credential is set once (`CLICKAGG_KAFKA_SECURITY_PROTOCOL` and friends) and
honoured by all of them. Supported: PLAINTEXT, SSL (optionally with a client certificate, i.e.
mTLS) and SASL_SSL with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. SASL_PLAINTEXT is refused: it
sends the password in the clear.

Secrets are `SecretStr` until the moment a client config is built; nothing here logs them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, SecretStr, model_validator

Protocol = Literal["PLAINTEXT", "SSL", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

# librdkafka error codes that mean "your security settings are wrong", not "the broker is down"
_AUTHENTICATION, _SSL, SASL_AUTHENTICATION_FAILED = -169, -181, 58
CONFIG_ERROR_CODES = frozenset({_AUTHENTICATION, _SSL, SASL_AUTHENTICATION_FAILED})


class KafkaSecurityError(RuntimeError):
    """The broker refused the TLS handshake or the SASL credentials (a configuration error:
    retrying does not help)."""


class KafkaSecurity(BaseModel):
    """How to reach the brokers securely; validated as a whole (combinations get clear errors)."""

    model_config = {"frozen": True, "hide_input_in_errors": True}

    protocol: Protocol = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    sasl_mechanism: Mechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @model_validator(mode="after")
    def _combination(self) -> KafkaSecurity:
        problems = security_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol == "SASL_SSL"

    def describe(self) -> str:
        """One log-safe line: protocol, mechanism and user, never a secret."""
        if not self.tls:
            return "PLAINTEXT"
        parts = [self.protocol, f"ca={self.ssl_cafile or 'system'}"]
        if self.ssl_certfile:
            parts.append(f"client-cert={self.ssl_certfile}")
        if self.sasl:
            parts.append(f"{self.sasl_mechanism} user={self.sasl_username}")
        return " ".join(parts)


def security_problems(sec: KafkaSecurity) -> list[str]:
    """Everything wrong with a combination of settings (empty = usable). Pure, for tests."""
    env = "CLICKAGG_KAFKA_"
    out = []
    sasl_set = [n for n in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(sec, n)]
    ssl_set = [
        n
        for n in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
        if getattr(sec, n)
    ]
    if sec.protocol == "PLAINTEXT" and (sasl_set or ssl_set):
        names = ", ".join(env + n.upper() for n in sasl_set + ssl_set)
        out.append(
            f"{names} set but {env}SECURITY_PROTOCOL is PLAINTEXT: set it to SSL or SASL_SSL "
            "(nothing would be encrypted otherwise)"
        )
    if sec.protocol == "SSL" and sasl_set:
        names = ", ".join(env + n.upper() for n in sasl_set)
        out.append(f"{names} set but {env}SECURITY_PROTOCOL is SSL: use SASL_SSL for SASL")
    if sec.protocol == "SASL_SSL":
        if not sec.sasl_mechanism:
            out.append(
                f"{env}SASL_MECHANISM is required with SASL_SSL "
                "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )
        if not sec.sasl_username:
            out.append(f"{env}SASL_USERNAME is required with SASL_SSL")
        if not sec.sasl_password or not sec.sasl_password.get_secret_value():
            out.append(f"{env}SASL_PASSWORD is required with SASL_SSL")
    if bool(sec.ssl_certfile) != bool(sec.ssl_keyfile):
        out.append(f"{env}SSL_CERTFILE and {env}SSL_KEYFILE go together (a client certificate)")
    if sec.ssl_key_password and not sec.ssl_keyfile:
        out.append(f"{env}SSL_KEY_PASSWORD set without {env}SSL_KEYFILE")
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(sec, name)
        if path is not None and not Path(path).is_file():
            out.append(f"{env}{name.upper()}={path}: no such file")
    return out


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def librdkafka_config(sec: KafkaSecurity) -> dict:
    """The security part of a confluent-kafka (librdkafka) config; {} for PLAINTEXT."""
    if not sec.tls:
        return {}
    conf: dict = {
        "security.protocol": sec.protocol.lower(),
        # verify the broker's name against its certificate (librdkafka's default, made explicit)
        "ssl.endpoint.identification.algorithm": "https",
        # without a CA file: the system's CAs (managed Kafka with public certificates)
        "ssl.ca.location": str(sec.ssl_cafile) if sec.ssl_cafile else "probe",
    }
    if sec.ssl_certfile:
        conf["ssl.certificate.location"] = str(sec.ssl_certfile)
        conf["ssl.key.location"] = str(sec.ssl_keyfile)
        if sec.ssl_key_password:
            conf["ssl.key.password"] = _secret(sec.ssl_key_password)
    if sec.sasl:
        conf["sasl.mechanism"] = sec.sasl_mechanism
        conf["sasl.username"] = sec.sasl_username
        conf["sasl.password"] = _secret(sec.sasl_password)
    return conf


def ssl_context(sec: KafkaSecurity):
    """An SSLContext that verifies the broker (hostname included); None for PLAINTEXT."""
    if not sec.tls:
        return None
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None,
        certfile=str(sec.ssl_certfile) if sec.ssl_certfile else None,
        keyfile=str(sec.ssl_keyfile) if sec.ssl_keyfile else None,
        password=_secret(sec.ssl_key_password),
    )


def aiokafka_kwargs(sec: KafkaSecurity) -> dict:
    """The security keyword arguments of an AIOKafkaProducer/Consumer."""
    if not sec.tls:
        return {"security_protocol": "PLAINTEXT"}
    kw: dict = {"security_protocol": sec.protocol, "ssl_context": ssl_context(sec)}
    if sec.sasl:
        kw.update(
            sasl_mechanism=sec.sasl_mechanism,
            sasl_plain_username=sec.sasl_username,
            sasl_plain_password=_secret(sec.sasl_password),
        )
    return kw


def faust_credentials(sec: KafkaSecurity):
    """`broker_credentials` of a faust.App (None for PLAINTEXT)."""
    if not sec.tls:
        return None
    import faust

    if sec.sasl:
        return faust.SASLCredentials(
            username=sec.sasl_username,
            password=_secret(sec.sasl_password),
            ssl_context=ssl_context(sec),
            mechanism=sec.sasl_mechanism,
        )
    return faust.SSLCredentials(ssl_context(sec))


def capture_client(sec: KafkaSecurity, configured: str) -> tuple[str, str | None]:
    """The capture's producer for these settings, and why it differs from `configured` (the
    loop producer speaks PLAINTEXT only, so any other protocol means librdkafka)."""
    if configured == "loop" and sec.tls:
        return "librdkafka", (
            f"CLICKAGG_KAFKA_SECURITY_PROTOCOL={sec.protocol}: the loop producer speaks "
            "PLAINTEXT only, so this capture uses librdkafka (CLICKAGG_CAPTURE_PRODUCER=loop "
            "does not apply)"
        )
    return configured, None


class ErrorReporter:
    """A librdkafka `error_cb`: security errors (refused credentials, failed TLS handshake) are
    logged at ERROR (at most every `every_s` per code) and remembered, so a caller waiting for
    the broker can fail at once with the reason instead of timing out."""

    def __init__(self, logger: logging.Logger, every_s: float = 30.0) -> None:
        self.logger, self.every_s = logger, every_s
        self.security_error: str | None = None
        self._logged: dict[int, float] = {}

    def __call__(self, err) -> None:
        code, text = err.code(), err.str()
        # a TLS alert from the broker (e.g. "bad certificate": no or an unknown client
        # certificate) comes as a transport error, but retrying cannot fix it either
        if code not in CONFIG_ERROR_CODES and not err.fatal() and "SSL routines" not in text:
            return  # transport errors: librdkafka retries; its own log line is enough
        self.security_error = text
        now = time.monotonic()
        if now - self._logged.get(code, -1e9) >= self.every_s:
            self._logged[code] = now
            self.logger.error("kafka refused the connection: %s", text)


def aiokafka_connection(settings) -> dict:
    """bootstrap_servers + security kwargs of an aiokafka client for these Settings."""
    return {"bootstrap_servers": settings.bootstrap, **aiokafka_kwargs(settings.kafka_security)}


def librdkafka_connection(settings, conf: dict | None = None) -> dict:
    """A confluent-kafka config: bootstrap.servers + security + `conf` for these Settings."""
    return {
        "bootstrap.servers": settings.bootstrap,
        **(conf or {}),
        **librdkafka_config(settings.kafka_security),
    }
