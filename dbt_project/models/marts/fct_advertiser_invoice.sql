-- One invoice per advertiser and invoice period: the amounts billed for the days of the period
-- plus the adjustments that land on it (lines in fct_advertiser_invoice_lines).

with

lines as (

    select * from {{ ref('fct_advertiser_invoice_lines') }}

),

invoices as (

    select
        invoice_id,
        advertiser_id,
        invoice_period,
        invoice_period_start,
        invoice_period_end,
        -- sums of bigint are hugeint in DuckDB: money stays an exact bigint
        cast(coalesce(sum(clicks) filter (where line_type = 'billed'), 0) as bigint)
            as billed_clicks,
        cast(coalesce(sum(amount_micros) filter (where line_type = 'billed'), 0) as bigint)
            as billed_micros,
        count(*) filter (where line_type = 'adjustment') as adjustment_line_count,
        cast(coalesce(sum(clicks) filter (where line_type = 'adjustment'), 0) as bigint)
            as adjustment_clicks,
        cast(coalesce(sum(amount_micros) filter (where line_type = 'adjustment'), 0) as bigint)
            as adjustment_micros

    from lines
    group by all

),

final as (

    select
        *,
        billed_clicks + adjustment_clicks as total_clicks,
        billed_micros + adjustment_micros as total_micros

    from invoices

)

select * from final
