"""The production topology, natively: three weeks of January 2013 replayed through the REST API as a parallel
backfill of `flights_ingest` on two Celery workers, then `flights_train` triggered by hand through the gate to
promotion, on Postgres (Airflow metadata, Celery results, MLflow, the source), Redis (broker) and an MLflow
tracking server with proxied artifacts. The assertions are what an operator checks after a deployment."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest

from tests.integration import topology

pytestmark = pytest.mark.integration

FIRST_DAY = date(2013, 1, 1)
DAYS = 21  # the shortest window that trains: 7 train + 7 validation + 7 test days
LAST_DAY = FIRST_DAY + timedelta(days=DAYS - 1)
TRAIN_CONF = {"window_end": LAST_DAY.isoformat(), "window_days": DAYS, "search_iterations": 1, "seed": 7}
MONITOR_DAG = "flights_monitor"


@pytest.fixture(scope="module")
def lifecycle(stack) -> dict:
    """Ingest (backfill, parallel) → train (manual) → score (on the validated events) → monitor. Bounded waits."""
    out: dict = {"timings": stack.timings}
    t0 = time.monotonic()
    # flights_train stays paused while ingesting: a paused DAG's asset events are not queued, so the only
    # training run is the manual one below (a scheduled one would pick its own window).
    stack.api("PATCH", "/api/v2/dags/flights_ingest", json={"is_paused": False})
    out["backfill"] = stack.api(
        "POST",
        "/api/v2/backfills",
        json={
            "dag_id": "flights_ingest",
            "from_date": f"{FIRST_DAY}T00:00:00Z",
            "to_date": f"{LAST_DAY}T00:00:00Z",
            "max_active_runs": 4,
        },
    )
    out["ingest_runs"] = stack.wait_for_runs("flights_ingest", DAYS, timeout=420)
    stack.timings[f"ingest {DAYS} days"] = round(time.monotonic() - t0, 1)

    t1 = time.monotonic()
    stack.api("PATCH", "/api/v2/dags/flights_train", json={"is_paused": False})
    out["train_run"] = stack.api(
        "POST", "/api/v2/dags/flights_train/dagRuns", json={"logical_date": None, "conf": TRAIN_CONF}
    )
    stack.wait_for_runs("flights_train", 1, timeout=300)
    stack.timings["train + gate + promote"] = round(time.monotonic() - t1, 1)
    # paused again: a retrain the monitor may request below must not start a second training run mid-test
    stack.api("PATCH", "/api/v2/dags/flights_train", json={"is_paused": True})

    t2 = time.monotonic()
    stack.api("PATCH", f"/api/v2/dags/{MONITOR_DAG}", json={"is_paused": False})
    out["monitor"] = stack.api(
        "POST",
        f"/api/v2/dags/{MONITOR_DAG}/dagRuns",
        json={"logical_date": f"{LAST_DAY}T00:00:00Z", "conf": {"date": LAST_DAY.isoformat()}},
    )
    stack.wait_for_runs(MONITOR_DAG, 1, timeout=180)
    stack.timings["monitor"] = round(time.monotonic() - t2, 1)
    out["task_instances"] = stack.task_instances()
    for task in ("extract", "validate", "build_features", "train", "evaluate", "promote"):
        durations = sorted(t["duration"] or 0 for t in out["task_instances"] if t["task_id"] == task)
        if durations:
            stack.timings[f"task {task} (median)"] = round(durations[len(durations) // 2], 1)
    print("\nintegration timings (s):", stack.timings, "| MLflow basic auth:", stack.mlflow_auth)
    return out


def test_api_refuses_anonymous_requests(stack):
    import httpx

    assert httpx.get(f"{stack.api_url}/api/v2/dags").status_code == 401
    wrong = httpx.post(f"{stack.api_url}/auth/token", json={"username": topology.ADMIN_USER, "password": "wrong"})
    assert wrong.status_code in (401, 403)


def test_backfill_created_one_run_per_day(lifecycle):
    runs = lifecycle["ingest_runs"]
    assert sorted(r["logical_date"][:10] for r in runs) == [
        (FIRST_DAY + timedelta(days=i)).isoformat() for i in range(DAYS)
    ]
    assert {r["run_type"] for r in runs} == {"backfill"}


def test_every_task_instance_succeeded(lifecycle):
    # Skipped is a decision, not a failure, where a DAG branches: the gate passed, so `reject` was skipped; the
    # monitor skips `request_retrain` when it decides not to retrain. Nothing else may be anything but success.
    def decided_skip(t: dict) -> bool:
        return t["state"] == "skipped" and (t["dag_id"] == MONITOR_DAG or (t["dag_id"], t["task_id"]) == (
            "flights_train", "reject"))  # fmt: skip

    bad = [(t["dag_id"], t["task_id"], t["dag_run_id"], t["state"]) for t in lifecycle["task_instances"]
           if t["state"] != "success" and not decided_skip(t)]  # fmt: skip
    assert not bad, bad
    succeeded: dict[str, set[str]] = {}
    for t in lifecycle["task_instances"]:
        if t["state"] == "success":
            succeeded.setdefault(t["dag_id"], set()).add(t["task_id"])
    assert succeeded["flights_ingest"] == {"extract", "validate"}
    assert {"plan", "build_features", "train", "evaluate", "decide", "promote"} <= succeeded["flights_train"]
    assert sum(t["dag_id"] == "flights_ingest" for t in lifecycle["task_instances"]) == 2 * DAYS


def test_tasks_ran_on_both_workers(lifecycle):
    hosts = {t["hostname"] for t in lifecycle["task_instances"] if t["state"] == "success"}
    assert hosts == set(topology.WORKERS), hosts


def test_validated_partitions_in_the_lake(stack, lifecycle):
    from include.mlops.storage import Lake

    lake = Lake(str(stack.lake))
    want = [f"date={FIRST_DAY + timedelta(days=i)}" for i in range(DAYS)]
    assert sorted(lake.partitions("validated", "flights")) == want
    assert all(lake.manifest("validated", "flights", p).rows > 300 for p in want)
    assert lake.partitions("features", "flights"), "no feature table materialised"


def test_champion_in_the_mlflow_server_registry(stack, lifecycle, monkeypatch):
    from mlflow import MlflowClient

    for k, v in stack.mlflow_credentials.items():
        monkeypatch.setenv(k, v)
    client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    champion = client.get_model_version_by_alias("flights", "champion")
    assert champion.tags["gate.decision"] == "passed"
    assert champion.tags["window_end"] == LAST_DAY.isoformat()
    assert champion.tags["airflow.run_id"] == lifecycle["train_run"]["dag_run_id"]
    # artifacts went through the server's proxy into its artifact destination, not to a local ./mlruns
    assert champion.source.startswith(("models:/", "mlflow-artifacts:/")), champion.source
    assert any((stack.tmp / "mlflow-artifacts").rglob("MLmodel")), "no model artifact behind the proxy"


def test_drift_report_in_the_lake(stack, lifecycle):
    from include.mlops.storage import Lake

    lake = Lake(str(stack.lake))
    report = f"{lake.root}/reports/drift/flights/date={LAST_DAY}"
    assert lake.fs.isdir(report), f"no drift report at {report}"
    assert lake.fs.ls(report), f"{report} is empty"


def test_components_still_healthy(stack, lifecycle):
    import httpx

    stack.check_alive()
    health = httpx.get(f"{stack.api_url}/api/v2/monitor/health").json()
    assert {c: health[c]["status"] for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "triggerer": "healthy",
        "dag_processor": "healthy",
    }
