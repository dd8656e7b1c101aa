"""`make up` for real: scripts/up.sh on free ports and a temp Airflow home starts the api-server, scheduler,
dag-processor, triggerer and MLflow UI; every listening socket of the stack is on 127.0.0.1, the LocalExecutor
parallelism is the core count; Ctrl-C (SIGINT) or `make down` (scripts/down.sh) leaves no process and no
listening port behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LISTEN = "0A"


def _cmdline(pid: int) -> bytes:
    """A process's command line; empty once it has exited (short-lived children come and go while we look)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(root: int) -> set[int]:
    """Every live (non-zombie) process below ``root`` in the process tree."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(d.name))
    out, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z":
                out.add(pid)
        except OSError:
            continue
    return out


def _listening(pids: set[int] | None = None) -> dict[int, str]:
    """{port: local address} of the TCP sockets in LISTEN state (of ``pids`` only, when given)."""
    inodes = None
    if pids is not None:
        inodes = set()
        for pid in pids:
            try:
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
            except OSError:
                continue
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != LISTEN or (inodes is not None and f[9] not in inodes):
                continue
            addr, port = f[1].split(":")
            out[int(port, 16)] = addr
    return out


def _is_loopback(hex_addr: str) -> bool:
    return hex_addr in ("0100007F", "00000000000000000000000001000000") or hex_addr.endswith("0100007F")


def _wait_http(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer in time")
        time.sleep(1)


def _api(base: str, path: str, token: str | None = None, body: dict | None = None, method: str = "GET") -> dict:
    import json

    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _run_a_task(api: int, home: Path, deadline: float) -> str:
    """Unpause and trigger flights_reconcile over the REST API; its final state (a task ran on the executor and
    reached the execution API on the loopback address)."""
    import json

    base = f"http://127.0.0.1:{api}"
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    token = _api(base, "/auth/token", body={"username": "admin", "password": password}, method="POST")["access_token"]
    while True:
        try:
            _api(base, "/api/v2/dags/flights_reconcile", token, {"is_paused": False}, "PATCH")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)  # the dag-processor has not parsed it yet
    run = _api(base, "/api/v2/dags/flights_reconcile/dagRuns", token, {"logical_date": None}, "POST")
    while True:
        got = _api(base, f"/api/v2/dags/flights_reconcile/dagRuns/{run['dag_run_id']}", token)
        if got["state"] in ("success", "failed") or time.monotonic() > deadline:
            return got["state"]
        time.sleep(2)


@pytest.mark.parametrize("stop", ["ctrl-c", "make down"])
def test_make_up_listens_on_loopback_and_stops_every_child(tmp_path, stop):
    home = tmp_path / "airflow"
    home.mkdir()
    api, ui = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__API__", "MLOPS_BIND"))}
    env.pop("AIRFLOW__CORE__PARALLELISM", None)
    env.pop("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", None)
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "MLOPS_DATA_ROOT": str(tmp_path / "lake"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "AIRFLOW_PORT": str(api),
        "MLFLOW_PORT": str(ui),
        "MLOPS_VENV": str(Path(sys.executable).parents[1]),
        "MLOPS_REPLAY_EVERY": "0",  # the replay clock has its own test (test_replay_clock.py)
    }
    sh = f"cd {REPO} && . scripts/env.sh && "
    subprocess.run(["bash", "-c", sh + "airflow db migrate"], env=env, check=True, capture_output=True, timeout=120)
    up = subprocess.Popen(["bash", "-c", sh + "exec bash scripts/up.sh"], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        _wait_http(f"http://127.0.0.1:{api}/api/v2/version", deadline)
        _wait_http(f"http://127.0.0.1:{ui}/health", deadline)
        pids = _descendants(up.pid)
        ports = _listening(pids)
        assert {api, ui} <= set(ports), ports
        assert all(_is_loopback(a) for a in ports.values()), ports  # no log server on every interface either
        scheduler = next(p for p in pids if b"scheduler" in _cmdline(p))
        environ = Path(f"/proc/{scheduler}/environ").read_bytes().split(b"\0")
        assert f"AIRFLOW__CORE__PARALLELISM={max(2, len(os.sched_getaffinity(0)))}".encode() in environ
        assert (home / "up.pid").read_text().split()[0] == str(up.pid)

        t0 = time.monotonic()
        if stop == "ctrl-c":
            assert _run_a_task(api, home, time.monotonic() + 150) == "success"
            t0 = time.monotonic()
            os.killpg(up.pid, signal.SIGINT)  # what the terminal sends to the foreground job
            assert up.wait(timeout=60) == 130
        else:
            sh_down = sh + "bash scripts/down.sh"
            subprocess.run(["bash", "-c", sh_down], env=env, check=True, capture_output=True, timeout=90)
            assert up.wait(timeout=10) == 143
        print(f"stopped in {time.monotonic() - t0:.1f} s")
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert _alive(pids) == set(), "processes of the stack survived"
    assert not ({api, ui} & set(_listening())), "a port is still bound"
    assert not (home / "up.pid").exists()
