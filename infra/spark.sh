#!/usr/bin/env bash
# A local Spark standalone cluster from the installed pyspark: a master, two workers and (unless
# CLICKAGG_SPARK_CONNECT=0) a Spark Connect server that runs its jobs on that cluster.
#   infra/spark.sh start|stop|status|env|jars
# `jars` fetches the S3A connector (hadoop-aws + the AWS SDK v2 modules it needs,
# infra/spark/pom.xml) into $CLICKAGG_SPARK_JARS_DIR (default .local/spark/jars) once; `start`
# hands those jars, when fetched, to the Connect server (s3a:// reads through Connect).
# `start-connect` starts only a Connect server on an already running master (a second one:
# own CLICKAGG_SPARK_DIR and CLICKAGG_SPARK_CONNECT_PORT; `stop` with that dir stops it);
# CLICKAGG_SPARK_CONNECT_CONF adds space-separated key=value settings to the Connect server.
# Everything binds to 127.0.0.1. Pids and logs: $CLICKAGG_SPARK_DIR (default .local/spark).
# Ports: CLICKAGG_SPARK_MASTER_PORT (17077), CLICKAGG_SPARK_MASTER_UI_PORT (18090),
# CLICKAGG_SPARK_WORKER_UI_PORT (18091, 18092 for the second), CLICKAGG_SPARK_CONNECT_PORT
# (15012). Size: CLICKAGG_SPARK_WORKER_CORES (2) and CLICKAGG_SPARK_WORKER_MEMORY (1g) per worker.
# `env` prints the CLICKAGG_SPARK_MASTER / CLICKAGG_SPARK_REMOTE lines to point the assets here.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOCAL=${CLICKAGG_LOCAL_DIR:-$ROOT/.local}
DIR=${CLICKAGG_SPARK_DIR:-$LOCAL/spark}
PY=${CLICKAGG_PYTHON:-$ROOT/.venv/bin/python}
MASTER_PORT=${CLICKAGG_SPARK_MASTER_PORT:-17077}
UI_PORT=${CLICKAGG_SPARK_MASTER_UI_PORT:-18090}
WORKER_UI=${CLICKAGG_SPARK_WORKER_UI_PORT:-18091}
CONNECT_PORT=${CLICKAGG_SPARK_CONNECT_PORT:-15012}
CONNECT=${CLICKAGG_SPARK_CONNECT:-1}
CORES=${CLICKAGG_SPARK_WORKER_CORES:-2}
MEMORY=${CLICKAGG_SPARK_WORKER_MEMORY:-1g}
TIMEOUT=${CLICKAGG_SPARK_START_TIMEOUT_S:-120}
MASTER_URL=spark://127.0.0.1:$MASTER_PORT
JARS=${CLICKAGG_SPARK_JARS_DIR:-$LOCAL/spark/jars}

log() { printf '[spark] %s\n' "$*" >&2; }

spark_home() { "$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'; }

export SPARK_LOCAL_IP=127.0.0.1 SPARK_LOCAL_HOSTNAME=127.0.0.1
export SPARK_DAEMON_MEMORY=${SPARK_DAEMON_MEMORY:-256m}
export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$PY} # Python workers of executors: the project's venv
export SPARK_LOG_DIR=$DIR SPARK_LOCAL_DIRS=$DIR/tmp

pidfile() { echo "$DIR/$1.pid"; }
alive() { [ -f "$(pidfile "$1")" ] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }

launch() { # NAME CMD...: own session (stop signals the group), pid of the JVM itself
  local name=$1; shift
  if alive "$name"; then log "$name already running (pid $(cat "$(pidfile "$name")"))"; return; fi
  setsid "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
  log "$name started (pid $!), log $DIR/$name.log"
}

alive_workers() { # number of ALIVE workers registered with the master (0 if it does not answer)
  curl -fsS --max-time 2 "http://127.0.0.1:$UI_PORT/json/" 2>/dev/null |
    "$PY" -c 'import json, sys; print(sum(w["state"] == "ALIVE" for w in json.load(sys.stdin)["workers"]))' \
      2>/dev/null || echo 0
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # NAME WHAT CMD...: poll CMD until it succeeds, NAME's process exits or time is up
  local name=$1 what=$2; shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@"; do
    if ! alive "$name"; then
      log "$name exited while waiting for $what: see $DIR/$name.log"
      tail -5 "$DIR/$name.log" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "timed out after ${TIMEOUT}s waiting for $what (logs in $DIR)"
      return 1
    fi
    sleep 0.5
  done
}

jars() { # the S3A jars, fetched once through Maven like the Kafka broker jars
  if [ -f "$JARS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "mvn not found (apt-get install maven)"; exit 1; }
  log "fetching the S3A jars (hadoop-aws + AWS SDK v2 modules) from Maven Central into $JARS"
  mkdir -p "$JARS"
  mvn -q -B -f "$ROOT/infra/spark/pom.xml" dependency:copy-dependencies -Dspark.jars.dir="$JARS" >&2
  touch "$JARS/.complete"
}

jar_list() { # comma-separated fetched jars (empty if not fetched)
  [ -f "$JARS/.complete" ] || return 0
  local IFS=,
  local files=("$JARS"/*.jar)
  echo "${files[*]}"
}

two_workers() { [ "$(alive_workers)" -ge 2 ]; }
connect_up() { port_open "$CONNECT_PORT"; }

start_connect() { # the Connect server alone, on the master at $MASTER_URL
  mkdir -p "$DIR/tmp"
  local home
  home=$(spark_home)
  export SPARK_HOME=$home
  # a long-running driver on the cluster: one 1-core executor, so apps of the tests still fit
  # (the launcher sizes the Connect server's JVM like a daemon: SPARK_DAEMON_MEMORY)
  local jar_opts=() extra=() kv
  local list
  list=$(jar_list)
  if [ -n "$list" ]; then jar_opts=(--jars "$list"); else log "connect: no S3A jars ($0 jars)"; fi
  # CLICKAGG_SPARK_CONNECT_CONF: extra key=value settings of the server (space-separated)
  for kv in ${CLICKAGG_SPARK_CONNECT_CONF:-}; do extra+=(--conf "$kv"); done
  SPARK_DAEMON_MEMORY=768m launch connect "$home/bin/spark-submit" \
    --class org.apache.spark.sql.connect.service.SparkConnectServer "${jar_opts[@]}" \
    --name clickagg-connect --master "$MASTER_URL" \
    --driver-memory 768m --executor-memory 512m \
    --conf spark.cores.max=1 --conf spark.executor.cores=1 \
    --conf spark.driver.host=127.0.0.1 --conf spark.driver.bindAddress=127.0.0.1 \
    --conf spark.ui.enabled=false --conf spark.sql.session.timeZone=UTC \
    --conf spark.connect.grpc.binding.address=127.0.0.1 \
    --conf spark.connect.grpc.binding.port="$CONNECT_PORT" \
    --conf spark.executorEnv.PYSPARK_PYTHON="$PYSPARK_PYTHON" "${extra[@]}"
  wait_for connect "Spark Connect on :$CONNECT_PORT" connect_up
}

start() {
  mkdir -p "$DIR/tmp" "$DIR/work"
  local home
  home=$(spark_home)
  export SPARK_HOME=$home
  local cls=$home/bin/spark-class
  launch master "$cls" org.apache.spark.deploy.master.Master \
    -h 127.0.0.1 -p "$MASTER_PORT" --webui-port "$UI_PORT"
  wait_for master "the master's UI on :$UI_PORT" port_open "$UI_PORT"
  for i in 1 2; do
    launch "worker$i" "$cls" org.apache.spark.deploy.worker.Worker \
      -h 127.0.0.1 --webui-port $((WORKER_UI + i - 1)) --cores "$CORES" --memory "$MEMORY" \
      --work-dir "$DIR/work/worker$i" "$MASTER_URL"
  done
  wait_for worker2 "2 ALIVE workers at $MASTER_URL" two_workers
  if [ "$CONNECT" = "1" ]; then start_connect; fi
  log "up: $MASTER_URL (UI http://127.0.0.1:$UI_PORT)$([ "$CONNECT" = 1 ] && echo ", sc://127.0.0.1:$CONNECT_PORT")"
}

stop_one() {
  local name=$1 pid
  if alive "$name"; then
    pid=$(cat "$(pidfile "$name")")
    kill -TERM -- -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- -"$pid" 2>/dev/null || true
    log "$name stopped"
  fi
  rm -f "$(pidfile "$name")"
}

stop() { for name in connect worker2 worker1 master; do stop_one "$name"; done; }

status() {
  local ok=0
  for name in master worker1 worker2; do
    if alive "$name"; then echo "$name: up (pid $(cat "$(pidfile "$name")"))"; else echo "$name: down"; ok=1; fi
  done
  echo "alive workers at $MASTER_URL: $(alive_workers)"
  two_workers || ok=1
  if [ "$CONNECT" = "1" ]; then
    if alive connect && connect_up; then echo "connect: up on sc://127.0.0.1:$CONNECT_PORT"
    else echo "connect: down"; ok=1; fi
  fi
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  jars) jars ;;
  start-connect) start_connect ;;
  env)
    echo "CLICKAGG_SPARK_MASTER=$MASTER_URL"
    [ "$CONNECT" = "1" ] && echo "CLICKAGG_SPARK_REMOTE=sc://127.0.0.1:$CONNECT_PORT" ;;
  *) echo "usage: $0 start|stop|status|env|jars|start-connect" >&2; exit 2 ;;
esac
