"""One settings object for every process; environment variables with the prefix ``CLICKAGG_``.

Local defaults start everything on loopback under ``.local/``. Pointing the platform at external
services is a matter of environment: ``CLICKAGG_KAFKA_BOOTSTRAP``, ``CLICKAGG_CLICKHOUSE_HOST``
with ``CLICKAGG_CLICKHOUSE_EXTERNAL=1``, ``CLICKAGG_LAKE_URL=s3://...``; a Spark cluster reads an
S3 lake itself with ``CLICKAGG_SPARK_S3A=1`` (docs/batch.md "Running on a cluster").
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clickagg_platform.kafka_security import KafkaSecurity, Mechanism, Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must never print a password it was given
    model_config = SettingsConfigDict(
        env_prefix="CLICKAGG_", extra="ignore", hide_input_in_errors=True
    )

    local_dir: Path = Field(REPO_ROOT / ".local", description="Local data and pids")

    # Kafka
    kafka_bootstrap: str | None = Field(None, description="External brokers; unset = local")
    kafka_port: int = Field(19092, description="Port of the local broker")
    clicks_topic: str = Field("clicks", description="Topic of raw clicks (key = event_id)")
    clicks_partitions: int = Field(6, description="Partitions of the clicks topic when created")
    clicks_replication: int = Field(1, description="Replication factor when creating topics")
    # Kafka security (docs/operations.md "Kafka security"), honoured by every Kafka client
    kafka_security_protocol: Protocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL or SASL_SSL (every Kafka client)"
    )
    kafka_ssl_cafile: Path | None = Field(None, description="CA of the brokers (default: system)")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mTLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (mTLS)")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of the key")
    kafka_sasl_mechanism: Mechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_SSL)"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")

    # ClickHouse
    clickhouse_host: str = Field("127.0.0.1", description="ClickHouse host (native protocol)")
    clickhouse_port: int = Field(19000, description="ClickHouse native port")
    clickhouse_http_port: int = Field(18123, description="ClickHouse HTTP port (health)")
    clickhouse_user: str = Field("default", description="Read-write ClickHouse user")
    clickhouse_password: str = Field("", description="Password of clickhouse_user")
    clickhouse_database: str = Field("clickagg", description="Database holding all tables")
    clickhouse_external: bool = Field(False, description="Use an external server; start nothing")

    api_clickhouse_user: str = Field("clickagg_ro", description="Read-only user of the query API")
    api_clickhouse_password: str = Field("", description="Password of api_clickhouse_user")

    # Query API
    api_host: str = Field("127.0.0.1", description="Bind address of the query API")
    api_port: int = Field(18000, description="Port of the query API")
    dagster_metrics_port: int = Field(
        16068, description="Port of `clickagg dagster-metrics` (Prometheus metrics of Dagster)"
    )
    clickhouse_metrics_port: int = Field(
        16069, description="Port of `clickagg clickhouse-metrics` (ClickHouse system tables)"
    )
    alert_log_port: int = Field(
        19095, description="Port of `clickagg alert-log` (Alertmanager webhook receiver)"
    )
    capture_metrics_urls: str = Field(
        "http://127.0.0.1:18080/metrics", description="Capture /metrics URLs read for health"
    )
    stream_metrics_urls: str = Field(
        "http://127.0.0.1:16066/metrics", description="Stream worker /metrics URLs for health"
    )

    # Capture service
    capture_host: str = Field("127.0.0.1", description="Bind address of the capture service")
    capture_port: int = Field(18080, description="Port of the capture service")
    produce_timeout_ms: int = Field(
        1000, description="Bounded wait for a Kafka ack before a click is spooled instead"
    )
    capture_producer: Literal["loop", "librdkafka"] = Field(
        "loop",
        description="Capture's Kafka client: loop (on the event loop, plaintext) or librdkafka",
    )
    producer_linger_ms: float = Field(
        2.0, description="How long the capture producer gathers clicks into one request"
    )
    spool_dir: Path | None = Field(None, description="Local fsync'd spool; default .local/spool")
    hash_salt: str = Field("local-dev-salt", description="Key of the hashes of client IPs/ids")
    trusted_proxies: str = Field(
        "127.0.0.1,::1", description="Peers whose X-Forwarded-For is trusted (comma-separated)"
    )
    spool_segment_bytes: int = Field(16 * 1024 * 1024, description="Spool segment roll size")

    # Click tokens: "kid:secret,kid2:secret2"; the first key signs, all listed keys verify.
    signing_keys: str = Field(
        "k1:local-dev-secret-change-me",
        description="Comma-separated kid:secret pairs; first signs, all verify (rotation)",
    )
    token_ttl_s: int = Field(7 * 24 * 3600, description="Default lifetime of a minted click URL")
    public_base_url: str = Field("http://127.0.0.1:18080", description="Base URL of minted links")

    # Lake
    lake_url: str = Field("", description="Raw archive root; default file://<local_dir>/lake")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint override")

    # Spark and an s3:// lake (docs/batch.md "Running on a cluster")
    spark_s3a: bool = Field(
        False,
        description="Spark reads and writes an s3:// lake itself through s3a:// (hadoop-aws "
        "jars of `infra/spark.sh jars`); off = the run worker downloads local copies",
    )
    spark_jars_dir: Path | None = Field(
        None, description="Fetched S3A jars (infra/spark/pom.xml); default .local/spark/jars"
    )

    @field_validator("signing_keys")
    @classmethod
    def _keys_well_formed(cls, v: str) -> str:
        for pair in v.split(","):
            kid, sep, secret = pair.strip().partition(":")
            if not sep or not kid or not secret:
                raise ValueError("signing_keys must look like 'kid:secret[,kid2:secret2]'")
        return v

    @model_validator(mode="after")
    def _kafka_security_valid(self) -> Settings:
        try:
            self.kafka_security  # noqa: B018 - raises a clear error for a bad combination
        except ValidationError as err:
            raise ValueError(
                "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            ) from None
        return self

    @property
    def kafka_security(self) -> KafkaSecurity:
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            ssl_cafile=self.kafka_ssl_cafile,
            ssl_certfile=self.kafka_ssl_certfile,
            ssl_keyfile=self.kafka_ssl_keyfile,
            ssl_key_password=self.kafka_ssl_key_password,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
        )

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.local_dir / "spool"

    @property
    def spark_jars_path(self) -> Path:
        return self.spark_jars_dir or self.local_dir / "spark" / "jars"

    @property
    def lake_root(self) -> str:
        return self.lake_url or f"file://{self.local_dir / 'lake'}"

    def keyring(self) -> dict[str, bytes]:
        pairs = [p.strip().partition(":") for p in self.signing_keys.split(",")]
        return {kid: secret.encode() for kid, _, secret in pairs}

    @property
    def active_key_id(self) -> str:
        return self.signing_keys.split(",")[0].strip().partition(":")[0]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
