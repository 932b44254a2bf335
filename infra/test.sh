#!/usr/bin/env bash
# Run the whole test suite against real services: start what is not running, stop what we started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
started=()
cleanup() {
  local rc=$?
  for svc in "${started[@]}"; do infra/"$svc".sh stop || true; done
  exit $rc
}
trap cleanup EXIT INT TERM
for svc in kafka clickhouse; do
  if ! infra/"$svc".sh health; then
    infra/"$svc".sh start
    started+=("$svc")
  fi
done
.venv/bin/ruff check .
.venv/bin/python -m assets.dbt  # the dbt manifest, prepared ahead of time (never at import)
.venv/bin/python -m pytest -p no:cacheprovider -q -ra "$@"
