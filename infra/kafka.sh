#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft) for development and tests.
#   infra/kafka.sh fetch|format|start|stop|status|health
# Ports: CLICKAGG_KAFKA_PORT (19092), CLICKAGG_KAFKA_CONTROLLER_PORT (19093).
# If CLICKAGG_KAFKA_BOOTSTRAP is set, an external cluster is used: start/stop do nothing.
# Extra listeners (tests: a SASL_SSL one): CLICKAGG_KAFKA_EXTRA_CONF names a properties file
# appended to the rendered config (later keys win), CLICKAGG_KAFKA_SCRAM a SCRAM credential
# created at format time ('SCRAM-SHA-256=[name=u,password=p]', kafka-storage --add-scram).
# Broker metrics: with CLICKAGG_KAFKA_JMX_PORT set, the Prometheus JMX exporter java agent
# (infra/kafka/pom.xml, rules infra/kafka/jmx-exporter.yml) serves 127.0.0.1:<port>/metrics.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOCAL=${CLICKAGG_LOCAL_DIR:-$ROOT/.local}
KDIR=$LOCAL/kafka
LIBS=$KDIR/libs
PORT=${CLICKAGG_KAFKA_PORT:-19092}
CPORT=${CLICKAGG_KAFKA_CONTROLLER_PORT:-19093}
PIDFILE=$KDIR/kafka.pid
CONF=$KDIR/server.properties
DATA=$KDIR/data
HEAP=${CLICKAGG_KAFKA_HEAP:-512m}

log() { printf '[kafka] %s\n' "$*" >&2; }

external() { [ -n "${CLICKAGG_KAFKA_BOOTSTRAP:-}" ]; }

fetch() {
  if [ -f "$LIBS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "mvn not found (apt-get install maven)"; exit 1; }
  log "fetching broker jars from Maven Central into $LIBS"
  mkdir -p "$LIBS"
  mvn -q -B -f "$ROOT/infra/kafka/pom.xml" dependency:copy-dependencies -Dkafka.libs="$LIBS"
  touch "$LIBS/.complete"
}

AGENT=$LIBS/agent/jmx_prometheus_javaagent.jar
JMX_VERSION=$(sed -n 's#.*<jmx.exporter.version>\(.*\)</jmx.exporter.version>.*#\1#p' "$ROOT/infra/kafka/pom.xml")

# the agent has its own marker: a machine whose broker jars were fetched before gets it too
fetch_agent() {
  if [ -f "$LIBS/agent/.complete-$JMX_VERSION" ]; then return 0; fi
  log "fetching the JMX exporter agent $JMX_VERSION into $LIBS/agent"
  mkdir -p "$LIBS/agent"
  mvn -q -B -f "$ROOT/infra/kafka/pom.xml" dependency:copy@jmx-agent -Dkafka.libs="$LIBS" >&2
  touch "$LIBS/agent/.complete-$JMX_VERSION"
}

agent_opts() {
  [ -n "${CLICKAGG_KAFKA_JMX_PORT:-}" ] || return 0
  fetch_agent
  echo "-javaagent:$AGENT=127.0.0.1:$CLICKAGG_KAFKA_JMX_PORT:$ROOT/infra/kafka/jmx-exporter.yml"
}

render() {
  mkdir -p "$KDIR/logs"
  sed -e "s#@PORT@#$PORT#g" -e "s#@CONTROLLER_PORT@#$CPORT#g" -e "s#@DATA_DIR@#$DATA#g" \
    "$ROOT/infra/kafka/server.properties.in" > "$CONF"
  if [ -n "${CLICKAGG_KAFKA_EXTRA_CONF:-}" ]; then cat "$CLICKAGG_KAFKA_EXTRA_CONF" >> "$CONF"; fi
}

java_cmd() {
  java -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$ROOT/infra/kafka/log4j.properties" -Dkafka.logs.dir="$KDIR/logs" \
    -cp "$LIBS/*" "$@"
}

format() {
  fetch; render
  if [ -f "$DATA/meta.properties" ]; then return 0; fi
  log "formatting KRaft storage in $DATA"
  local id
  id=$(java_cmd kafka.tools.StorageTool random-uuid | tail -n1)
  local scram=()
  if [ -n "${CLICKAGG_KAFKA_SCRAM:-}" ]; then scram=(--add-scram "$CLICKAGG_KAFKA_SCRAM"); fi
  java_cmd kafka.tools.StorageTool format -t "$id" -c "$CONF" --ignore-formatted "${scram[@]}" >/dev/null
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

health() {
  if external; then port_open_ext; return; fi
  running && port_open
}

port_open_ext() { return 0; }

wait_ready() {
  local deadline=$((SECONDS + ${1:-60}))
  until health; do
    if ! running; then log "broker exited; see $KDIR/logs/server.log and $KDIR/stdout.log"; tail -n 30 "$KDIR/stdout.log" >&2 || true; exit 1; fi
    [ $SECONDS -ge $deadline ] && { log "not ready after ${1:-60}s"; exit 1; }
    sleep 0.2
  done
}

start() {
  if external; then log "external cluster $CLICKAGG_KAFKA_BOOTSTRAP configured: nothing to start"; return 0; fi
  if running; then log "already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; wait_ready 60; return 0; fi
  if port_open; then log "port $PORT is taken by another process"; exit 1; fi
  format
  local agent; agent=$(agent_opts)
  log "starting broker on 127.0.0.1:$PORT${agent:+ (broker metrics on 127.0.0.1:$CLICKAGG_KAFKA_JMX_PORT/metrics)}"
  # shellcheck disable=SC2086 # $agent is one option or none
  nohup java $agent -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -Djava.awt.headless=true -Dclickagg.role=kafka \
    -Dlog4j.configuration="file:$ROOT/infra/kafka/log4j.properties" -Dkafka.logs.dir="$KDIR/logs" \
    -cp "$LIBS/*" kafka.Kafka "$CONF" >"$KDIR/stdout.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  wait_ready 90
  log "ready"
}

stop() {
  if external; then return 0; fi
  if ! running; then rm -f "$PIDFILE"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  log "stopping broker (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + ${STOP_TIMEOUT:-60}))
  while kill -0 "$pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then log "did not stop in time: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    sleep 0.2
  done
  rm -f "$PIDFILE"
}

kill9() {
  if running; then kill -KILL "$(cat "$PIDFILE")"; while running; do sleep 0.1; done; rm -f "$PIDFILE"; fi
}

case "${1:-}" in
  fetch) fetch; if [ -n "${CLICKAGG_KAFKA_JMX_PORT:-}" ]; then fetch_agent; fi ;;
  format) format ;;
  start) start ;;
  stop) stop ;;
  kill) kill9 ;;
  status) if health; then echo "kafka: up (127.0.0.1:$PORT)"; else echo "kafka: down"; exit 1; fi ;;
  health) health ;;
  *) echo "usage: $0 fetch|format|start|stop|kill|status|health" >&2; exit 2 ;;
esac
