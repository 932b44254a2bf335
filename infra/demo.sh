#!/usr/bin/env bash
# `make demo`: start the whole platform locally with live traffic and print where to look.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
CAPTURE_PORT=${CLICKAGG_CAPTURE_PORT:-18080}
RATE=${DEMO_RATE:-50}
# broker metrics (JMX exporter agent) when the demo starts the broker; a broker already running
# keeps its flags (restart it with make demo-stop to get them)
export CLICKAGG_KAFKA_JMX_PORT=${CLICKAGG_KAFKA_JMX_PORT:-19096}

case "${1:-start}" in
  stop)
    infra/prometheus.sh stop || true
    for p in load api clickhouse-metrics dagster-metrics dagster worker archiver capture; do infra/proc.sh stop "$p" || true; done
    infra/kafka.sh stop; infra/clickhouse.sh stop
    exit 0 ;;
  status)
    infra/kafka.sh status || true; infra/clickhouse.sh status || true
    for p in capture worker archiver load api dagster dagster-metrics clickhouse-metrics; do infra/proc.sh status "$p" || true; done
    infra/prometheus.sh status || true
    exit 0 ;;
esac

infra/kafka.sh start
infra/clickhouse.sh start
clickagg topics
clickagg migrate
infra/proc.sh start capture clickagg capture
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$CAPTURE_PORT/healthz" >/dev/null && break; sleep 0.1; done
infra/proc.sh start worker faust -A streaming.app worker -l warn
infra/proc.sh start archiver faust -A streaming.archive_app worker -l warn
# the traffic generator's campaign catalog (deterministic from its seed) feeds billing's CPCs
mkdir -p .local/demo
python - <<'PY'
import csv
from clickagg_platform.loadgen import LoadPlan, build_catalog
with open(".local/demo/campaigns.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["advertiser_id", "campaign_id", "cpc_micros", "name"])
    for c in build_catalog(LoadPlan(seed=42)).campaigns:
        w.writerow([c.advertiser_id, c.campaign_id, c.cpc_micros, c.campaign_id])
PY
clickagg campaigns import .local/demo/campaigns.csv
ADVERTISER=$(awk -F, 'NR==2 {print $1}' .local/demo/campaigns.csv)
infra/proc.sh start load clickagg load --seed 42 --rate "$RATE" --duration 86400 \
  --url "http://127.0.0.1:$CAPTURE_PORT" --manifest .local/demo/manifest.json
infra/proc.sh start api clickagg api
[ -f .local/demo/api_key ] || clickagg apikey create -a "$ADVERTISER" --label demo > .local/demo/api_key
KEY=$(cat .local/demo/api_key)
python -m assets.dbt >/dev/null 2>&1 || echo "[demo] dbt manifest not prepared: dbt assets hidden" >&2
DAGSTER_HOME=${DAGSTER_HOME:-$ROOT/.local/dagster}; export DAGSTER_HOME; mkdir -p "$DAGSTER_HOME"
infra/proc.sh start dagster dagster dev -w workspace.yaml -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}"
for _ in $(seq 150); do curl -fs "http://127.0.0.1:${DAGSTER_PORT:-3000}/server_info" >/dev/null && break; sleep 0.2; done
infra/proc.sh start dagster-metrics clickagg dagster-metrics
infra/proc.sh start clickhouse-metrics clickagg clickhouse-metrics
infra/prometheus.sh start
LINK=$(clickagg mint -a demo-adv -c demo-campaign --ad demo-ad -l "https://example.com/landing")
cat <<MSG

ClickAgg demo is running (stop it with: make demo-stop)
  capture service   http://127.0.0.1:$CAPTURE_PORT        (/healthz /readyz /metrics)
  a signed click    $LINK
  Kafka             127.0.0.1:${CLICKAGG_KAFKA_PORT:-19092}   topic clicks, broker metrics http://127.0.0.1:$CLICKAGG_KAFKA_JMX_PORT/metrics
  ClickHouse        127.0.0.1:${CLICKAGG_CLICKHOUSE_PORT:-19000} (native), http://127.0.0.1:${CLICKAGG_CLICKHOUSE_HTTP_PORT:-18123}
  stream worker     http://127.0.0.1:${CLICKAGG_STREAM_WEB_PORT:-16066}/metrics   (hot table clickagg.hot_clicks)
  raw archiver      http://127.0.0.1:${CLICKAGG_STREAM_ARCHIVE_WEB_PORT:-16067}/metrics   (lake .local/lake/raw)
  traffic           ${RATE} clicks/s through HTTP (seed 42), ground truth in .local/demo/manifest.json
  dashboard         http://127.0.0.1:${CLICKAGG_API_PORT:-18000}/dashboard#key=$KEY
  query API         http://127.0.0.1:${CLICKAGG_API_PORT:-18000}/docs   (advertiser $ADVERTISER, key in .local/demo/api_key)
  Dagster UI        http://127.0.0.1:${DAGSTER_PORT:-3000}   (hourly reconcile at :15, daily billing at 01:30 UTC)
  Dagster metrics   http://127.0.0.1:${CLICKAGG_DAGSTER_METRICS_PORT:-16068}/metrics   (runs, asset checks; for Prometheus)
  ClickHouse metrics http://127.0.0.1:${CLICKAGG_CLICKHOUSE_METRICS_PORT:-16069}/metrics   (system.metrics/events/asynchronous_metrics)
  Prometheus        http://127.0.0.1:${CLICKAGG_PROMETHEUS_PORT:-19090}/alerts   (scrapes all of the above, rules infra/prometheus/alerts.yml)
  Alertmanager      http://127.0.0.1:${CLICKAGG_ALERTMANAGER_PORT:-19094}   (delivers to clickagg alert-log -> .local/alerts.log)
  logs              .local/run/*.log
MSG
