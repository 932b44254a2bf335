"""A throwaway PKI and broker config for the Kafka security tests: a CA, a broker certificate
for 127.0.0.1 (PKCS12 keystore, made with openssl), a truststore holding the CA (keytool, for
client certificates), a client certificate with an encrypted key, and the extra listeners
(SASL_SSL with SCRAM-SHA-256, SSL with a required client certificate) that `infra/kafka.sh`
appends to a private broker's config (CLICKAGG_KAFKA_EXTRA_CONF / CLICKAGG_KAFKA_SCRAM)."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def _signed(d: Path, ca_key: Path, ca_crt: Path, name: str, subject: str, san: str) -> Path:
    key, csr, crt, ext = (d / f"{name}{s}" for s in (".key", ".csr", ".crt", ".ext"))
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", subject)  # fmt: skip
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-out", str(crt), "-extfile", str(ext))  # fmt: skip
    return crt


@dataclass
class Pki:
    ca: Path
    other_ca: Path  # a CA that did not sign the broker (a wrong CA file)
    client_cert: Path
    client_key: Path  # PKCS#8, encrypted with key_password
    key_password: str
    keystore: Path
    truststore: Path
    store_password: str


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    store_password = secrets.token_hex(8)
    cas = []
    for name in ("ca", "other-ca"):
        _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.crt"),
             "-subj", f"/CN=clickagg-test-{name}")  # fmt: skip
        cas.append(d / f"{name}.crt")
    ca_key, ca = d / "ca.key", cas[0]
    broker = _signed(d, ca_key, ca, "broker", "/CN=127.0.0.1", "IP:127.0.0.1,DNS:localhost")
    keystore = d / "broker.p12"
    _run("openssl", "pkcs12", "-export", "-in", str(broker), "-inkey", str(d / "broker.key"),
         "-certfile", str(ca), "-name", "broker", "-out", str(keystore),
         "-passout", f"pass:{store_password}")  # fmt: skip
    truststore = d / "truststore.p12"
    _run("keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", str(ca),
         "-keystore", str(truststore), "-storetype", "PKCS12",
         "-storepass", store_password)  # fmt: skip
    client = _signed(d, ca_key, ca, "client", "/CN=clickagg-client", "")
    key_password = secrets.token_hex(8)
    client_key = d / "client-encrypted.key"
    _run("openssl", "pkcs8", "-topk8", "-in", str(d / "client.key"), "-out", str(client_key),
         "-v2", "aes-256-cbc", "-passout", f"pass:{key_password}")  # fmt: skip
    return Pki(ca, cas[1], client, client_key, key_password, keystore, truststore, store_password)


def listener_conf(pki: Pki, plain: int, sasl_ssl: int, ssl: int, controller: int) -> str:
    """Properties appended to the rendered server.properties (later keys win)."""
    return "\n".join(
        [
            f"listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl_ssl},"
            f"SSL://127.0.0.1:{ssl},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{plain},"
            f"SASL_SSL://127.0.0.1:{sasl_ssl},SSL://127.0.0.1:{ssl}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SASL_SSL:SASL_SSL,SSL:SSL",
            "sasl.enabled.mechanisms=SCRAM-SHA-256",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={pki.keystore}",
            f"ssl.keystore.password={pki.store_password}",
            f"ssl.key.password={pki.store_password}",
            "ssl.truststore.type=PKCS12",
            f"ssl.truststore.location={pki.truststore}",
            f"ssl.truststore.password={pki.store_password}",
            "listener.name.ssl.ssl.client.auth=required",
            "",
        ]
    )
