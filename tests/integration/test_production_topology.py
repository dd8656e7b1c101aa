"""The production topology, natively: three weeks of January 2013 replayed through the REST API as a parallel
backfill of `flights_ingest` on two Celery workers, then `flights_train` triggered by hand through the gate to
promotion, on Postgres (Airflow metadata, Celery results, MLflow, the source), Redis (broker) and an MLflow
tracking server with proxied artifacts; the promoted champion is then served online (compose's `serving`).
The assertions are what an operator checks after a deployment."""

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
    import httpx

    out: dict = {"timings": stack.timings}
    t0 = time.monotonic()
    # flights_train stays paused while ingesting: a paused DAG's asset events are not queued, so the only
    # training run is the manual one below (a scheduled one would pick its own window).
    stack.api("PATCH", "/api/v2/dags/flights_ingest", json={"is_paused": False})
    # the online feature store follows every validated day (flights_materialize, on the validated Asset)
    stack.api("PATCH", "/api/v2/dags/flights_materialize", json={"is_paused": False})
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
    # online serving (compose's `serving`), started now that a champion exists: it loads it while the monitor runs
    with pytest.MonkeyPatch.context() as mp:
        for k, v in stack.mlflow_credentials.items():
            mp.setenv(k, v)
        out["champion_version"] = _champion_version(stack)
    t_serving = time.monotonic()
    stack.start_serving(reload_seconds=1.0)

    t2 = time.monotonic()
    stack.api("PATCH", f"/api/v2/dags/{MONITOR_DAG}", json={"is_paused": False})
    out["monitor"] = stack.api(
        "POST",
        f"/api/v2/dags/{MONITOR_DAG}/dagRuns",
        json={"logical_date": f"{LAST_DAY}T00:00:00Z", "conf": {"date": LAST_DAY.isoformat()}},
    )
    stack.wait_for_runs(MONITOR_DAG, 1, timeout=180)
    stack.timings["monitor"] = round(time.monotonic() - t2, 1)

    def serving_health() -> dict | None:
        r = httpx.get(f"{stack.serving_url}/health", headers=stack.serving_headers, timeout=10)
        ok = r.status_code == 200 and r.json()["model_version"] == out["champion_version"]
        return r.json() if ok else None  # 503 until it has loaded the champion

    out["serving_health"] = stack.wait("serving /health reports the champion", serving_health, 180,
                                       logs=(topology.SERVING_SERVICE,))  # fmt: skip
    stack.timings["serving up (from start)"] = round(time.monotonic() - t_serving, 1)

    # The validated events materialized the days as they came; the last day once more by hand (a manual run
    # with its date), so the test does not depend on when the scheduler turns the last events into a run.
    manual = stack.api(
        "POST",
        "/api/v2/dags/flights_materialize/dagRuns",
        json={"logical_date": None, "conf": {"date": LAST_DAY.isoformat()}},
    )

    def settled() -> list | None:  # every materialize run finished, the manual one included
        runs = stack.api("GET", "/api/v2/dags/flights_materialize/dagRuns", params={"limit": 100})["dag_runs"]
        if any(r["state"] == "failed" for r in runs):
            raise AssertionError(f"a flights_materialize run failed\n{stack.failure_report('flights_materialize')}")
        done = all(r["state"] == "success" for r in runs) and manual["dag_run_id"] in {r["dag_run_id"] for r in runs}
        return runs if done else None

    stack.wait("every flights_materialize run finished", settled, 300, logs=topology.WORKERS)

    def materialized() -> dict | None:
        from include.mlops.config import load_spec
        from include.mlops.feature_store import materialized_days
        from include.mlops.features import feature_version
        from include.mlops.storage import Lake

        spec, lake = load_spec("flights"), Lake(str(stack.lake))
        record = materialized_days(spec, lake)
        held = record["days"].get(LAST_DAY.isoformat(), {}).get("feature_version")
        return record if held == feature_version(lake, spec, LAST_DAY, LAST_DAY)[0] else None

    out["online"] = stack.wait("flights_materialize wrote the last day", materialized, 300,
                               logs=topology.WORKERS)  # fmt: skip
    out["task_instances"] = stack.task_instances()
    for task in ("extract", "validate", "build_features", "train", "evaluate", "promote"):
        durations = sorted(t["duration"] or 0 for t in out["task_instances"] if t["task_id"] == task)
        if durations:
            stack.timings[f"task {task} (median)"] = round(durations[len(durations) // 2], 1)
    print("\nintegration timings (s):", stack.timings, "| MLflow basic auth:", stack.mlflow_auth)
    return out


def _champion_version(stack) -> str:
    """The flights champion's version in the stack's MLflow registry (credentials from the environment)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    return client.get_model_version_by_alias("flights", "champion").version


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


def test_serving_scores_like_the_champion(stack, lifecycle, monkeypatch):
    """The serving process answers real feature rows of the scored day with the champion's own predict_proba,
    bit for bit (serving.request_body sends the exact values), and names a missing column in a 422."""
    import httpx
    import numpy as np
    import pandas as pd

    from include.mlops import scoring, serving
    from include.mlops.config import load_spec
    from include.mlops.features import features_for_dates
    from include.mlops.storage import Lake

    for k, v in stack.mlflow_credentials.items():
        monkeypatch.setenv(k, v)
    # MLflow's models:/ artifact repository resolves versions with the process-wide registry URI, whatever
    # download_artifacts is given: point it at the stack's server, not scripts/env.sh's local SQLite store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_url)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    version = lifecycle["champion_version"]
    health = lifecycle["serving_health"]
    assert (health["status"], health["model_version"], health["last_error"]) == ("ok", version, None)
    spec = load_spec("flights")
    scoring.clear_cache()
    champion = scoring.load_model(spec, f"models:/flights/{version}", tracking_uri=stack.mlflow_url)
    scoring.clear_cache()
    assert health["features"] == champion.features
    frame = features_for_dates(Lake(str(stack.lake)), spec, LAST_DAY, LAST_DAY)[champion.features]
    with_missing = frame[frame.isna().any(axis=1)].head(4)  # missing values take the model's missing branches
    rows = pd.concat([with_missing, frame.drop(with_missing.index).sample(96, random_state=7)])

    def invoke(batch: pd.DataFrame) -> httpx.Response:
        def answered() -> httpx.Response | None:
            r = httpx.post(f"{stack.serving_url}/invocations", content=serving.request_body(batch),
                           headers={"Content-Type": "application/json", **stack.serving_headers},
                           timeout=30)  # fmt: skip
            return None if r.status_code == 503 else r  # a worker whose first alias check failed retries in 1 s

        return stack.wait("serving /invocations", answered, 30, logs=(topology.SERVING_SERVICE,))

    # one row and a few (the fast path's tree walk), a hundred (the classifier's own predict, off the event loop)
    for batch in (rows.iloc[:1], rows.iloc[:8], rows):
        r = invoke(batch)
        assert r.status_code == 200, r.text
        answer = r.json()
        expected = champion.model.predict_proba(batch)[:, 1]
        np.testing.assert_array_equal(np.asarray(answer["predictions"], dtype="float64"), expected)
        assert answer["labels"] == (expected >= champion.threshold).astype(int).tolist()
        assert answer["model_version"] == version

    column = champion.features[0]
    r = invoke(rows.iloc[:2].drop(columns=[column]))
    assert r.status_code == 422, r.text
    assert r.json()["error_code"] == "INVALID_INPUT"
    assert repr(column) in r.json()["message"], r.json()


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
    assert httpx.get(f"{stack.serving_url}/health", timeout=10).status_code == 401  # the token is on, as in compose
    serving = httpx.get(f"{stack.serving_url}/health", headers=stack.serving_headers, timeout=10)
    assert serving.status_code == 200, serving.text
    assert serving.json()["model_version"] == lifecycle["champion_version"]


def test_serving_looks_features_up_by_entity_keys(stack, lifecycle, monkeypatch):
    """Rows of the last day sent as entity keys + request fields only: the serving process reads their features
    from the Redis online store flights_materialize filled and answers the champion's predict_proba on the
    engine's features, bit for bit; an unknown flight is a named 404."""
    import httpx
    import numpy as np

    from include.mlops import feature_store, scoring, serving
    from include.mlops.config import load_spec
    from include.mlops.features import features_for_dates
    from include.mlops.storage import Lake

    for k, v in stack.mlflow_credentials.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_url)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    assert lifecycle["online"]["store"].startswith("redis ")
    spec, lake = load_spec("flights"), Lake(str(stack.lake))
    scoring.clear_cache()
    champion = scoring.load_model(
        spec, f"models:/flights/{lifecycle['champion_version']}", tracking_uri=stack.mlflow_url
    )
    scoring.clear_cache()
    expected = champion.model.predict_proba(features_for_dates(lake, spec, LAST_DAY, LAST_DAY)[champion.features])
    sent = feature_store.request_rows(spec, lake, LAST_DAY)
    headers = {"Content-Type": "application/json", **stack.serving_headers}
    for rows in (sent.iloc[:1], sent):
        r = httpx.post(f"{stack.serving_url}/invocations", content=serving.request_body(rows, "records"),
                       headers=headers, timeout=30)  # fmt: skip
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.asarray(r.json()["predictions"]), expected[: len(rows), 1])
    unknown = sent.iloc[:1].assign(flight=99999)
    r = httpx.post(f"{stack.serving_url}/invocations", content=serving.request_body(unknown, "records"),
                   headers=headers, timeout=30)  # fmt: skip
    assert r.status_code == 404, r.text
    assert r.json()["error_code"] == "ENTITY_NOT_FOUND"
