-- One row per billed day and campaign: what was billed when the day closed, plus every later
-- adjustment of that day (whatever invoice it landed on) and the resulting corrected totals.
-- A (day, campaign) can exist only through adjustments (no billable click at close, late clicks
-- after): it shows zero billed clicks and the catalog CPC.

with

billing as (

    select * from {{ ref('stg_lake__billing_daily') }}

),

adjustments as (

    select * from {{ ref('stg_lake__billing_adjustments') }}

),

campaigns as (

    select * from {{ ref('stg_lake__campaigns') }}

),

adjustments_per_day as (

    select
        billed_day,
        advertiser_id,
        campaign_id,
        count(*) as adjustment_count,
        cast(sum(delta_clicks) as bigint) as adjustment_clicks,
        cast(sum(delta_spend_micros) as bigint) as adjustment_spend_micros

    from adjustments
    group by billed_day, advertiser_id, campaign_id

),

joined as (

    select
        coalesce(billing.billed_day, adjustments_per_day.billed_day) as billed_day,
        coalesce(billing.advertiser_id, adjustments_per_day.advertiser_id) as advertiser_id,
        coalesce(billing.campaign_id, adjustments_per_day.campaign_id) as campaign_id,
        coalesce(billing.billable_clicks, 0) as billable_clicks,
        coalesce(billing.cpc_micros, campaigns.cpc_micros) as cpc_micros,
        coalesce(billing.spend_micros, 0) as spend_micros,
        billing.billed_at,
        billing.billing_version,
        coalesce(adjustments_per_day.adjustment_count, 0) as adjustment_count,
        coalesce(adjustments_per_day.adjustment_clicks, 0) as adjustment_clicks,
        coalesce(adjustments_per_day.adjustment_spend_micros, 0) as adjustment_spend_micros

    from billing
    full outer join adjustments_per_day
        on billing.billed_day = adjustments_per_day.billed_day
        and billing.advertiser_id = adjustments_per_day.advertiser_id
        and billing.campaign_id = adjustments_per_day.campaign_id
    left join campaigns
        on campaigns.campaign_id = coalesce(billing.campaign_id, adjustments_per_day.campaign_id)

),

final as (

    select
        concat_ws('|', campaign_id, strftime(billed_day, '%Y-%m-%d')) as billing_day_id,
        billed_day,
        advertiser_id,
        campaign_id,
        billable_clicks,
        cpc_micros,
        spend_micros,
        billed_at,
        billing_version,
        adjustment_count,
        adjustment_clicks,
        adjustment_spend_micros,
        billable_clicks + adjustment_clicks as adjusted_clicks,
        spend_micros + adjustment_spend_micros as adjusted_spend_micros

    from joined

)

select * from final
