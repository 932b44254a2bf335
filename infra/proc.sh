#!/usr/bin/env bash
# Tiny process supervisor for the demo: infra/proc.sh start NAME CMD... | stop NAME | status NAME
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=${CLICKAGG_LOCAL_DIR:-$ROOT/.local}/run
mkdir -p "$RUN"
name=${2:-}
pidf=$RUN/$name.pid
alive() { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }
case "${1:-}" in
  start)
    shift 2
    if alive; then echo "[$name] already running (pid $(cat "$pidf"))" >&2; exit 0; fi
    cd "$ROOT"
    # a session of its own (no controlling terminal, own process group): stop signals the
    # whole group, so children (uvicorn/faust workers) go too. $! is the command itself.
    setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null &
    echo $! >"$pidf"
    echo "[$name] started (pid $(cat "$pidf")), log $RUN/$name.log" >&2 ;;
  stop)
    if alive; then
      pid=$(cat "$pidf"); kill -TERM -- -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL -- -"$pid" 2>/dev/null || true
      echo "[$name] stopped" >&2
    fi
    rm -f "$pidf" ;;
  status) if alive; then echo "$name: up (pid $(cat "$pidf"))"; else echo "$name: down"; exit 1; fi ;;
  *) echo "usage: $0 start NAME CMD...|stop NAME|status NAME" >&2; exit 2 ;;
esac
