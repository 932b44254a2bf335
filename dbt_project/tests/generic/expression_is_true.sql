{#- Rows where the invariant `expression` does not hold (null counts as a failure). -#}
{% test expression_is_true(model, expression) %}

select *
from {{ model }}
where not coalesce(({{ expression }}), false)

{% endtest %}
