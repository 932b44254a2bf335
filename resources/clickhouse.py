"""ClickHouse as a Dagster resource: connection settings from the environment, and the one write
pattern the batch path uses (stage, then swap partitions in atomically)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import dagster as dg
from pydantic import Field

from clickagg_platform.settings import Settings

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClickHouseResource(dg.ConfigurableResource):
    """The hot store and the batch tables (native protocol, clickhouse-driver)."""

    host: str = Field("127.0.0.1", description="ClickHouse host")
    port: int = Field(19000, description="Native protocol port")
    user: str = Field("default", description="User")
    password: str = Field("", description="Password (from an EnvVar, never inline)")
    database: str = Field("clickagg", description="Database of the platform's tables")

    @classmethod
    def from_settings(cls, s: Settings) -> ClickHouseResource:
        """The resource pointing where the platform settings point (tests, tools)."""
        return cls(
            host=s.clickhouse_host,
            port=s.clickhouse_port,
            user=s.clickhouse_user,
            password=s.clickhouse_password,
            database=s.clickhouse_database,
        )

    def settings(self, base: Settings | None = None) -> Settings:
        base = base or Settings()
        return base.model_copy(
            update={
                "clickhouse_host": self.host,
                "clickhouse_port": self.port,
                "clickhouse_user": self.user,
                "clickhouse_password": self.password,
                "clickhouse_database": self.database,
            }
        )

    def client(self):
        from clickagg_platform import clickhouse

        return clickhouse.client(self.settings())

    def table(self, name: str) -> str:
        if not _IDENT.match(self.database) or not _IDENT.match(name):
            raise ValueError(f"bad identifier {self.database}.{name}")
        return f"{self.database}.{name}"

    def replace_partitions(
        self,
        table: str,
        partition_ids: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[tuple],
    ) -> int:
        """Make `rows` the whole content of the given partitions of `table`.

        The rows go into a private staging copy of the table; each partition is then swapped in
        with REPLACE PARTITION ID (atomic per partition: readers see the old or the new rows,
        never a mix); a partition with no new rows is dropped. Re-running is idempotent."""
        target = self.table(table)
        stage = self.table(f"{table}_stage_{uuid.uuid4().hex[:12]}")
        c = self.client()
        try:
            c.execute(f"CREATE TABLE {stage} AS {target}")
            try:
                if rows:
                    c.execute(f"INSERT INTO {stage} ({', '.join(columns)}) VALUES", list(rows))
                staged = {
                    row[0]
                    for row in c.execute(
                        "SELECT DISTINCT partition_id FROM system.parts WHERE database = "
                        "%(db)s AND table = %(t)s AND active",
                        {"db": self.database, "t": stage.split(".", 1)[1]},
                    )
                }
                for pid in partition_ids:
                    if not re.match(r"^[0-9]+$", pid):
                        raise ValueError(f"bad partition id {pid!r}")
                    if pid in staged:
                        c.execute(f"ALTER TABLE {target} REPLACE PARTITION ID '{pid}' FROM {stage}")
                    else:  # current ClickHouse refuses REPLACE from an empty source partition
                        c.execute(f"ALTER TABLE {target} DROP PARTITION ID '{pid}'")
            finally:
                c.execute(f"DROP TABLE IF EXISTS {stage}")
        finally:
            c.disconnect()
        return len(rows)

    def query(self, sql: str, params: dict | None = None) -> list[tuple]:
        c = self.client()
        try:
            return c.execute(sql, params or {})
        finally:
            c.disconnect()
