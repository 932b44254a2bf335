{#-
  The lake is not a database: its Parquet files are exposed as views in the `lake` schema, one
  per source table declared in models/staging/__sources.yml, (re)created by the on-run-start
  hook `register_lake_sources()`. Each source's `meta.lake_glob` is a glob under the lake root
  and its declared columns (with data_type) are the contract: the view casts to those types, so
  a file written with a wider/narrower type or a missing column cannot change a mart's schema.

  A fresh lake has no file behind a glob and read_parquet() fails on an empty glob, so such a
  source becomes an empty view of the declared types instead; marts then build empty. Views
  re-glob at query time, so new files show up without a rebuild once a glob matched once.
-#}

{% macro lake_root() -%}
  {%- set root = var('lake_url', '') or env_var('CLICKAGG_LAKE_URL', '') -%}
  {%- if not root -%}
    {%- set root = env_var('CLICKAGG_LOCAL_DIR', '.local') ~ '/lake' -%}
  {%- endif -%}
  {#- DuckDB reads plain paths; keep s3:// (httpfs) as is. -#}
  {%- if root.startswith('file://') -%}
    {%- set root = root[7:] -%}
  {%- endif -%}
  {{- return(root.rstrip('/')) -}}
{%- endmacro %}


{% macro lake_glob(source_node) -%}
  {%- set topic = var('clicks_topic', '') or env_var('CLICKAGG_CLICKS_TOPIC', 'clicks') -%}
  {%- set pattern = source_node.meta.lake_glob | replace('{clicks_topic}', topic) -%}
  {{- return(lake_root() ~ '/' ~ pattern) -}}
{%- endmacro %}


{% macro sql_string(value) -%}
  {{- return("'" ~ (value | replace("'", "''")) ~ "'") -}}
{%- endmacro %}


{% macro lake_source_sql(source_node, glob, has_files) -%}
  {%- set columns = source_node.columns.values() | list -%}
  {%- if columns | length == 0 -%}
    {{ exceptions.raise_compiler_error(
        "source " ~ source_node.name ~ " declares no columns: the lake contract needs them") }}
  {%- endif -%}
  select
  {%- for column in columns %}
    {%- if has_files %}
    cast({{ adapter.quote(column.name) }} as {{ column.data_type }}) as {{ adapter.quote(column.name) }},
    {%- else %}
    cast(null as {{ column.data_type }}) as {{ adapter.quote(column.name) }},
    {%- endif %}
  {%- endfor %}
  {%- if has_files %}
    filename as _lake_file
  from read_parquet(
    {{ sql_string(glob) }},
    union_by_name = true,
    hive_partitioning = false,
    filename = true
  )
  {%- else %}
    cast(null as varchar) as _lake_file
  where false
  {%- endif %}
{%- endmacro %}


{% macro register_lake_sources() %}
  {%- if not execute -%}{{ return('') }}{%- endif -%}
  {%- set statements = [] -%}
  {%- for source_node in graph.sources.values()
        if source_node.package_name == project_name and source_node.meta.get('lake_glob') -%}
    {%- set glob = lake_glob(source_node) -%}
    {%- set found = run_query('select count(*) from glob(' ~ sql_string(glob) ~ ')') -%}
    {%- set has_files = found.columns[0].values()[0] > 0 -%}
    {%- if not has_files -%}
      {{ log("lake: no file matches " ~ glob ~ "; " ~ source_node.name ~ " is empty", info=True) }}
    {%- endif -%}
    {%- set relation = api.Relation.create(
          database=source_node.database,
          schema=source_node.schema,
          identifier=source_node.identifier) -%}
    {%- do statements.append(
          'create schema if not exists ' ~ relation.without_identifier() ~ ';\n'
          ~ 'create or replace view ' ~ relation ~ ' as (\n'
          ~ lake_source_sql(source_node, glob, has_files) ~ '\n);') -%}
  {%- endfor -%}
  {{ return(statements | join('\n')) }}
{% endmacro %}
