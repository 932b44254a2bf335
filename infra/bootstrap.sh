#!/usr/bin/env bash
# Install what is missing on a fresh Debian machine: system packages (Java for Kafka/Spark,
# Maven to fetch the broker and S3A jars, curl, ClickHouse), then the Python virtualenv from the lock.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { printf '[bootstrap] %s\n' "$*" >&2; }

need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)  # throwaway CA of the Kafka TLS/SASL test
command -v promtool >/dev/null || need+=(prometheus)  # promtool validates the alert rules
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)  # demo/alert tests
command -v wrk >/dev/null || need+=(wrk)  # load generator of bench-capture
command -v chromium >/dev/null || need+=(chromium fonts-dejavu-core)  # dashboard browser test
command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || need+=(clickhouse-server clickhouse-client)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "missing ${need[*]}; run as root or install them"; exit 1; fi
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
STAMP=.venv/.installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ constraints.txt -nt "$STAMP" ]; then
  log "creating .venv and installing the locked dependencies"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade "pip>=24" >/dev/null
  .venv/bin/pip install -q -c constraints.txt -e ".[dev]"
  touch "$STAMP"
fi
infra/kafka.sh fetch
infra/spark.sh jars  # S3A connector for Spark on an s3:// lake (CLICKAGG_SPARK_S3A)
