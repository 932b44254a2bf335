-- One row per Kafka log record. A block still filling is archived as a partial file and later
-- superseded by a longer one with the same first offset, so a record can be read twice: keep
-- one copy per (kafka_partition, kafka_offset), preferring the longest file. Copies of the same
-- event_id at different offsets are real log records (retries) and stay: marts count them.

with

source as (

    select * from {{ source('lake', 'raw_clicks') }}

),

renamed as (

    select
        kafka_partition,
        kafka_offset,
        event_id,
        impression_id,
        advertiser_id,
        campaign_id,
        ad_id,
        publisher_id,
        timezone('UTC', epoch_ms(event_time)) as event_at,
        timezone('UTC', epoch_ms(received_at)) as received_at,
        timezone('UTC', epoch_ms(kafka_timestamp)) as kafka_timestamp_at,
        ip_hash,
        user_agent,
        user_key,
        token_key_id,
        schema_version,
        fraud_reason,
        fraud_reason is not null as is_fraud_flagged,
        decode_error,
        decode_error is not null as is_decode_error,
        _lake_file

    from source

),

deduplicated as (

    select * from renamed
    -- offsets are zero-padded in file names: the longest file sorts last
    qualify row_number() over (
        partition by kafka_partition, kafka_offset
        order by _lake_file desc
    ) = 1

),

final as (

    select * from deduplicated

)

select * from final
