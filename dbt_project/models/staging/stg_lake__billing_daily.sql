-- Daily billing per campaign. A day can be re-billed with a higher version (and a file can be
-- rewritten): the latest version per (day, campaign) is what was billed.

with

source as (

    select * from {{ source('lake', 'billing_daily') }}

),

renamed as (

    select
        day as billed_day,
        advertiser_id,
        campaign_id,
        billable_clicks,
        cpc_micros,
        spend_micros,
        billed_at,
        version as billing_version,
        _lake_file

    from source

),

latest as (

    select * from renamed
    qualify row_number() over (
        partition by billed_day, advertiser_id, campaign_id
        order by billing_version desc, billed_at desc
    ) = 1

),

final as (

    select * from latest

)

select * from final
