#!/usr/bin/env bash
# Run one benchmark: infra/bench.sh capture|stream|... (starts the services it needs, stops them)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
name=${1:?usage: infra/bench.sh NAME [args]}; shift
if ! command -v wrk >/dev/null || ! command -v taskset >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq wrk util-linux >/dev/null
fi
started=()
cleanup() { local rc=$?; for s in "${started[@]}"; do infra/"$s".sh stop || true; done; exit $rc; }
trap cleanup EXIT INT TERM
for svc in kafka clickhouse; do
  if ! infra/"$svc".sh health; then infra/"$svc".sh start; started+=("$svc"); fi
done
.venv/bin/python "benchmarks/bench_$name.py" "$@"
