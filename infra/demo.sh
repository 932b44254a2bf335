#!/usr/bin/env bash
# `make demo`: start the whole platform locally with live traffic and print where to look.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
CAPTURE_PORT=${CLICKAGG_CAPTURE_PORT:-18080}
RATE=${DEMO_RATE:-50}

case "${1:-start}" in
  stop)
    for p in load worker archiver capture dagster; do infra/proc.sh stop "$p" || true; done
    infra/kafka.sh stop; infra/clickhouse.sh stop
    exit 0 ;;
  status)
    infra/kafka.sh status || true; infra/clickhouse.sh status || true
    for p in capture worker archiver load dagster; do infra/proc.sh status "$p" || true; done
    exit 0 ;;
esac

infra/kafka.sh start
infra/clickhouse.sh start
clickagg topics
clickagg migrate
infra/proc.sh start capture clickagg capture
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$CAPTURE_PORT/healthz" >/dev/null && break; sleep 0.1; done
infra/proc.sh start worker faust -A streaming.app worker -l warning
infra/proc.sh start archiver faust -A streaming.archive_app worker -l warning
if clickagg load --help >/dev/null 2>&1; then
  infra/proc.sh start load clickagg load --rate "$RATE" --duration 86400 \
    --url "http://127.0.0.1:$CAPTURE_PORT" --manifest .local/demo/manifest.json
fi
LINK=$(clickagg mint -a demo-adv -c demo-campaign --ad demo-ad -l "https://example.com/landing")
cat <<MSG

ClickAgg demo is running (stop it with: make demo-stop)
  capture service   http://127.0.0.1:$CAPTURE_PORT        (/healthz /readyz /metrics)
  a signed click    $LINK
  Kafka             127.0.0.1:${CLICKAGG_KAFKA_PORT:-19092}   topic clicks
  ClickHouse        127.0.0.1:${CLICKAGG_CLICKHOUSE_PORT:-19000} (native), http://127.0.0.1:${CLICKAGG_CLICKHOUSE_HTTP_PORT:-18123}
  stream worker     http://127.0.0.1:${CLICKAGG_STREAM_WEB_PORT:-16066}/metrics   (hot table clickagg.hot_clicks)
  raw archiver      http://127.0.0.1:${CLICKAGG_STREAM_ARCHIVE_WEB_PORT:-16067}/metrics   (lake .local/lake/raw)
  traffic           ${RATE} clicks/s through HTTP, ground truth in .local/demo/manifest.json
  logs              .local/run/*.log
MSG
