"""Idempotency: every DAG run re-run three times (dag.test on the same logical date and conf) gives identical
partitions and manifests, one Asset event per run with the same content, and no duplicate model versions or
audit entries. Days of April 2013, on a lake and an MLflow DB of this module's own.

Training: a scheduled `flights_train` run trains only when `training.cadence_days` new validated days arrived
since the last trained window, so after one training the scheduled path decides "not due" again and again
(checked through `plan_training` exactly as the plan task calls it for a non-manual run: dag.test can only
make manual runs, and a manual run always trains by design - see the README's Reliability section).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.e2e.conftest import dagbag
from tests.reliability.conftest import day_range, state, task_states, write_validated, zone_snapshot

pytestmark = pytest.mark.reliability

VALIDATED = day_range("2013-04-01", "2013-04-21")
INGEST_DAY = "2013-04-22"
WINDOW_END, WINDOW_DAYS = "2013-04-21", 15
RUNS = 3
RUN_IDENTITY = ("decided_at", "mlflow_run_id", "airflow.run_id")  # what may differ between re-runs of a decision


def _logical(day: str) -> datetime:
    y, m, d = map(int, day.split("-"))
    return datetime(y, m, d, tzinfo=UTC)


def _without_run_id(snapshot: dict) -> dict:
    return {
        p: {**v, "manifest": {k: x for k, x in v["manifest"].items() if k != "run_id"}} for p, v in snapshot.items()
    }


def _asset_extras(uri: str, dag_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra, AssetEvent.source_run_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == uri, AssetEvent.source_dag_id == dag_id)
        ).all()
    return [{"extra": r[0], "run": r[1]} for r in rows]


@pytest.fixture(scope="module")
def lake(own_lake, nyc, spec, source_db, module_mlflow):
    write_validated(own_lake, nyc, spec, VALIDATED)
    return own_lake


@pytest.fixture(scope="module")
def bag(airflow_db):
    return dagbag()


@pytest.fixture(scope="module")
def ingest_runs(lake, bag) -> list[dict]:
    """flights_ingest of one day, three times: what each run left in raw / validated / quarantine / reports."""
    out = []
    for _ in range(RUNS):
        dr = bag.get_dag("flights_ingest").test(logical_date=_logical(INGEST_DAY), run_conf={"date": INGEST_DAY})
        assert state(dr) == "success"
        out.append(
            {
                "run_id": dr.run_id,
                "zones": {z: _without_run_id(zone_snapshot(lake, z)) for z in ("raw", "validated", "quarantine")},
                "result": lake.read_json(f"reports/gx/flights/date={INGEST_DAY}/result.json"),
            }
        )
    return out


def test_ingest_rerun_three_times_is_identical(ingest_runs, lake):
    first = ingest_runs[0]
    assert f"date={INGEST_DAY}" in first["zones"]["validated"]
    assert first["zones"]["validated"][f"date={INGEST_DAY}"]["manifest"]["rows"] > 600
    for later in ingest_runs[1:]:
        assert later["zones"] == first["zones"]
        assert later["result"] == first["result"]
    # one file per table (content-addressed names), no leftovers of earlier runs or temp files
    files = first["zones"]["validated"][f"date={INGEST_DAY}"]["files"]
    assert sorted(files) == sorted(["_manifest.json", *(f for f in files if f.endswith(".parquet"))])
    assert len(files) == 3
    leftovers = [p for p in lake.fs.find(lake.root) if ".tmp-" in p]
    assert leftovers == []


def test_ingest_reruns_publish_one_identical_asset_event_each(ingest_runs):
    events = [e for e in _asset_extras("mlops://validated/flights", "flights_ingest")]
    mine = [e for e in events if e["extra"].get("partition") == f"date={INGEST_DAY}"]
    # each re-run (a new run id on the same logical date) emits once, always the same content
    assert len(mine) == len({e["run"] for e in mine}) == RUNS
    assert len({str(e["extra"]) for e in mine}) == 1


@pytest.fixture(scope="module")
def trained(lake, bag, ingest_runs, module_mlflow, spec) -> dict:
    """One manual training on a fixed window (fast settings), then the champion alias on it for scoring."""
    from mlflow import MlflowClient

    from include.mlops import registry

    conf = {
        "window_end": WINDOW_END,
        "window_days": WINDOW_DAYS,
        "candidates": ["logreg"],
        "search_iterations": 1,
        "seed": 7,
    }
    dr = bag.get_dag("flights_train").test(logical_date=_logical("2013-04-23"), run_conf=conf)
    assert state(dr) == "success"
    client = MlflowClient(module_mlflow, module_mlflow)
    versions = client.search_model_versions("name='flights'")
    assert len(versions) == 1
    version = str(versions[0].version)
    if task_states(dr).get("promote") != "success":  # a 15-day window may not pass the gate: serve it anyway
        client.set_registered_model_alias("flights", "champion", version)
    return {"version": version, "history": len(registry.history(spec)), "client": client}


def test_scheduled_training_is_not_due_again_on_the_same_data(trained, lake, spec):
    from include.mlops import training

    plans = [
        training.plan_training(
            spec,
            lake,
            window_end=None,
            window_days=WINDOW_DAYS,
            force=False,
            last_end=training.last_trained_window_end(spec),
        )
        for _ in range(RUNS)
    ]
    assert [p["due"] for p in plans] == [False] * RUNS, plans
    assert all(p == plans[0] for p in plans)
    assert "cadence" in plans[0]["reason"]
    assert len(trained["client"].search_model_versions("name='flights'")) == 1


def test_feature_build_rerun_reuses_the_same_version(trained, lake, spec):
    from include.mlops import features

    before = zone_snapshot(lake, "features")
    results = [features.materialize_features(spec, lake, "2013-04-07", WINDOW_END) for _ in range(RUNS)]
    assert {r.version for r in results} == {results[0].version}
    assert all(r.reused for r in results)  # the training run materialised it already
    assert zone_snapshot(lake, "features") == before


@pytest.fixture(scope="module")
def score_runs(trained, lake, bag) -> list[dict]:
    out = []
    for _ in range(RUNS):
        dr = bag.get_dag("flights_score").test(logical_date=_logical(WINDOW_END), run_conf={"date": WINDOW_END})
        assert state(dr) == "success"
        out.append(_without_run_id(zone_snapshot(lake, "predictions")))
    return out


def test_score_rerun_three_times_is_identical(score_runs, trained):
    assert f"date={WINDOW_END}" in score_runs[0]
    assert all(s == score_runs[0] for s in score_runs[1:])
    # this module's runs only: other modules of the session score other days in the same Airflow DB
    events = [
        e
        for e in _asset_extras("mlops://predictions/flights", "flights_score")
        if f"date={WINDOW_END}" in (e["extra"] or {}).get("partitions", [])
    ]
    assert len(events) == len({e["run"] for e in events}) == RUNS
    assert {str(e["extra"]) for e in events} == {
        str({"partitions": [f"date={WINDOW_END}"], "model_version": trained["version"]})
    }


@pytest.fixture(scope="module")
def monitor_runs(score_runs, lake, bag, module_mlflow) -> list[dict]:
    out = []
    for _ in range(RUNS):
        dr = bag.get_dag("flights_monitor").test(logical_date=_logical(WINDOW_END), run_conf={"date": WINDOW_END})
        assert state(dr) == "success"
        out.append(
            {
                "decision": {
                    k: v
                    for k, v in lake.read_json(f"reports/drift/flights/decisions/{WINDOW_END}.json").items()
                    if k not in RUN_IDENTITY
                },
                "tasks": task_states(dr),
            }
        )
    return out


def test_monitor_rerun_three_times_decides_the_same(monitor_runs):
    first = monitor_runs[0]
    for later in monitor_runs[1:]:
        assert later["decision"] == first["decision"]
        assert later["tasks"] == first["tasks"]


def test_reruns_add_no_model_versions_and_no_audit_entries(monitor_runs, trained, spec):
    from include.mlops import registry

    assert len(trained["client"].search_model_versions("name='flights'")) == 1
    assert len(registry.history(spec)) == trained["history"]


def test_monitor_reruns_keep_one_mlflow_run_per_day(monitor_runs, trained):
    client = trained["client"]
    exp = client.get_experiment_by_name("flights-monitoring")
    found = client.search_runs([exp.experiment_id], filter_string=f"tags.end_day = '{WINDOW_END}'")
    assert len(found) == 1


def test_monitor_reruns_keep_one_evidently_snapshot_per_day(monitor_runs, lake):
    from evidently.ui.workspace import Workspace

    ws = Workspace.create(f"{lake.root}/evidently")
    project = next(iter(ws.search_project("flights")))
    names = [ws.get_run(project.id, i).name for i in ws.list_runs(project.id)]
    assert names.count(next(n for n in names if n.startswith(WINDOW_END))) == 1, names
