"""A real Airflow UI with real content: this module's own lake and MLflow DB filled by the real DAGs (dag.test on
the session's Airflow metadata DB), then ``airflow api-server`` on a free port with the repo's plugins folder,
SimpleAuthManager and a known user. The server starts while the DAGs run (it only reads the DB)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.conftest import dagbag, module_mlflow, state, write_validated  # noqa: F401 (module_mlflow is a fixture)

CHROMIUM = "/usr/bin/chromium"
USER = "ui-tester"
TRAIN_END = date(2013, 1, 24)  # Jan 1-23 written as validated; Jan 24 ingested through flights_ingest
MONITOR_DAYS = ("2013-01-22", "2013-01-24")
TRAIN_CONF = {"window_end": TRAIN_END.isoformat(), "window_days": 21, "search_iterations": 2, "seed": 7}
SCREENSHOTS = REPO / "docs" / "screenshots"
XSS_DAY = "2013-01-22"  # a monitored day whose validated rows carry XSS in `dest` (a column with a not-null check only)
# Script that, if it ever runs, tries what the review showed: a dialog, then reading the Airflow API with the
# viewer's session and triggering a DAG run; it records the outcome on the document for the test to read.
XSS = (
    "</script><script>alert('xss');var d=document.documentElement;"
    "fetch('/api/v2/dags',{credentials:'include'}).then(r=>r.ok?r.text():Promise.reject(r.status))"
    ".then(t=>d.setAttribute('data-leak',t.length)).catch(e=>d.setAttribute('data-blocked',String(e)));"
    "fetch('/api/v2/dags/flights_train/dagRuns',{method:'POST',credentials:'include',"
    "headers:{'Content-Type':'application/json'},body:'{\"logical_date\":null}'})"
    ".then(r=>d.setAttribute('data-post',r.status)).catch(e=>d.setAttribute('data-post-blocked',String(e)))"
    "</script><!--"
)


def with_xss(nyc: dict, day: str = XSS_DAY, share: float = 0.3) -> dict:
    """``nyc`` with the XSS payload as the destination of a share of ``day``'s flights."""
    flights = nyc["flights"].copy()
    rows = flights.index[flights["flight_date"] == day]
    flights.loc[rows[: int(len(rows) * share)], "dest"] = XSS
    return {**nyc, "flights": flights}


def browser_or_skip() -> str:
    """The system Chromium and Playwright; skipped with the reason when missing, except under CI (fails)."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (bash scripts/install_browser.sh)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright==1.65.2)")
    if missing:
        why = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(why + " — CI must install it", pytrace=False)
        pytest.skip(why)
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    url: str
    user: str
    password: str
    lake: object
    runs: dict
    home: Path
    outside_secret: str
    gate: str  # v1's gate report folder in the lake: reports/gate/flights/v1-<run id prefix>

    def token(self) -> str:
        req = urllib.request.Request(
            f"{self.url}/auth/token",
            data=json.dumps({"username": self.user, "password": self.password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)["access_token"]

    def get(self, path: str, token: str | None = None, accept: str | None = None) -> tuple[int, bytes, dict]:
        """GET a path as sent (no normalisation of '..' or '%'), optionally with a Bearer token / Accept header."""
        import http.client

        conn = http.client.HTTPConnection(self.url.removeprefix("http://"), timeout=60)
        conn.putrequest("GET", path, skip_accept_encoding=True)
        if token:
            conn.putheader("Authorization", f"Bearer {token}")
        if accept:
            conn.putheader("Accept", accept)
        conn.endheaders()
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, body, dict(r.getheaders())


def _start_api_server(home: Path, port: int, password: str, env_over: dict) -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: password}))
    env = dict(os.environ) | env_over
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__API__EXPOSE_CONFIG": "False",
            "MLOPS_MLFLOW_PUBLIC_URL": "http://127.0.0.1:5000",
        }
    )
    env.pop("MLOPS_AIRFLOW_PUBLIC_URL", None)
    log = open(home / "api-server.log", "wb")  # noqa: SIM115 (kept open for the process's lifetime)
    cmd = [sys.executable, "-m", "airflow", "api-server", "--port", str(port), "--host", "127.0.0.1", "-w", "1"]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"api-server exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise RuntimeError(f"api-server not ready after {timeout}s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def stack(airflow_db, source_db, nyc, spec, module_mlflow, tmp_path_factory):  # noqa: F811
    """Lake and MLflow of this module, the api-server, and the real DAG runs that fill them."""
    from include.mlops.config import SPEC_DIR
    from include.mlops.storage import Lake

    tmp = tmp_path_factory.mktemp("ui")
    root = tmp / "lake"
    old_root = os.environ["MLOPS_DATA_ROOT"]
    os.environ["MLOPS_DATA_ROOT"] = str(root)
    lake = Lake(str(root))
    port, password = _free_port(), secrets.token_urlsafe(16)
    home = tmp / "server"
    proc = _start_api_server(home, port, password, {"MLOPS_DATA_ROOT": str(root)})
    try:
        span = [(TRAIN_END - timedelta(days=23), TRAIN_END - timedelta(days=1))]
        write_validated(lake, with_xss(nyc), spec, span)  # as if the XSS had passed validation (dest: not-null only)
        runs = {"ingest": dagbag().get_dag("flights_ingest").test(logical_date=datetime(2013, 1, 24, tzinfo=UTC))}
        # A 21-day January window: relax the absolute and slice thresholds, as tests/e2e/test_gate_dag.py does.
        raw = yaml.safe_load((SPEC_DIR / "flights.yaml").read_text())
        raw["gate"].update(min_roc_auc=0.55, max_brier=0.25, max_slice_gap=0.6, min_slice_rows=300)
        spec_dir = tmp / "spec"
        spec_dir.mkdir()
        (spec_dir / "flights.yaml").write_text(yaml.safe_dump(raw))
        train = dagbag(spec_dir).get_dag("flights_train")
        runs["train"] = train.test(logical_date=datetime(2013, 2, 28, tzinfo=UTC), run_conf=TRAIN_CONF)
        monitor = dagbag().get_dag("flights_monitor")
        for i, day in enumerate(MONITOR_DAYS):
            when = datetime(2013, 2, 20 + i, tzinfo=UTC)
            runs[f"monitor {day}"] = monitor.test(logical_date=when, run_conf={"date": day})
        for name, dr in runs.items():
            assert state(dr) == "success", f"{name} run {dr.run_id} is {state(dr)}"
        # A file outside the lake, and a symlink to it inside the served zone: must never be served.
        secret = f"outside-the-lake-{secrets.token_hex(8)}"
        outside = tmp / "outside.html"
        outside.write_text(secret)
        # the gate folder of v1 is keyed by its training run too (v1-<run id prefix>: evaluation.report_dir)
        (gate_dir,) = [d for d in os.listdir(root / "reports" / "gate" / "flights") if d.startswith("v1-")]
        os.symlink(outside, root / "reports" / "gate" / "flights" / gate_dir / "leak.html")
        _wait_ready(proc, f"http://127.0.0.1:{port}", home / "api-server.log")
        gate = f"reports/gate/flights/{gate_dir}"
        yield Stack(f"http://127.0.0.1:{port}", USER, password, lake, runs, home, secret, gate)
    finally:
        _stop(proc)
        os.environ["MLOPS_DATA_ROOT"] = old_root


@pytest.fixture(scope="module")
def browser():
    executable = browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Screenshots: a pytest tmp folder (test artifacts, path printed); the final ones are copied to
    docs/screenshots/ only with MLOPS_UPDATE_SCREENSHOTS=1, so a test run never dirties the checkout."""
    d = tmp_path_factory.mktemp("screenshots")
    update_docs = os.environ.get("MLOPS_UPDATE_SCREENSHOTS") == "1"

    def save(page, name: str, *, publish: bool = True, full_page: bool = True) -> Path:
        path = d / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        print(f"screenshot: {path}")
        if publish and update_docs:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, SCREENSHOTS / path.name)
        return path

    return save
