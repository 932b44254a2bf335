-- Per-advertiser API keys of the query API. Only a SHA-256 of the secret is stored; revoking
-- inserts a newer version of the row with revoked = 1 (readers take the latest version).
CREATE TABLE IF NOT EXISTS {db}.api_keys
(
    key_id String,
    advertiser_id String,
    secret_sha256 String,
    label String,
    created_at DateTime,
    revoked UInt8,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_id;
