"""ClickHouse access: a client factory and plain versioned SQL migrations.

Migrations are `migrations/NNN_name.sql` files, statements separated by `;` at the end of a line,
with `{db}` standing for the configured database. They are applied in order, each recorded in
`{db}.schema_migrations`; every statement is idempotent (`IF NOT EXISTS`), so re-running after a
crash half-way is safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from clickagg_platform.settings import Settings, get_settings

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(sql: str) -> list[str]:
    """Split on `;` at end of line; drop `--` comment lines and empty statements."""
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip()]


def load_migrations(db: str) -> list[Migration]:
    found = []
    for entry in resources.files("clickagg_platform.migrations").iterdir():
        m = _NAME.match(entry.name)
        if not m:
            continue
        sql = entry.read_text().replace("{db}", db)
        found.append(Migration(int(m.group(1)), m.group(2), tuple(split_statements(sql))))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {versions}")
    return found


def client(settings: Settings | None = None, *, database: str | None = None, **kwargs):
    from clickhouse_driver import Client

    s = settings or get_settings()
    return Client(
        host=s.clickhouse_host,
        port=s.clickhouse_port,
        user=kwargs.pop("user", s.clickhouse_user),
        password=kwargs.pop("password", s.clickhouse_password),
        database=database or "default",
        connect_timeout=kwargs.pop("connect_timeout", 5),
        send_receive_timeout=kwargs.pop("send_receive_timeout", 60),
        settings={"use_client_time_zone": False, **kwargs.pop("settings", {})},
        **kwargs,
    )


def migrate(settings: Settings | None = None, log=print) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    s = settings or get_settings()
    db = s.clickhouse_database
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", db):
        raise ValueError(f"invalid ClickHouse database name {db!r}")
    c = client(s)
    try:
        c.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
        migrations = load_migrations(db)
        for stmt in migrations[0].statements:  # the bookkeeping table itself
            c.execute(stmt)
        done = {row[0] for row in c.execute(f"SELECT version FROM {db}.schema_migrations")}
        applied = []
        for mig in migrations:
            if mig.version in done:
                continue
            for stmt in mig.statements:
                c.execute(stmt)
            c.execute(
                f"INSERT INTO {db}.schema_migrations (version, name, applied_at) VALUES",
                [(mig.version, mig.name, datetime.now(UTC).replace(tzinfo=None))],
            )
            applied.append(mig.version)
            log(f"applied migration {mig.version:03d}_{mig.name}")
        return applied
    finally:
        c.disconnect()
