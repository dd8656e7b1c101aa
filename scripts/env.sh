# Environment of the embedded stack. Source it (`. scripts/env.sh`) to use `airflow`, `mlflow` and the
# library by hand; every make target does. Anything already set in the environment wins, so the same
# commands run against another lake root, MLflow server, Airflow home or source database.
_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
export MLOPS_HOME="$_root"
export MLOPS_VENV="${MLOPS_VENV:-$_root/.venv}"
export MLOPS_DATA_ROOT="${MLOPS_DATA_ROOT:-$_root/.data/lake}"
export MLOPS_SOURCE_URL="${MLOPS_SOURCE_URL:-sqlite:///$_root/.data/source.db}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$_root/.data/mlflow.db}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$_root/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$_root/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$_root/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
# The source system, reached from DAGs only through this Airflow connection (spec: source.connection_id).
if [ -z "${AIRFLOW_CONN_FLIGHTS_SOURCE:-}" ]; then
  export AIRFLOW_CONN_FLIGHTS_SOURCE='{"conn_type": "generic", "extra": {"sqlalchemy_url": "'"$MLOPS_SOURCE_URL"'"}}'
fi
export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$MLOPS_VENV/bin:$PATH"
unset _root
