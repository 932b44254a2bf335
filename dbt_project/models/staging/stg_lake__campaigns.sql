-- Campaign catalog.

with

source as (

    select * from {{ source('lake', 'campaigns') }}

),

final as (

    select
        campaign_id,
        advertiser_id,
        name as campaign_name,
        cpc_micros

    from source

)

select * from final
