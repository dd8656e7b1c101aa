#!/usr/bin/env bash
# `make up`: Airflow standalone (api-server + scheduler + dag-processor + triggerer, LocalExecutor on SQLite)
# and the MLflow UI on the same tracking DB. Ctrl-C stops both.
set -euo pipefail
AIRFLOW_PORT="${AIRFLOW_PORT:-8080}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
export AIRFLOW__API__PORT="$AIRFLOW_PORT"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://localhost:$AIRFLOW_PORT}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://localhost:$AIRFLOW_PORT/execution/}"
mkdir -p "$MLOPS_HOME/.data"
# MLflow UI: same tracking store as the DAGs; artifacts proxied from the lake's mlflow-artifacts folder.
setsid mlflow server --backend-store-uri "$MLFLOW_TRACKING_URI" --host 127.0.0.1 --port "$MLFLOW_PORT" \
  --artifacts-destination "$MLOPS_DATA_ROOT/mlflow-artifacts" > "$AIRFLOW_HOME/mlflow-ui.log" 2>&1 &
mlflow_pid=$!
# MLflow 3.17 spawns huey job consumers: stop the whole process group, not just the server.
trap 'kill -TERM -- -"$mlflow_pid" 2>/dev/null || true' EXIT
cat <<MSG
==> Airflow UI   http://localhost:$AIRFLOW_PORT   user: admin
    password:    $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated (written on first start)
==> MLflow UI    http://localhost:$MLFLOW_PORT    (log: $AIRFLOW_HOME/mlflow-ui.log)
==> Lake         $MLOPS_DATA_ROOT
    DAGs start paused: unpause flights_ingest in the UI, or replay January 2013 with
    airflow backfill create --dag-id flights_ingest --from-date 2013-01-01 --to-date 2013-01-31
MSG
airflow standalone
