"""Per-advertiser API keys: `ck_<key_id>_<secret>`; only SHA-256(secret) is stored.

Created and revoked with the `clickagg apikey` CLI (read-write ClickHouse user); verified by the
API (read-only user) with a short cache so a revocation takes effect within `CACHE_TTL_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from clickagg_platform.api.cache import TtlCache
from clickagg_platform.api.queries import ClickHouseReader
from clickagg_platform.tokens import validate_id

CACHE_TTL_S = 5.0
_KEY_RE = re.compile(r"^ck_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    advertiser_id: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(advertiser_id: str) -> tuple[str, str, str]:
    """(full key shown once, key_id, secret digest to store)."""
    validate_id("advertiser_id", advertiser_id)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"ck_{key_id}_{secret}", key_id, _digest(secret)


def parse_key(presented: str) -> tuple[str, str] | None:
    m = _KEY_RE.match(presented or "")
    return (m.group(1), m.group(2)) if m else None


class KeyStore:
    """ClickHouse-backed key store; `client_factory` returns a clickhouse-driver Client."""

    def __init__(self, client_factory, database: str):
        # connections are reused (a lookup per key every few seconds used to open one each)
        self._ch = ClickHouseReader(client_factory, max_idle=2)
        self.db = database
        self._cache = TtlCache(CACHE_TTL_S)

    def create(self, advertiser_id: str, label: str = "") -> tuple[str, str]:
        full, key_id, digest = new_key(advertiser_id)
        self._write(key_id, advertiser_id, digest, label, revoked=0)
        return full, key_id

    def revoke(self, key_id: str) -> bool:
        row = self._latest(key_id)
        if row is None:
            return False
        advertiser_id, digest, label, _revoked = row
        self._write(key_id, advertiser_id, digest, label, revoked=1)
        self._cache.forget(key_id)
        return True

    def list(self, advertiser_id: str | None = None) -> list[dict]:
        rows = self._ch.execute(
            f"SELECT key_id, argMax(advertiser_id, version), argMax(label, version), "
            f"min(created_at), argMax(revoked, version) FROM {self.db}.api_keys "
            "GROUP BY key_id ORDER BY key_id"
        )
        out = [
            dict(key_id=r[0], advertiser_id=r[1], label=r[2], created_at=r[3], revoked=bool(r[4]))
            for r in rows
        ]
        return [r for r in out if advertiser_id is None or r["advertiser_id"] == advertiser_id]

    def verify(self, presented: str) -> ApiKey | None:
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        row = self._cache.get(key_id, self._latest)
        if row is None:
            return None
        advertiser_id, digest, _label, revoked = row
        if revoked or not hmac.compare_digest(digest, _digest(secret)):
            return None
        return ApiKey(key_id, advertiser_id)

    def _latest(self, key_id: str) -> tuple | None:
        rows = self._ch.execute(
            f"SELECT argMax(advertiser_id, version), argMax(secret_sha256, version), "
            f"argMax(label, version), argMax(revoked, version) FROM {self.db}.api_keys "
            "WHERE key_id = %(k)s GROUP BY key_id",
            {"k": key_id},
        )
        return tuple(rows[0]) if rows else None

    def _write(self, key_id, advertiser_id, digest, label, revoked: int) -> None:
        row = (
            key_id,
            advertiser_id,
            digest,
            label,
            datetime.now(UTC).replace(tzinfo=None),
            revoked,
            time.time_ns(),
        )
        self._ch.execute(
            f"INSERT INTO {self.db}.api_keys "
            "(key_id, advertiser_id, secret_sha256, label, created_at, revoked, version) VALUES",
            [row],
        )
