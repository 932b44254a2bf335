{#- Invoice period granularity (var invoice_period: month | week | day), validated once. -#}
{% macro invoice_period() -%}
  {%- set period = var('invoice_period', 'month') -%}
  {%- if period not in ['month', 'week', 'day'] -%}
    {{ exceptions.raise_compiler_error(
        "var invoice_period must be month, week or day, not " ~ period) }}
  {%- endif -%}
  {{- return(period) -}}
{%- endmacro %}

{#- First day of the invoice period holding `day_column` (weeks start on Monday, ISO). -#}
{% macro invoice_period_start(day_column) -%}
  cast(date_trunc('{{ invoice_period() }}', {{ day_column }}) as date)
{%- endmacro %}

{#- Last day of the invoice period that starts on `start_column`. -#}
{% macro invoice_period_end(start_column) -%}
  cast({{ start_column }} + interval 1 {{ invoice_period() }} - interval 1 day as date)
{%- endmacro %}
