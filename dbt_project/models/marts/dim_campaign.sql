-- One row per campaign of the catalog, with the span of days it was billed.

with

campaigns as (

    select * from {{ ref('stg_lake__campaigns') }}

),

billing as (

    select * from {{ ref('stg_lake__billing_daily') }}

),

billing_span as (

    select
        campaign_id,
        min(billed_day) as first_billed_day,
        max(billed_day) as last_billed_day

    from billing
    group by campaign_id

),

final as (

    select
        campaigns.campaign_id,
        campaigns.advertiser_id,
        campaigns.campaign_name,
        campaigns.cpc_micros,
        billing_span.first_billed_day,
        billing_span.last_billed_day

    from campaigns
    left join billing_span using (campaign_id)

)

select * from final
