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
# Each spec's source system, reached from DAGs only through its Airflow connection (source.connection_id):
# AIRFLOW_CONN_<CONNECTION_ID> points at MLOPS_SOURCE_URL_<DATASET> if set, else the shared MLOPS_SOURCE_URL.
# A connection already defined in the environment wins.
for _spec in "${MLOPS_SPEC_DIR:-$_root/include/config}"/*.yaml; do
  case "$(basename "$_spec")" in _*) continue ;; esac
  _name=$(basename "$_spec" .yaml)
  _conn=$(sed -n 's/^  connection_id: *\([A-Za-z0-9_]*\).*/\1/p' "$_spec" | head -n 1)
  [ -n "$_conn" ] || continue
  _var="AIRFLOW_CONN_$(echo "$_conn" | tr '[:lower:]' '[:upper:]')"
  _own="MLOPS_SOURCE_URL_$(echo "$_name" | tr '[:lower:]' '[:upper:]')"
  if [ -z "${!_var:-}" ]; then
    export "$_var"='{"conn_type": "generic", "extra": {"sqlalchemy_url": "'"${!_own:-$MLOPS_SOURCE_URL}"'"}}'
  fi
done
unset _spec _name _conn _var _own
export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$MLOPS_VENV/bin:$PATH"
unset _root
