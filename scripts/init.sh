#!/usr/bin/env bash
# Migrate the Airflow metadata DB (SQLite by default) and create the lake and landing folders. Idempotent.
set -euo pipefail
mkdir -p "$AIRFLOW_HOME"
case "$MLOPS_DATA_ROOT" in *://*) ;; *) mkdir -p "$MLOPS_DATA_ROOT/landing" ;; esac
mkdir -p "$MLOPS_HOME/.data/landing"
echo "==> Airflow metadata DB ($AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)"
airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1 || { tail -30 "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
echo "==> DAGs into the metadata DB (airflow dags reserialize)"
airflow dags reserialize > "$AIRFLOW_HOME/dags-reserialize.log" 2>&1 || { tail -30 "$AIRFLOW_HOME/dags-reserialize.log"; exit 1; }
