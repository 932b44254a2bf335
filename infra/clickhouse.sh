#!/usr/bin/env bash
# Local ClickHouse server for development and tests.
#   infra/clickhouse.sh install|start|stop|kill|status|health
# Ports: CLICKAGG_CLICKHOUSE_PORT (native, 19000), CLICKAGG_CLICKHOUSE_HTTP_PORT (18123).
# If CLICKAGG_CLICKHOUSE_EXTERNAL=1, an external server is used: start/stop do nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOCAL=${CLICKAGG_LOCAL_DIR:-$ROOT/.local}
DIR=$LOCAL/clickhouse
TCP_PORT=${CLICKAGG_CLICKHOUSE_PORT:-19000}
HTTP_PORT=${CLICKAGG_CLICKHOUSE_HTTP_PORT:-18123}
PIDFILE=$DIR/clickhouse.pid

log() { printf '[clickhouse] %s\n' "$*" >&2; }
external() { [ "${CLICKAGG_CLICKHOUSE_EXTERNAL:-0}" = "1" ]; }

server_bin() {
  if command -v clickhouse-server >/dev/null; then command -v clickhouse-server; return; fi
  [ -x /usr/sbin/clickhouse-server ] && { echo /usr/sbin/clickhouse-server; return; }
  [ -x /usr/bin/clickhouse ] && { echo "/usr/bin/clickhouse server"; return; }
  return 1
}

install() {
  if server_bin >/dev/null; then return 0; fi
  log "installing clickhouse-server from Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
}

render() {
  mkdir -p "$DIR"/{logs,data,tmp,user_files,format_schemas}
  sed -e "s#@DIR@#$DIR#g" -e "s#@TCP_PORT@#$TCP_PORT#g" -e "s#@HTTP_PORT@#$HTTP_PORT#g" \
    "$ROOT/infra/clickhouse/config.xml.in" > "$DIR/config.xml"
  cp "$ROOT/infra/clickhouse/users.xml" "$DIR/users.xml"
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

ping() { curl -fsS --max-time 2 "http://127.0.0.1:$HTTP_PORT/ping" 2>/dev/null | grep -q Ok; }

health() {
  if external; then return 0; fi
  running && ping
}

start() {
  if external; then log "external server configured: nothing to start"; return 0; fi
  if running; then log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$TCP_PORT"; wait_ready; return 0; fi
  if ping; then log "port $HTTP_PORT is answered by another server"; exit 1; fi
  install; render
  log "starting server on 127.0.0.1:$TCP_PORT (native), :$HTTP_PORT (http)"
  # shellcheck disable=SC2046
  nohup $(server_bin) --config-file="$DIR/config.xml" >"$DIR/logs/stdout.log" 2>&1 </dev/null &
  echo $! > "$PIDFILE"
  wait_ready
  log "ready"
}

wait_ready() {
  local deadline=$((SECONDS + 60))
  until ping; do
    if ! running; then log "server exited; see $DIR/logs"; tail -n 20 "$DIR/logs/server.err.log" "$DIR/logs/stdout.log" >&2 || true; exit 1; fi
    [ $SECONDS -ge $deadline ] && { log "not ready after 60s"; exit 1; }
    sleep 0.2
  done
}

stop() {
  if external || ! running; then rm -f "$PIDFILE"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  log "stopping server (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  done
  rm -f "$PIDFILE"
}

kill9() {
  if running; then kill -KILL "$(cat "$PIDFILE")"; while running; do sleep 0.1; done; rm -f "$PIDFILE"; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  kill) kill9 ;;
  status) if health; then echo "clickhouse: up (127.0.0.1:$TCP_PORT)"; else echo "clickhouse: down"; exit 1; fi ;;
  health) health ;;
  *) echo "usage: $0 install|start|stop|kill|status|health" >&2; exit 2 ;;
esac
