{{ config(meta={"dagster": {"ref": {"name": "fct_advertiser_invoice"}}}) }}

-- Every invoice's totals equal the sum of its lines, and every line belongs to an invoice.

with

lines as (

    select
        invoice_id,
        sum(clicks) as line_clicks,
        sum(amount_micros) as line_micros

    from {{ ref('fct_advertiser_invoice_lines') }}
    group by invoice_id

),

invoices as (

    select * from {{ ref('fct_advertiser_invoice') }}

),

final as (

    select
        coalesce(invoices.invoice_id, lines.invoice_id) as invoice_id,
        invoices.total_clicks,
        lines.line_clicks,
        invoices.total_micros,
        lines.line_micros

    from invoices
    full outer join lines using (invoice_id)
    where invoices.total_clicks is distinct from lines.line_clicks
        or invoices.total_micros is distinct from lines.line_micros

)

select * from final
