#!/usr/bin/env bash
# Write .env for docker-compose.yaml from .env.example with freshly generated secrets (one password per database
# role and MLflow user), and the source connection pointing at the demo database airflow-init creates, as its
# read-only role. Refuses to overwrite an existing file.
#   bash scripts/prod_env.sh [path]          (default: .env in the repo)
# Review the result before a real deployment: AIRFLOW_CONN_FLIGHTS_SOURCE should name your source system.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="${1:-$root/.env}"
if [ -e "$out" ]; then
  echo "$out exists: not overwriting it (delete it first to regenerate every secret)" >&2
  exit 1
fi
umask 077
python3 - "$root/.env.example" "$out" <<'PY'
import base64
import os
import secrets
import sys

example, out = sys.argv[1], sys.argv[2]
reader = secrets.token_hex(24)
values = {
    "POSTGRES_PASSWORD": secrets.token_hex(24),
    "AIRFLOW_DB_PASSWORD": secrets.token_hex(24),
    "MLFLOW_DB_PASSWORD": secrets.token_hex(24),
    "MLFLOW_AUTH_DB_PASSWORD": secrets.token_hex(24),
    "SOURCE_DB_PASSWORD": secrets.token_hex(24),
    "SOURCE_READER_PASSWORD": reader,
    "REDIS_PASSWORD": secrets.token_hex(24),
    "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(64),
    "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(32),
    "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(16),
    "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.token_urlsafe(16),
    "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
    "MLFLOW_WORKER_PASSWORD": secrets.token_urlsafe(16),
    "MLFLOW_SERVING_PASSWORD": secrets.token_urlsafe(16),
    "MLOPS_SERVING_TOKEN": secrets.token_urlsafe(32),
    # the DAGs read the demo source as its read-only role (SELECT on its tables, nothing else)
    "AIRFLOW_CONN_FLIGHTS_SOURCE": f"postgresql://demo_source_reader:{reader}@postgres:5432/demo_source",
    "AIRFLOW_CONN_PIZZAS_SOURCE": f"postgresql://demo_source_reader:{reader}@postgres:5432/demo_source",
}
lines = []
for line in open(example):
    name, sep, value = line.rstrip("\n").partition("=")
    if sep and not line.startswith("#") and not value:
        if name not in values:
            sys.exit(f"{example}: no generator for required setting {name}")
        line = f"{name}={values.pop(name)}\n"
    lines.append(line)
with open(out, "w") as f:
    f.writelines(lines)
print(f"wrote {out} (mode 600): log in as admin with AIRFLOW_ADMIN_PASSWORD (Airflow), MLFLOW_AUTH_ADMIN_PASSWORD (MLflow)")
PY
