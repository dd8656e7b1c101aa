"""`make demo`, then `make up`: the real scheduler (LocalExecutor, SQLite) continues the replay by itself.

A short pizzas demo (January 1 to February 28, 2015: the first champion trained on the first 56 days, three days
served) in its own Airflow home, lake and MLflow DB; then scripts/up.sh with the replay clock at one data day per
30 s. Shown: ingest runs on its own from the day after the demo's last, one day after the other, with the data
day in its run id; scoring follows the validated Asset; the monitor runs on its own one day behind; the demo's
served predictions keep their bytes (sha256); the champion's own training days are never scored although the
scheduler is handed every validated event the demo made; no version is trained without a fresh request.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.test_make_up import _free_port, _wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEMO_END = "2015-02-28"
SERVED = ["2015-02-26", "2015-02-27", "2015-02-28"]
NEXT = ["2015-03-01", "2015-03-02", "2015-03-03"]
EVERY = 30


def _runs(db: Path, dag_id: str, run_type: str = "scheduled") -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute(
            "select run_id, substr(logical_date, 1, 10), state from dag_run where dag_id = ? and run_type = ? "
            "order by logical_date",
            (dag_id, run_type),
        ).fetchall()


def _versions(mlflow_db: Path) -> int:
    with sqlite3.connect(mlflow_db) as con:
        return con.execute("select count(*) from model_versions where name = 'pizzas'").fetchone()[0]


def test_make_up_after_make_demo_continues_the_replay_on_its_own(tmp_path):
    from include.mlops.storage import Lake

    home, lake_root, mlflow_db = tmp_path / "airflow", tmp_path / "lake", tmp_path / "mlflow.db"
    home.mkdir()
    api, ui = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__API__", "MLOPS_BIND", "MLOPS_REPLAY"))}
    for k in ("AIRFLOW__CORE__PARALLELISM", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW_CONN_PIZZAS_SOURCE"):
        env.pop(k, None)
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "MLOPS_DATA_ROOT": str(lake_root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_db}",
        "MLOPS_SOURCE_URL": f"sqlite:///{tmp_path}/source.db",
        "AIRFLOW_PORT": str(api),
        "MLFLOW_PORT": str(ui),
        "MLOPS_VENV": str(Path(sys.executable).parents[1]),
        "MLOPS_DEMO_DATASET": "pizzas",
        "MLOPS_DEMO_END": DEMO_END,
        "MLOPS_REPLAY_EVERY": str(EVERY),
        "MLOPS_UP_DATASETS": "pizzas",
    }
    sh = f"cd {REPO} && . scripts/env.sh && "
    demo = subprocess.run(
        ["bash", "-c", sh + "bash scripts/init.sh && python scripts/demo.py"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    lake = Lake(str(lake_root))
    served = {d: lake.manifest("predictions", "pizzas", f"date={d}").sha256 for d in SERVED}
    assert _versions(mlflow_db) == 1
    db = home / "airflow.db"
    assert _runs(db, "pizzas_ingest") == []  # the demo's runs are manual: the scheduler has made none yet

    up = subprocess.Popen(["bash", "-c", sh + "exec bash scripts/up.sh"], env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{api}/api/v2/version", time.monotonic() + 180)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ingested = [r for r in _runs(db, "pizzas_ingest") if r[2] == "success"]
            scored = [d for d in NEXT if lake.manifest("predictions", "pizzas", f"date={d}") is not None]
            monitored = [r for r in _runs(db, "pizzas_monitor") if r[2] in ("success", "skipped")]
            if len(ingested) >= len(NEXT) and scored == NEXT and len(monitored) >= 2:
                break
            time.sleep(3)
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(timeout=90)

    ingest = _runs(db, "pizzas_ingest")
    days = [r[1] for r in ingest]
    print(json.dumps({"ingest": ingest, "monitor": _runs(db, "pizzas_monitor")}, indent=1))
    assert days[: len(NEXT)] == NEXT, days  # continues at the day after the demo's last, in order
    assert all(state == "success" for _, day, state in ingest if day in NEXT)
    assert all(run_id == f"scheduled__{day}T00:00:00+00:00" for run_id, day, _ in ingest)  # the data day
    assert [d for d in NEXT if lake.manifest("predictions", "pizzas", f"date={d}") is None] == []
    monitor_days = [r[1] for r in _runs(db, "pizzas_monitor") if r[2] in ("success", "skipped")]
    assert monitor_days[:2] == [DEMO_END, NEXT[0]], monitor_days  # on its own, one day behind ingestion
    assert {d: lake.manifest("predictions", "pizzas", f"date={d}").sha256 for d in SERVED} == served
    training_days = [p for p in lake.partitions("predictions", "pizzas") if p < f"date={SERVED[0]}"]
    assert training_days == [], "the champion scored its own training days"
    assert _runs(db, "pizzas_score", "asset_triggered"), "scoring did not follow the validated Asset"
    assert _versions(mlflow_db) == 1, "a version was trained without a fresh request"
