-- Bookkeeping of applied migrations. Every statement in this folder must run on ClickHouse 18.16
-- (Debian) and on current ClickHouse (checked on chdb by tests/unit/test_clickhouse_sql.py).
CREATE TABLE IF NOT EXISTS {db}.schema_migrations
(
    version UInt32,
    name String,
    applied_at DateTime
)
ENGINE = MergeTree()
ORDER BY version;
