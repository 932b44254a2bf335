-- Batch-reconciled billable clicks per minute, campaign and ad (the truth for money).

with

source as (

    select * from {{ source('lake', 'minute_aggregates') }}

),

final as (

    select
        window_start as minute_start,
        advertiser_id,
        campaign_id,
        ad_id,
        clicks as billable_clicks,
        _lake_file

    from source

)

select * from final
