"""docker-compose.yaml, .env.example and the Dockerfile agree with the production topology the integration test
starts natively (tests/integration/topology.py): the same components and commands, the same executor and
settings, secrets only from .env with no default, healthchecks and start-up order. Docker does not run on these
machines, so this is what keeps the compose file honest."""

from __future__ import annotations

import json
import re
import shlex
from configparser import ConfigParser
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import REPO
from tests.integration import topology

RAW = (REPO / "docker-compose.yaml").read_text()
COMPOSE = yaml.safe_load(RAW)
CODE = "\n".join(line for line in RAW.splitlines() if not line.lstrip().startswith("#"))  # without comments
SERVICES: dict = COMPOSE["services"]
# Compose interpolation `${NAME}`, `${NAME:-default}`, `${NAME:?message}` (`$${…}` is an escaped literal).
REF = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}")
SECRET_NAME = re.compile(r"PASSWORD$|SECRET|FERNET|_KEY$|_AUTH$|^AIRFLOW_CONN_")
ONE_SHOT = {"airflow-init", "airflow-cli", "source-seed", "mlflow-users"}  # run to completion: no healthcheck
# Set only in compose, each for a container mechanic the native processes do not have.
COMPOSE_ONLY_ENV = {
    "DUMB_INIT_SETSID": "workers: let SIGTERM reach only Celery's main process (warm shutdown)",
    "CONNECTION_CHECK_MAX_COUNT": "airflow-cli: skip the entrypoint's DB wait",
    "AIRFLOW_UID": "airflow-init: owner of the volumes it prepares",
    "POSTGRES_PASSWORD": "airflow-init: the superuser creates the roles and databases",
    **{
        name: "airflow-init: the password it gives the role"
        for name in (
            "AIRFLOW_DB_PASSWORD",
            "MLFLOW_DB_PASSWORD",
            "MLFLOW_AUTH_DB_PASSWORD",
            "SOURCE_DB_PASSWORD",
            "SOURCE_READER_PASSWORD",
        )
    },
    "AIRFLOW_ADMIN_PASSWORD": "airflow-init: writes the passwords file",
}


def command(service: str) -> list[str]:
    cmd = SERVICES[service].get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def env(service: str) -> dict[str, str]:
    e = SERVICES[service].get("environment") or {}
    return {str(k): str(v) for k, v in e.items()}


def interpolate(value: str, required: str = "x") -> str:
    """The value compose produces with every default taken and every required variable set to ``required``."""
    return REF.sub(lambda m: m["arg"] if m["op"] in ("-", ":-") else required, value)


def test_services_are_the_topology():
    expected = {*topology.AIRFLOW_COMPONENTS, topology.MLFLOW_SERVICE, topology.SERVING_SERVICE, "postgres", "redis",
                "airflow-init"}  # fmt: skip
    assert expected <= set(SERVICES), expected - set(SERVICES)
    workers = [name for name in SERVICES if command(name)[:2] == ["celery", "worker"]]
    assert workers == list(topology.WORKERS)


@pytest.mark.parametrize("service", list(topology.AIRFLOW_COMPONENTS))
def test_component_runs_the_same_command(service):
    assert tuple(command(service)) == topology.AIRFLOW_COMPONENTS[service]


def test_init_migrates_the_db_and_writes_the_passwords_file():
    script = "\n".join(command("airflow-init"))
    assert f"airflow {' '.join(topology.INIT)}" in script
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script
    assert "AIRFLOW_ADMIN_PASSWORD" in script
    for db in ("mlflow", "mlflow_auth", "demo_source"):
        assert f'"{db}"' in script, db


@pytest.mark.parametrize("service", [*topology.AIRFLOW_COMPONENTS, "airflow-init"])
def test_airflow_settings_are_the_topology(service):
    e = env(service)
    missing = set(topology.AIRFLOW_ENV) | set(topology.MLFLOW_CLIENT_AUTH_ENV)
    assert not missing - e.keys(), f"{service} lacks {sorted(missing - e.keys())}"
    for name, value in topology.FIXED_SETTINGS.items():
        if name == "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG":
            assert json.loads(e[name]) == json.loads(value), name
        else:
            assert e[name].lower() == value.lower(), name
    native_only = set(topology.NATIVE_ONLY_ENV) & e.keys()
    assert not native_only, f"{service} sets native-only settings {native_only}"


def test_native_env_has_the_same_settings_as_compose():
    native = topology.native_env(
        home="/h", repo="/r", log_folder="/l", lake="/lake", spec_dir="/s", passwords_file="/p",
        sql_alchemy_conn="postgresql+psycopg2://u@h/a", broker_url="redis://h:6379/1",
        result_backend="db+postgresql://u@h/a", source_url="sqlite:///x", mlflow_url="http://m:1",
        online_store="redis://h:6379/2", api_port=1, scheduler_health_port=2, trigger_log_port=3,
        mlflow_credentials=dict.fromkeys(topology.MLFLOW_CLIENT_AUTH_ENV, "x"),
    )  # fmt: skip
    native |= topology.worker_env("airflow-worker-1", 4)
    shared = set(native) - set(topology.NATIVE_ONLY_ENV)
    for service in topology.AIRFLOW_COMPONENTS:
        assert set(env(service)) - set(COMPOSE_ONLY_ENV) == shared, service
    assert set(topology.NATIVE_ONLY_ENV) <= set(native)


def test_endpoints_name_the_services_that_serve_them():
    e = {k: interpolate(v) for k, v in env("airflow-scheduler").items()}
    api = urlsplit(e["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert command(api.hostname) == ["api-server"]
    assert (api.port, api.path) == (8080, "/execution/")
    assert urlsplit(e["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    assert urlsplit(e["AIRFLOW__CELERY__RESULT_BACKEND"]).hostname == "postgres"
    assert urlsplit(e["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    tracking = urlsplit(e["MLFLOW_TRACKING_URI"])
    assert tracking.hostname == topology.MLFLOW_SERVICE
    assert f"{tracking.hostname}:{tracking.port}" in env(topology.MLFLOW_SERVICE)["MLFLOW_SERVER_ALLOWED_HOSTS"]


def test_mlflow_server_is_the_topology():
    cmd, e = command(topology.MLFLOW_SERVICE), env(topology.MLFLOW_SERVICE)
    assert tuple(cmd[:2]) == topology.MLFLOW_COMMAND
    for flag, var in topology.MLFLOW_SETTINGS.items():
        assert flag in cmd or var in e, f"mlflow server gets neither {flag} nor {var}"
    assert urlsplit(interpolate(e["MLFLOW_BACKEND_STORE_URI"])).path == "/mlflow"
    i = cmd.index(topology.MLFLOW_AUTH_APP[0])
    assert tuple(cmd[i : i + 2]) == topology.MLFLOW_AUTH_APP
    assert set(topology.MLFLOW_AUTH_ENV) <= e.keys()
    destination = interpolate(e["MLFLOW_ARTIFACTS_DESTINATION"])
    assert f"mlflow-artifacts:{destination}" in SERVICES[topology.MLFLOW_SERVICE]["volumes"]


def test_serving_runs_the_same_command():
    cmd = command(topology.SERVING_SERVICE)
    address = {cmd[i]: cmd[i + 1] for i, arg in enumerate(cmd) if arg in topology.SERVING_ADDRESS_FLAGS}
    shared = [arg for i, arg in enumerate(cmd) if arg not in address and (i == 0 or cmd[i - 1] not in address)]
    assert tuple(shared) == topology.SERVING_COMMAND
    assert address == {"--host": "0.0.0.0", "--port": str(topology.SERVING_PORT)}
    assert f"127.0.0.1:{topology.SERVING_PORT}:{topology.SERVING_PORT}" in SERVICES[topology.SERVING_SERVICE]["ports"]
    native = topology.serving_command("127.0.0.1", 1, reload_seconds=1.0)
    assert native[: len(topology.SERVING_COMMAND)] == list(topology.SERVING_COMMAND)
    assert {a for a in native if a.startswith("--")} - set(cmd) == set(topology.SERVING_NATIVE_FLAGS)
    source = (REPO / "include" / "mlops" / "serving.py").read_text()
    for flag in (*topology.SERVING_ADDRESS_FLAGS, *topology.SERVING_NATIVE_FLAGS, "--dataset", "--workers"):
        assert f'"{flag}"' in source, f"serving has no {flag} flag"


def test_serving_settings_are_the_topology():
    e = env(topology.SERVING_SERVICE)
    native = topology.serving_env("http://m:1", dict.fromkeys(topology.MLFLOW_CLIENT_AUTH_ENV, "x"), token="t")
    assert set(e) == set(topology.SERVING_ENV) == set(native)
    for name, value in topology.SERVING_FIXED_ENV.items():
        assert e[name] == native[name] == value, name
    tracking = urlsplit(interpolate(e["MLFLOW_TRACKING_URI"]))
    assert tracking.hostname == topology.MLFLOW_SERVICE
    assert f"{tracking.hostname}:{tracking.port}" in env(topology.MLFLOW_SERVICE)["MLFLOW_SERVER_ALLOWED_HOSTS"]
    assert e["MLFLOW_TRACKING_USERNAME"] == topology.MLFLOW_SERVING_USER  # read-only, not the admin
    assert "${MLFLOW_SERVING_PASSWORD:?" in e["MLFLOW_TRACKING_PASSWORD"]


def test_mlflow_settings_are_mlflows_own_environment_variables():
    from mlflow.cli import server

    envvars = {f"--{p.name.replace('_', '-')}": p.envvar for p in server.params}
    for flag, var in topology.MLFLOW_SETTINGS.items():
        assert envvars[flag] == var, flag


def test_mlflow_auth_config_is_the_native_one():
    target = SERVICES[topology.MLFLOW_SERVICE]["configs"][0]["target"]
    assert env(topology.MLFLOW_SERVICE)["MLFLOW_AUTH_CONFIG_PATH"] == target
    compose, native = ConfigParser(), ConfigParser()
    compose.read_string(COMPOSE["configs"]["mlflow-basic-auth"]["content"])
    native.read_string(topology.MLFLOW_AUTH_INI.format(database_uri="x"))
    uri = compose["mlflow"].pop("database_uri")
    native["mlflow"].pop("database_uri")
    assert dict(compose["mlflow"]) == dict(native["mlflow"])
    assert urlsplit(interpolate(uri)).path == "/mlflow_auth"


def test_every_secret_comes_from_env_with_no_default():
    refs = list(REF.finditer(CODE))
    secret_refs = [m for m in refs if SECRET_NAME.search(m["name"])]
    assert secret_refs
    defaulted = sorted({m[0] for m in secret_refs if m["op"] != ":?"})
    assert not defaulted, f"secrets with a default or optional: {defaulted}"
    for service in SERVICES:
        for name, value in env(service).items():
            if service in topology.WORKERS and name in topology.WORKER_WITHOUT:
                assert value == "", f"{service}: {name} must be emptied for workers"
                continue
            if name in topology.SECRET_ENV or SECRET_NAME.search(name):
                assert re.search(r"(?<!\$)\$\{[A-Za-z0-9_]+:\?", value), f"{service}: {name} is not from .env"


def test_no_password_is_written_into_a_url():
    for m in re.finditer(r"[a-z0-9+.-]+://[^\s/:@]*:(?P<password>[^@/]*?)@", CODE):
        assert REF.fullmatch(m["password"]), f"literal password in {m[0]!r}"


def test_env_example_documents_every_setting_without_values():
    required = {m["name"] for m in REF.finditer(CODE) if m["op"] == ":?"}
    optional = {m["name"] for m in REF.finditer(CODE) if m["op"] in ("-", ":-")}
    text = (REPO / ".env.example").read_text()
    entries = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert set(entries) == required
    assert all(v == "" for v in entries.values()), "no real values in .env.example"
    for name in optional:
        assert re.search(rf"^# {name}=", text, re.M), f"optional {name} not documented"


def test_long_running_services_have_healthchecks():
    for name, service in SERVICES.items():
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    probe = {name: " ".join(SERVICES[name]["healthcheck"]["test"]) for name in SERVICES if name not in ONE_SHOT}
    assert "/api/v2/version" in probe["airflow-apiserver"]
    assert ":8974/health" in probe["airflow-scheduler"]
    assert "DagProcessorJob" in probe["airflow-dag-processor"]
    assert "TriggererJob" in probe["airflow-triggerer"]
    assert "/health" in probe[topology.MLFLOW_SERVICE]
    assert f"localhost:{topology.SERVING_PORT}/health" in probe[topology.SERVING_SERVICE]
    for worker in topology.WORKERS:
        assert "inspect ping" in probe[worker]


def test_start_order():
    def conditions(service: str) -> dict[str, str]:
        return {k: v["condition"] for k, v in SERVICES[service].get("depends_on", {}).items()}

    for service in topology.AIRFLOW_COMPONENTS:
        c = conditions(service)
        assert c["postgres"] == c["redis"] == "service_healthy", service
        assert c["airflow-init"] == "service_completed_successfully", service
    for worker in topology.WORKERS:
        c = conditions(worker)
        for dep in ("airflow-scheduler", "airflow-apiserver", topology.MLFLOW_SERVICE):
            assert c[dep] == "service_healthy", (worker, dep)
    assert conditions(topology.MLFLOW_SERVICE)["airflow-init"] == "service_completed_successfully"  # its DBs
    assert conditions(topology.SERVING_SERVICE)[topology.MLFLOW_SERVICE] == "service_healthy"  # the registry
    for service in SERVICES:
        for dep, cond in conditions(service).items():
            if cond == "service_healthy":
                assert SERVICES[dep].get("healthcheck"), f"{service} waits for {dep}, which has no healthcheck"


def test_the_lake_and_the_logs_are_one_volume_for_every_airflow_container():
    root = interpolate(env("airflow-scheduler")["MLOPS_DATA_ROOT"])
    assert root.startswith("/")
    for service in [*topology.AIRFLOW_COMPONENTS, "airflow-init"]:
        volumes = SERVICES[service]["volumes"]
        assert f"lake:{root}" in volumes, service
        assert "airflow-logs:/opt/airflow/logs" in volumes, service
    assert "airflow-auth:/opt/airflow/auth" in SERVICES["airflow-apiserver"]["volumes"]
    passwords = env("airflow-apiserver")["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert passwords.startswith("/opt/airflow/auth/")


def test_dockerfile_builds_the_locked_environment():
    dockerfile = (REPO / "Dockerfile").read_text()
    pinned = re.search(r"^apache-airflow\[[^\]]*\]==(\S+)", (REPO / "requirements.txt").read_text(), re.M)[1]
    base = re.search(r"^ARG AIRFLOW_BASE_IMAGE=(\S+)", dockerfile, re.M)[1]
    assert re.fullmatch(rf"apache/airflow:(slim-)?{re.escape(pinned)}-python3\.11", base), base
    assert f"ARG AIRFLOW_VERSION={pinned}" in dockerfile
    assert "-c /opt/airflow/requirements.lock" in dockerfile
    for folder in ("dags", "include", "plugins"):
        assert re.search(rf"^COPY .*\b{folder}/ /opt/airflow/{folder}/$", dockerfile, re.M), folder
    # the MLflow service runs the basic-auth app, which needs Flask-WTF (MLflow's `auth` extra) in the image
    assert topology.MLFLOW_AUTH_APP[1] in command(topology.MLFLOW_SERVICE)
    locked = re.search(r"^flask-wtf==", (REPO / "requirements.lock").read_text(), re.M | re.I)
    assert locked or '"mlflow[auth]"' in dockerfile
    dockerignore = (REPO / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(dockerignore)


def test_least_privilege_accounts():
    """Only the postgres service and airflow-init see the superuser's password, only MLflow and mlflow-users the
    MLflow admin's; workers connect as their own roles and users (docs/security.md)."""
    for service in SERVICES:
        text = yaml.safe_dump(SERVICES[service])
        if "POSTGRES_PASSWORD:?" in text:
            assert service in ("postgres", "airflow-init"), service
        if "MLFLOW_AUTH_ADMIN_PASSWORD" in text:
            assert service in (topology.MLFLOW_SERVICE, "mlflow-users"), service
    common = env(topology.WORKERS[0])
    assert common["MLFLOW_TRACKING_USERNAME"] == topology.MLFLOW_WORKER_USER
    assert urlsplit(interpolate(common["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])).username == "airflow"
    assert urlsplit(interpolate(env(topology.MLFLOW_SERVICE)["MLFLOW_BACKEND_STORE_URI"])).username == "mlflow"
    assert "demo_source_reader" in (REPO / "scripts" / "prod_env.sh").read_text()
    for worker in topology.WORKERS:
        assert not set(topology.WORKER_WITHOUT) & {k for k, v in env(worker).items() if v}, worker


def test_every_spec_has_its_source_connection_everywhere():
    """One Airflow connection per dataset spec: in compose, in .env.example, in prod_env.sh and natively."""
    from include.mlops.config import load_spec_file, spec_paths

    example = (REPO / ".env.example").read_text()
    prod_env = (REPO / "scripts" / "prod_env.sh").read_text()
    for path in spec_paths():
        var = f"AIRFLOW_CONN_{load_spec_file(path).source.connection_id.upper()}"
        assert var in env("airflow-scheduler"), var
        assert f"\n{var}=" in example, var
        assert f'"{var}"' in prod_env, var
        assert var in topology.AIRFLOW_ENV, var
