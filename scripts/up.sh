#!/usr/bin/env bash
# `make up`: the embedded stack in the foreground — Airflow api-server, scheduler (LocalExecutor on SQLite),
# dag-processor and triggerer, and the MLflow UI on the same tracking DB.
#   MLOPS_BIND_HOST   interface the UIs listen on (default 127.0.0.1, this machine only; 0.0.0.0 opens them)
#   AIRFLOW_PORT / MLFLOW_PORT (8080 / 5000)
#   AIRFLOW__CORE__PARALLELISM  LocalExecutor worker processes (default: the core count, at least 2)
#   MLOPS_REPLAY_EVERY  seconds of real time per replayed data day (default 120; 0 stops the replay clock)
#   MLOPS_UP_DATASETS   replayed datasets whose DAGs start unpaused (default flights; comma-separated)
# The replay clock (include/mlops/replay.py): the ingest and monitor DAGs of a spec with time.replay run one data
# day every MLOPS_REPLAY_EVERY seconds, from the first day the lake has not ingested (after `make demo`: the day
# after the demo's last), so the platform runs by itself under the real scheduler.
# Each component runs in its own process group; Ctrl-C, SIGTERM or `make down` (the pid file below) stops every
# group, waits for it and frees the ports. The scheduler and triggerer serve no log server (it would listen on
# every interface): the api-server reads the task logs from $AIRFLOW_HOME/logs on this machine.
set -euo pipefail
HOST="${MLOPS_BIND_HOST:-127.0.0.1}"
AIRFLOW_PORT="${AIRFLOW_PORT:-8080}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
PIDFILE="${MLOPS_UP_PIDFILE:-$AIRFLOW_HOME/up.pid}"
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-$((cores < 2 ? 2 : cores))}"
export AIRFLOW__API__HOST="$HOST"
export AIRFLOW__API__PORT="$AIRFLOW_PORT"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://localhost:$AIRFLOW_PORT}"
# Tasks reach the execution API on the loopback address, whatever interface the UI listens on.
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://127.0.0.1:$AIRFLOW_PORT/execution/}"
export MLOPS_REPLAY_EVERY="${MLOPS_REPLAY_EVERY:-120}"
UP_DATASETS="${MLOPS_UP_DATASETS:-flights}"
mkdir -p "$MLOPS_HOME/.data" "$AIRFLOW_HOME"
# The first day each replayed dataset's clock ingests: read once here, so DAG files do no I/O when parsed.
export MLOPS_REPLAY_FROM="${MLOPS_REPLAY_FROM:-$(python -m include.mlops replay-from)}"
if [ -f "$PIDFILE" ] && kill -0 "$(head -n 1 "$PIDFILE")" 2>/dev/null; then
  echo "a stack is already running (pid $(head -n 1 "$PIDFILE"), $PIDFILE): make down first" >&2
  exit 1
fi

groups=()
start() { # start NAME CMD...: its own process group (setsid), output to $AIRFLOW_HOME/NAME.log
  local name=$1
  shift
  setsid "$@" > "$AIRFLOW_HOME/$name.log" 2>&1 &
  groups+=("$!")
  printf '%s\n' "$!" >> "$PIDFILE"
}
alive() { pgrep -g "$1" > /dev/null 2>&1; }
stopped=0
stop() {
  [ "$stopped" = 1 ] && return
  stopped=1
  echo "==> stopping (${#groups[@]} process groups)"
  for g in "${groups[@]}"; do kill -TERM -- -"$g" 2> /dev/null || true; done
  for _ in $(seq 1 60); do # up to 30 s for a graceful stop (MLflow's huey consumers, running tasks)
    left=0
    for g in "${groups[@]}"; do alive "$g" && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.5
  done
  for g in "${groups[@]}"; do
    alive "$g" && echo "==> group $g did not stop in 30 s: killed ($(ps -o args= -g "$g" | head -n 1))" >&2
    kill -KILL -- -"$g" 2> /dev/null || true
  done
  wait 2> /dev/null || true
  rm -f "$PIDFILE"
  echo "==> stopped"
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

printf '%s\n' "$$" > "$PIDFILE"
# MLflow UI: same tracking store as the DAGs; artifacts proxied from the lake's mlflow-artifacts folder.
start mlflow-ui mlflow server --backend-store-uri "$MLFLOW_TRACKING_URI" --host "$HOST" --port "$MLFLOW_PORT" \
  --artifacts-destination "$MLOPS_DATA_ROOT/mlflow-artifacts"
start api-server airflow api-server --host "$HOST" --port "$AIRFLOW_PORT"
start scheduler airflow scheduler --skip-serve-logs
start dag-processor airflow dag-processor
start triggerer airflow triggerer --skip-serve-logs
if [ "$MLOPS_REPLAY_EVERY" != 0 ]; then
  # Unpause the replayed datasets' DAGs once the dag-processor has stored them (their first parse).
  python - "${UP_DATASETS//,/ }" << 'PY' || echo "==> could not unpause the replay DAGs: unpause them in the UI" >&2
import sys
import time

from airflow.models.dag import DagModel
from airflow.utils.session import create_session

kinds = ("ingest", "score", "monitor", "train", "reconcile", "materialize")
ids = [f"{ds}_{kind}" for ds in sys.argv[1].split() for kind in kinds]
for _ in range(90):
    with create_session() as session:  # commits when the block ends without an exception
        found = session.query(DagModel).filter(DagModel.dag_id.in_(ids)).all()
        for d in found if len(found) == len(ids) else []:
            d.is_paused = False
    if len(found) == len(ids):
        print(f"==> replay clock on: unpaused {', '.join(sorted(ids))}")
        break
    time.sleep(2)
else:
    sys.exit(f"DAGs not parsed within 180 s: {sorted(set(ids) - {d.dag_id for d in found})}")
PY
fi
cat << MSG
==> Airflow UI   http://$HOST:$AIRFLOW_PORT   user: admin   (logs: $AIRFLOW_HOME/*.log)
    password:    $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated (written on first start)
==> MLflow UI    http://$HOST:$MLFLOW_PORT
==> Lake         $MLOPS_DATA_ROOT
    LocalExecutor parallelism $AIRFLOW__CORE__PARALLELISM ($cores cores); listening on $HOST (MLOPS_BIND_HOST)
    Replay clock: one data day every ${MLOPS_REPLAY_EVERY}s from $MLOPS_REPLAY_FROM for $UP_DATASETS
    (ingest -> validated Asset -> score; monitor one day behind; retrains through the gate). Other DAGs start
    paused; a past month at once: airflow backfill create --dag-id flights_ingest --from-date ... --to-date ...
    Stop: Ctrl-C here, or make down from another shell.
MSG
# Until a signal arrives or a component exits (then everything stops: a half stack is no stack).
wait -n || true
echo "==> a component exited: see $AIRFLOW_HOME/*.log" >&2
exit 1
