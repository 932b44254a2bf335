-- Invoice lines per advertiser and invoice period (var invoice_period, default month):
--   * 'billed' lines: one per campaign and billed day whose day falls in the period;
--   * 'adjustment' lines: one per adjustment whose invoice_day falls in the period, whatever
--     day it corrects (a late click of a closed period lands on a later invoice, explicitly).

with

billing as (

    select * from {{ ref('stg_lake__billing_daily') }}

),

adjustments as (

    select * from {{ ref('stg_lake__billing_adjustments') }}

),

billed_lines as (

    select
        advertiser_id,
        {{ invoice_period_start('billed_day') }} as invoice_period_start,
        'billed' as line_type,
        campaign_id,
        billed_day as service_day,
        billing_version as source_version,
        billable_clicks as clicks,
        cpc_micros,
        spend_micros as amount_micros

    from billing

),

adjustment_lines as (

    select
        advertiser_id,
        {{ invoice_period_start('invoice_day') }} as invoice_period_start,
        'adjustment' as line_type,
        campaign_id,
        billed_day as service_day,
        adjustment_version as source_version,
        delta_clicks as clicks,
        cast(null as bigint) as cpc_micros,
        delta_spend_micros as amount_micros

    from adjustments

),

lines as (

    select * from billed_lines
    union all
    select * from adjustment_lines

),

final as (

    select
        concat_ws(
            '|', advertiser_id, strftime(invoice_period_start, '%Y-%m-%d'), line_type,
            campaign_id, strftime(service_day, '%Y-%m-%d'), source_version
        ) as invoice_line_id,
        concat_ws('|', advertiser_id, strftime(invoice_period_start, '%Y-%m-%d')) as invoice_id,
        advertiser_id,
        '{{ invoice_period() }}' as invoice_period,
        invoice_period_start,
        {{ invoice_period_end('invoice_period_start') }} as invoice_period_end,
        line_type,
        campaign_id,
        service_day,
        source_version,
        clicks,
        cpc_micros,
        amount_micros

    from lines

)

select * from final
