"""The production topology, defined once.

``docker-compose.yaml`` runs it in containers; ``tests/integration`` starts the same processes natively on
this machine's Postgres and Redis with the environment ``native_env`` builds. ``tests/unit/test_compose.py``
checks the compose file against the definitions below, so the two cannot drift apart: a component, command or
setting added to one and not the other fails a test.

The natively started Airflow components import this module (``worker_hostname`` is their
``[core] hostname_callable``): it stays cheap to import, standard library only.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket

EXECUTOR = "CeleryExecutor"
ADMIN_USER = "admin"
# MLflow users (include/mlops/provision.py): Airflow's components create experiments and models (and manage what
# they create); serving reads. Neither is the admin, whose password stays with the MLflow server and its init.
MLFLOW_WORKER_USER = "mlops-worker"
MLFLOW_SERVING_USER = "mlops-serving"

# Compose service -> the `airflow` sub-command it runs (the image's entrypoint prefixes `airflow`).
INIT = ("db", "migrate")
AIRFLOW_COMPONENTS: dict[str, tuple[str, ...]] = {
    "airflow-apiserver": ("api-server",),
    "airflow-scheduler": ("scheduler",),
    "airflow-dag-processor": ("dag-processor",),
    "airflow-triggerer": ("triggerer",),
    "airflow-worker-1": ("celery", "worker"),
    "airflow-worker-2": ("celery", "worker"),
}
WORKERS = tuple(name for name, cmd in AIRFLOW_COMPONENTS.items() if cmd == ("celery", "worker"))

MLFLOW_SERVICE = "mlflow"
MLFLOW_COMMAND = ("mlflow", "server")
# Settings both MLflow servers get, as `mlflow server` flags (native) or their environment variables (compose
# passes the backend store URI by environment so its password stays out of the process list).
MLFLOW_SETTINGS: dict[str, str] = {
    "--backend-store-uri": "MLFLOW_BACKEND_STORE_URI",
    "--artifacts-destination": "MLFLOW_ARTIFACTS_DESTINATION",
    "--serve-artifacts": "MLFLOW_SERVE_ARTIFACTS",
    "--allowed-hosts": "MLFLOW_SERVER_ALLOWED_HOSTS",
}
# Basic auth (needs Flask-WTF, the mlflow[auth] extra): compose always; natively when the package is installed.
MLFLOW_AUTH_APP = ("--app-name", "basic-auth")
MLFLOW_AUTH_ENV = ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_CONFIG_PATH")
MLFLOW_CLIENT_AUTH_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# The auth app's config file (compose: the `mlflow-basic-auth` config). The credential cache (off by default)
# saves a PBKDF2 check per request: without it, training's many small MLflow calls made `train` ~2.5x slower.
MLFLOW_AUTH_INI = """[mlflow]
default_permission = READ
database_uri = {database_uri}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
"""

# Online scoring of the flights champion (include/mlops/serving.py), not an Airflow component: compose runs it
# with the image's own entrypoint bypassed. The command without its address (`--host`, `--port`), which each
# deployment sets: compose 0.0.0.0:5001 in its container, natively a free loopback port.
SERVING_SERVICE = "serving"
SERVING_COMMAND = ("python", "-m", "include.mlops.serving", "--dataset", "flights", "--workers", "2")
SERVING_ADDRESS_FLAGS = ("--host", "--port")
SERVING_PORT = 5001  # compose's
# Flags only the native process gets, each with the reason compose does without it.
SERVING_NATIVE_FLAGS: dict[str, str] = {
    "--reload-seconds": "the test waits for the promoted champion; production re-checks the alias every 30 s",
}
# Its environment, in both deployments: the registry it reads through (with basic-auth credentials), one compute
# thread per worker process, and the bearer token every request but /ping must carry.
SERVING_FIXED_ENV: dict[str, str] = {"OMP_NUM_THREADS": "1"}
SERVING_AUTH_ENV = "MLOPS_SERVING_TOKEN"
# It looks features up in the online store (Redis) whose Feast registry file lives in the lake (MLOPS_DATA_ROOT).
SERVING_ENV: tuple[str, ...] = (
    *SERVING_FIXED_ENV,
    "MLFLOW_TRACKING_URI",
    *MLFLOW_CLIENT_AUTH_ENV,
    SERVING_AUTH_ENV,
    "MLOPS_ONLINE_STORE",
    "MLOPS_DATA_ROOT",
)

# Celery `imports`: modules each worker imports once at startup, before it forks its pool. Airflow forks every
# task process from the pool, so tasks start with these already loaded: importing GX alone costs ~10 s of CPU,
# which every validate task would pay otherwise. Passed as `[celery] extra_celery_config`.
WORKER_PRELOAD: tuple[str, ...] = (
    "pandas",
    "pyarrow.parquet",
    "sqlalchemy",
    "great_expectations",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "mlflow",
    "include.mlops.ingest",
    "include.mlops.features",
    "include.mlops.training",
    "include.mlops.evaluation",
    "include.mlops.registry",
)

# Settings with the same value in both deployments (compose writes booleans in lower case).
FIXED_SETTINGS: dict[str, str] = {
    "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
    # Verified on Airflow 3.3.2 (FAB is not in our lock): users here, passwords in a file written before the
    # api-server starts (compose: by airflow-init from .env), so none is generated or printed.
    "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
    "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps({"imports": list(WORKER_PRELOAD)}),
}
# Settings both deployments set, to values of their own (endpoints, paths, secrets).
DEPLOYMENT_SETTINGS: tuple[str, ...] = (
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API__BASE_URL",
    "AIRFLOW_CONN_FLIGHTS_SOURCE",
    "AIRFLOW_CONN_PIZZAS_SOURCE",
    "MLOPS_DATA_ROOT",
    "MLFLOW_TRACKING_URI",
    "MLOPS_ONLINE_STORE",  # the online feature store (feature_store.py): Redis in both deployments
)
# Environment every Airflow component gets, in compose (x-airflow-common) and natively.
AIRFLOW_ENV: tuple[str, ...] = (*FIXED_SETTINGS, *DEPLOYMENT_SETTINGS)
# The ones carrying a secret (a password inside a URL counts): compose takes each from .env, with no default.
SECRET_ENV: tuple[str, ...] = (
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW_CONN_FLIGHTS_SOURCE",
    "AIRFLOW_CONN_PIZZAS_SOURCE",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "MLFLOW_BACKEND_STORE_URI",
    SERVING_AUTH_ENV,
    "MLOPS_ONLINE_STORE",  # compose's carries the Redis password
)
# Set only natively, each with the reason compose does without it.
NATIVE_ONLY_ENV: dict[str, str] = {
    "AIRFLOW_HOME": "the image's /opt/airflow",
    "AIRFLOW__CORE__DAGS_FOLDER": "the image copies dags/ to the default /opt/airflow/dags",
    "AIRFLOW__CORE__PLUGINS_FOLDER": "the image copies plugins/ to the default /opt/airflow/plugins",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "a shared volume at the default /opt/airflow/logs",
    "AIRFLOW__API__PORT": "every container listens on its own 8080",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "every container has its own 8974",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "the triggerer container has its own 8794",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "every worker container has its own 8793 (set per worker)",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "containers have distinct hostnames; processes on one machine do not",
    "MLOPS_WORKER_NAME": "read by worker_hostname, the hostname callable above (set per worker)",
    "MLOPS_SPEC_DIR": "the test relaxes the gate for its 3-week window; production uses the shipped spec",
    "MLOPS_GIT_SHA": "the image sets it at build time (--build-arg MLOPS_GIT_SHA)",
}

WORKER_NAME_ENV = "MLOPS_WORKER_NAME"


def worker_hostname() -> str:
    """The hostname Airflow records on task instances: ``MLOPS_WORKER_NAME`` when set (several workers on one
    machine), else the FQDN (Airflow's default)."""
    return os.environ.get(WORKER_NAME_ENV) or socket.getfqdn()


def airflow_command(service: str) -> list[str]:
    """The command a compose service runs, as a native argv (before native-only flags)."""
    return ["airflow", *AIRFLOW_COMPONENTS[service]]


def native_env(
    *,
    home: str,
    repo: str,
    log_folder: str,
    lake: str,
    spec_dir: str,
    passwords_file: str,
    sql_alchemy_conn: str,
    broker_url: str,
    result_backend: str,
    source_url: str,
    mlflow_url: str,
    online_store: str,
    api_port: int,
    scheduler_health_port: int,
    trigger_log_port: int,
    mlflow_credentials: dict[str, str] | None = None,
) -> dict[str, str]:
    """The Airflow settings every natively started component gets (fresh secrets per call); workers add
    ``worker_env``. Only topology settings: the caller adds PATH, PYTHONPATH and the like."""
    api = f"http://127.0.0.1:{api_port}"
    deployment = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": passwords_file,
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW_CONN_FLIGHTS_SOURCE": json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": source_url}}),
        "AIRFLOW_CONN_PIZZAS_SOURCE": json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": source_url}}),
        "MLOPS_DATA_ROOT": lake,
        "MLFLOW_TRACKING_URI": mlflow_url,
        "MLOPS_ONLINE_STORE": online_store,
    }
    native = {
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__DAGS_FOLDER": f"{repo}/dags",
        "AIRFLOW__CORE__PLUGINS_FOLDER": f"{repo}/plugins",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": log_folder,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(scheduler_health_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_port),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.{worker_hostname.__name__}",
        "MLOPS_SPEC_DIR": spec_dir,
        "MLOPS_GIT_SHA": "integration-test",
    }
    return FIXED_SETTINGS | deployment | (mlflow_credentials or {}) | native


# Settings a Celery worker does without: the JWT secret signs the REST and execution API tokens, and a worker
# only presents the token the scheduler put in its workload (its log server checks `[api] secret_key`). A worker
# that held it could mint a token for any task (docs/security.md).
WORKER_WITHOUT: tuple[str, ...] = ("AIRFLOW__API_AUTH__JWT_SECRET",)


def worker_env(service: str, log_server_port: int) -> dict[str, str]:
    """What one native Celery worker adds: its name (for the hostname callable) and its own log-server port."""
    return {WORKER_NAME_ENV: service, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_server_port)}


def serving_command(host: str, port: int, reload_seconds: float | None = None) -> list[str]:
    """The serving process's argv: the shared command at an address (natively also a short alias re-check)."""
    argv = [*SERVING_COMMAND, SERVING_ADDRESS_FLAGS[0], host, SERVING_ADDRESS_FLAGS[1], str(port)]
    return argv + (["--reload-seconds", str(reload_seconds)] if reload_seconds is not None else [])


def serving_env(
    mlflow_url: str,
    mlflow_credentials: dict[str, str] | None = None,
    token: str = "",
    online_store: str = "",
    lake: str = "",
) -> dict[str, str]:
    """The settings the natively started serving process gets (the caller adds PATH, PYTHONPATH and the like)."""
    auth = {SERVING_AUTH_ENV: token} if token else {}
    shared = {"MLFLOW_TRACKING_URI": mlflow_url, "MLOPS_ONLINE_STORE": online_store, "MLOPS_DATA_ROOT": lake}
    return SERVING_FIXED_ENV | shared | (mlflow_credentials or {}) | auth
