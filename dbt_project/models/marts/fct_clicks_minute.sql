-- One row per minute, campaign and ad: billable clicks from the batch reconciliation (the
-- truth), next to what the raw log holds for that minute (log records, distinct clicks,
-- duplicate copies of an event_id, clicks flagged as fraud at archive time).
-- A duplicate is any log copy of an event_id after its first one (lowest offset; all copies
-- share a partition since event_id is the Kafka key), counted in its own event minute.
-- `is_reconciled`: the batch has at least one row in the minute's hour (a reconciled hour
-- without any billable click is indistinguishable from one not reconciled yet).

with

batch_minutes as (

    select * from {{ ref('stg_lake__minute_aggregates') }}

),

raw_clicks as (

    select * from {{ ref('stg_lake__raw_clicks') }}
    where not is_decode_error

),

raw_copies as (

    select
        *,
        row_number() over (
            partition by event_id
            order by kafka_partition, kafka_offset
        ) as copy_number

    from raw_clicks

),

raw_minutes as (

    select
        date_trunc('minute', event_at) as minute_start,
        advertiser_id,
        campaign_id,
        ad_id,
        count(*) as raw_records,
        count(*) filter (where copy_number = 1) as raw_clicks,
        count(*) filter (where copy_number > 1) as raw_duplicate_copies,
        count(*) filter (where copy_number = 1 and is_fraud_flagged) as raw_fraud_flagged

    from raw_copies
    group by all

),

reconciled_hours as (

    select distinct date_trunc('hour', minute_start) as hour_start
    from batch_minutes

),

joined as (

    select
        coalesce(batch_minutes.minute_start, raw_minutes.minute_start) as minute_start,
        coalesce(batch_minutes.advertiser_id, raw_minutes.advertiser_id) as advertiser_id,
        coalesce(batch_minutes.campaign_id, raw_minutes.campaign_id) as campaign_id,
        coalesce(batch_minutes.ad_id, raw_minutes.ad_id) as ad_id,
        coalesce(batch_minutes.billable_clicks, 0) as billable_clicks,
        coalesce(raw_minutes.raw_records, 0) as raw_records,
        coalesce(raw_minutes.raw_clicks, 0) as raw_clicks,
        coalesce(raw_minutes.raw_duplicate_copies, 0) as raw_duplicate_copies,
        coalesce(raw_minutes.raw_fraud_flagged, 0) as raw_fraud_flagged

    from batch_minutes
    full outer join raw_minutes
        on batch_minutes.minute_start = raw_minutes.minute_start
        and batch_minutes.campaign_id = raw_minutes.campaign_id
        and batch_minutes.ad_id = raw_minutes.ad_id

),

final as (

    select
        concat_ws(
            '|', strftime(joined.minute_start, '%Y-%m-%dT%H:%MZ'), joined.campaign_id, joined.ad_id
        ) as clicks_minute_id,
        joined.*,
        reconciled_hours.hour_start is not null as is_reconciled

    from joined
    left join reconciled_hours
        on reconciled_hours.hour_start = date_trunc('hour', joined.minute_start)

)

select * from final
