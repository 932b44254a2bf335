-- Corrections of closed billing days: each version is one incremental delta that lands on the
-- invoice period of `invoice_day`. Identical rows (a rewritten file) collapse to one.

with

source as (

    select * from {{ source('lake', 'billing_adjustments') }}

),

renamed as (

    select
        billed_day,
        advertiser_id,
        campaign_id,
        version as adjustment_version,
        delta_clicks,
        delta_spend_micros,
        invoice_day,
        detected_at,
        _lake_file

    from source

),

deduplicated as (

    select * from renamed
    qualify row_number() over (
        partition by billed_day, advertiser_id, campaign_id, adjustment_version
        order by detected_at desc
    ) = 1

),

final as (

    select
        concat_ws(
            '|', advertiser_id, campaign_id, strftime(billed_day, '%Y-%m-%d'), adjustment_version
        ) as adjustment_id,
        *

    from deduplicated

)

select * from final
