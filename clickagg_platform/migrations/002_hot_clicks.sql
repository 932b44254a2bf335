-- Hot (streaming) aggregates. One row per (minute, campaign, ad, source, source partition) and
-- version: `clicks` is an ABSOLUTE count (stage 1, source = 0) or an absolute subtraction
-- (stage 2 fraud corrections, source = 1, negative), and `version` is the offset of the last
-- record that changed it. A re-emit after a crash carries the same (version, clicks) or a newer
-- version, so replays replace rather than add. Readers take argMax(clicks, version) per key and
-- sum (view hot_totals / clickagg_platform.hot_queries); merges only save space.
-- Sorted by campaign first: the API reads one campaign over a time range.
CREATE TABLE IF NOT EXISTS {db}.hot_clicks
(
    window_start DateTime('UTC'),
    campaign_id String,
    ad_id String,
    source UInt8,
    source_partition UInt16,
    clicks Int64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(window_start)
ORDER BY (campaign_id, window_start, ad_id, source, source_partition);

CREATE VIEW IF NOT EXISTS {db}.hot_totals AS
SELECT window_start, campaign_id, ad_id, sum(latest) AS clicks
FROM
(
    SELECT window_start, campaign_id, ad_id, source, source_partition,
        argMax(clicks, version) AS latest
    FROM {db}.hot_clicks
    GROUP BY window_start, campaign_id, ad_id, source, source_partition
)
GROUP BY window_start, campaign_id, ad_id;
