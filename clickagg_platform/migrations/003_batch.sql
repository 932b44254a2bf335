-- Batch (truth) path. Every table that a materialisation rewrites is partitioned by its Dagster
-- partition (hour or day): a run inserts into a private staging copy and swaps each partition
-- in with ALTER TABLE ... REPLACE PARTITION ID (atomic per partition, idempotent on re-run,
-- also clears a partition that became empty). Runs on ClickHouse 18.16 and current versions.
-- sorted by campaign first: the query API reads one campaign over a time range
CREATE TABLE IF NOT EXISTS {db}.minute_aggregates_batch
(
    hour DateTime('UTC'),
    window_start DateTime('UTC'),
    advertiser_id String,
    campaign_id String,
    ad_id String,
    clicks Int64,
    fraud_clicks Int64,
    stream_too_late Int64,
    reconciled_at DateTime('UTC'),
    run_id String
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDDhhmmss(hour)
ORDER BY (campaign_id, window_start, ad_id);

-- hot vs batch per (minute, campaign, ad) of one hour; status: ok, late_only (only clicks past
-- the stream's allowed lateness differ), differs, missing_in_hot, missing_in_batch
CREATE TABLE IF NOT EXISTS {db}.drift_report
(
    hour DateTime('UTC'),
    window_start DateTime('UTC'),
    campaign_id String,
    ad_id String,
    hot_clicks Int64,
    batch_clicks Int64,
    stream_too_late Int64,
    drift Int64,
    rel_drift Float64,
    unexplained Int64,
    status String,
    computed_at DateTime('UTC'),
    run_id String
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDDhhmmss(hour)
ORDER BY (window_start, campaign_id, ad_id);

CREATE TABLE IF NOT EXISTS {db}.drift_hours
(
    hour DateTime('UTC'),
    hot_total Int64,
    batch_total Int64,
    stream_too_late Int64,
    unexplained_abs Int64,
    unexplained_rel Float64,
    keys UInt32,
    keys_missing_in_hot UInt32,
    keys_missing_in_batch UInt32,
    keys_differing UInt32,
    passed UInt8,
    computed_at DateTime('UTC'),
    run_id String
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDDhhmmss(hour)
ORDER BY hour;

-- issued invoice lines: written once per day (a closed invoice never changes)
CREATE TABLE IF NOT EXISTS {db}.billing_daily
(
    day Date,
    advertiser_id String,
    campaign_id String,
    billable_clicks Int64,
    cpc_micros Int64,
    spend_micros Int64,
    in_catalog UInt8,
    billed_at DateTime('UTC'),
    version Int64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(day)
ORDER BY (advertiser_id, campaign_id);

-- every adjustment issued for a billed day so far (rewritten when the day is re-billed)
CREATE TABLE IF NOT EXISTS {db}.billing_adjustments
(
    billed_day Date,
    advertiser_id String,
    campaign_id String,
    delta_clicks Int64,
    delta_spend_micros Int64,
    invoice_day Date,
    detected_at DateTime('UTC'),
    version Int64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(billed_day)
ORDER BY (advertiser_id, campaign_id, version);

CREATE TABLE IF NOT EXISTS {db}.campaigns
(
    advertiser_id String,
    campaign_id String,
    cpc_micros Int64,
    name String
)
ENGINE = MergeTree()
ORDER BY campaign_id;

CREATE TABLE IF NOT EXISTS {db}.campaigns_staging
(
    advertiser_id String,
    campaign_id String,
    cpc_micros Int64,
    name String
)
ENGINE = MergeTree()
ORDER BY campaign_id;
