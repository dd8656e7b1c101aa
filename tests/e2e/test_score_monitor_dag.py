"""flights_score and flights_monitor end to end with dag.test() on a lake of their own (real January and
June-July 2013 days) and a temp MLflow: a champion trained on three January weeks scores a day; monitored on
its own test week it requests nothing; monitored on a July week it requests a retrain (Asset event) with a
named reason; a day later the trigger alerts again but the request is held back (one request per debounce)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from tests.e2e.conftest import dagbag, state, write_validated

pytestmark = pytest.mark.e2e

CONTROL = "2013-01-24"  # last day of the champion's test split (Jan 18-24): the no-drift control
JULY = "2013-07-14"  # a July week (Jul 8-14) against a January model
DAYS = [("2013-01-01", "2013-01-24"), ("2013-06-10", JULY)]  # July: the window plus its 28 days of delay history


@pytest.fixture(scope="module")
def lake(nyc, spec, tmp_path_factory):
    """A lake of this module's own (decision history, Evidently workspace and predictions stay here)."""
    from include.mlops.storage import Lake

    old = os.environ["MLOPS_DATA_ROOT"]
    root = tmp_path_factory.mktemp("score-monitor") / "lake"
    os.environ["MLOPS_DATA_ROOT"] = str(root)
    lake = write_validated(Lake(str(root)), nyc, spec, DAYS)
    yield lake
    os.environ["MLOPS_DATA_ROOT"] = old


@pytest.fixture(scope="module")
def champion(lake, module_mlflow, spec) -> str:
    """A winter champion: trained like the gate test's first run (21 days to Jan 24, 2 trials, seed 7)."""
    from mlflow import MlflowClient

    from include.mlops import features, scoring, training

    table = features.features_for_dates(lake, spec, "2013-01-04", CONTROL)
    tags = {"window_start": "2013-01-04", "window_end": CONTROL}
    result = training.train_candidates(spec, table, seed=7, search_iterations=2, tags=tags)
    MlflowClient(module_mlflow, module_mlflow).set_registered_model_alias("flights", "champion", result.model_version)
    scoring.clear_cache()
    return result.model_version


@pytest.fixture(scope="module")
def runs(airflow_db, lake, champion):
    """Every DAG run of the story, in order (the decisions are debounced against each other)."""
    bag = dagbag()
    score, monitor = bag.get_dag("flights_score"), bag.get_dag("flights_monitor")
    out = {}
    for name, dag, day in (
        ("score_control", score, CONTROL),
        ("score_july", score, JULY),
        ("monitor_control", monitor, CONTROL),
        ("monitor_july", monitor, JULY),
        ("monitor_debounced", monitor, "2013-07-13"),
    ):
        y, m, d = map(int, day.split("-"))
        out[name] = dag.test(logical_date=datetime(y, m, d, tzinfo=UTC), run_conf={"date": day})
    return out


def _tasks(dr) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.run_id == dr.run_id, TaskInstance.dag_id == dr.dag_id)
        ).all()
        return {ti.task_id: state(ti) for ti in tis}


def _asset_events(uri: str, dr) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == uri, AssetEvent.source_dag_id == dr.dag_id, AssetEvent.source_run_id == dr.run_id)
        ).all()
    return [r[0] for r in rows]


def _decision(lake, day: str) -> dict:
    return lake.read_json(f"reports/drift/flights/decisions/{day}.json")


def test_scoring_writes_the_days_predictions_and_emits_the_asset(runs, lake, champion):
    for name, day in (("score_control", CONTROL), ("score_july", JULY)):
        dr = runs[name]
        assert state(dr) == "success", name
        stored = lake.read_table("predictions", "flights", f"date={day}", "predictions")
        validated = lake.manifest("validated", "flights", f"date={day}")
        assert len(stored) == validated.files["flights"].rows
        assert set(stored["model_version"]) == {champion}
        assert stored["probability"].between(0, 1).all()
        assert _asset_events("mlops://predictions/flights", dr) == [
            {"partitions": [f"date={day}"], "model_version": champion}
        ]


def test_control_week_requests_no_retrain(runs, lake):
    dr = runs["monitor_control"]
    assert state(dr) == "success"
    assert _tasks(dr) == {
        "monitor": "success",
        "decide": "success",
        "alert": "success",
        "request_retrain": "skipped",
        "propose_shadow": "skipped",  # no shadow
    }
    assert _asset_events("mlops://retrain/flights", dr) == []
    d = _decision(lake, CONTROL)
    assert (d["retrain"], d["alert"], d["triggers"]) == (False, False, [])
    assert d["reasons"][0].startswith("no trigger:")
    monitor = lake.read_json(f"reports/drift/flights/date={CONTROL}/monitor.json")
    # the champion's own test week: the same rows and model as its test metrics at training
    assert monitor["metrics"]["roc_auc_drop"] == pytest.approx(0, abs=1e-5)
    assert monitor["metrics"]["brier_rise"] == pytest.approx(0, abs=1e-5)
    assert monitor["metrics"]["drift_share"] >= 0.3, "raw column drift is high even here, and ignored"
    # what was served on Jan 24 equals a fresh scoring by the same champion: no training/serving skew
    assert monitor["served"]["compared_rows"] > 600
    assert monitor["served"]["max_abs_diff"] == pytest.approx(0, abs=1e-12)


def test_july_week_requests_a_retrain_with_a_named_reason(runs, lake, champion):
    dr = runs["monitor_july"]
    assert state(dr) == "success"
    assert _tasks(dr)["request_retrain"] == "success"
    d = _decision(lake, JULY)
    assert d["retrain"] is True
    assert d["alert"] is True
    # a January champion in July: its Brier skill against July's own delay rate fell (the spec's Brier trigger)
    assert "brier_skill_drop" in d["triggers"]
    assert any(r.startswith("brier_skill_drop ") and "at training" in r for r in d["reasons"])
    events = _asset_events("mlops://retrain/flights", dr)
    assert len(events) == 1
    assert events[0]["triggers"] == d["triggers"]
    assert events[0]["champion_version"] == champion
    assert events[0]["day"] == JULY


def test_a_trigger_the_next_day_alerts_but_is_debounced(runs, lake):
    dr = runs["monitor_debounced"]
    assert state(dr) == "success"
    assert _tasks(dr)["request_retrain"] == "skipped"
    assert _asset_events("mlops://retrain/flights", dr) == []
    d = _decision(lake, "2013-07-13")
    # a request the day before: at most one per retrain_debounce_days (the weekly cadence trains meanwhile)
    assert (d["retrain"], d["alert"], d["blocked_by"]) == (False, True, "debounce")
    assert f"a retrain was requested for {JULY}" in d["reasons"][-1]


def test_reports_mlflow_runs_and_evidently_workspace(runs, lake, module_mlflow, champion):
    from evidently.ui.workspace import Workspace
    from mlflow import MlflowClient

    for day in (CONTROL, JULY, "2013-07-13"):
        assert lake.exists(f"reports/drift/flights/date={day}/drift.html"), day
        assert lake.exists(f"reports/drift/flights/date={day}/drift.json"), day
    client = MlflowClient(module_mlflow, module_mlflow)
    exp = client.get_experiment_by_name("flights-monitoring")
    found = client.search_runs([exp.experiment_id], order_by=["tags.end_day ASC"])
    by_day = {r.data.tags["end_day"]: r for r in found}
    assert set(by_day) == {CONTROL, JULY, "2013-07-13"}
    july = by_day[JULY]
    assert july.data.tags["model_version"] == champion
    assert july.data.tags["decision.retrain"] == "true"
    assert "brier_skill_drop" in july.data.tags["decision.triggers"]
    assert by_day[CONTROL].data.tags["decision.retrain"] == "false"
    assert july.data.metrics["brier_rise"] >= 0.02
    assert {"roc_auc", "brier", "prediction_drift", "weighted_drift", "drift_share"} <= set(july.data.metrics)
    assert "evidently/drift.html" in {a.path for a in client.list_artifacts(july.info.run_id, "evidently")}

    ws = Workspace.create(os.path.join(lake.root, "evidently"))
    (project,) = ws.search_project("flights")
    assert len(ws.list_runs(project.id)) == 3


def test_a_newer_champion_keeps_served_days_and_a_rescore_is_labelled(runs, lake, module_mlflow, champion):
    """Served history is a record: a score run under a newer champion leaves the day's predictions (sha256) and
    announces no partition; ``rescore: true`` writes rescored/flights/version=<v>/date=… instead."""
    from mlflow import MlflowClient

    from include.mlops import scoring, tracking

    client = MlflowClient(module_mlflow, module_mlflow)
    first = client.get_model_version("flights", champion)
    before = lake.manifest("predictions", "flights", f"date={CONTROL}").sha256
    with tracking.using(module_mlflow):  # MLflow resolves a models:/m-... source with a default client
        newer = client.create_model_version("flights", first.source, run_id=first.run_id)
    client.set_registered_model_alias("flights", "champion", newer.version)
    scoring.clear_cache()
    y, m, d = map(int, CONTROL.split("-"))
    score = dagbag().get_dag("flights_score")
    try:
        kept = score.test(logical_date=datetime(y, m, d, 1, tzinfo=UTC), run_conf={"date": CONTROL})
        again = score.test(logical_date=datetime(y, m, d, 2, tzinfo=UTC), run_conf={"date": CONTROL, "rescore": True})
    finally:
        client.set_registered_model_alias("flights", "champion", champion)
    assert state(kept) == state(again) == "success"
    assert lake.manifest("predictions", "flights", f"date={CONTROL}").sha256 == before
    assert _asset_events("mlops://predictions/flights", kept) == [{"partitions": [], "model_version": None}]
    rescored = lake.manifest("rescored", f"flights/version={newer.version}", f"date={CONTROL}")
    assert rescored is not None
    assert rescored.extra["model_version"] == str(newer.version)
    assert rescored.run_id == again.run_id


def test_reconcile_scores_validated_days_whose_event_was_lost(runs, lake, champion):
    """June 10-11 were validated but no score run ever saw them (as when a validated Asset event starts no run):
    flights_reconcile finds and scores the oldest gaps, and announces them."""
    june = ["2013-06-10", "2013-06-11"]
    assert all(lake.manifest("predictions", "flights", f"date={d}") is None for d in june)
    dr = dagbag().get_dag("flights_reconcile").test(run_conf={"max_days": 2})
    assert state(dr) == "success"
    for day in june:
        stored = lake.read_table("predictions", "flights", f"date={day}", "predictions")
        assert len(stored) == lake.manifest("validated", "flights", f"date={day}").files["flights"].rows
        assert set(stored["model_version"]) == {champion}
    assert lake.manifest("predictions", "flights", "date=2013-06-12") is None  # the rest: the next runs
    assert _asset_events("mlops://predictions/flights", dr) == [
        {"partitions": [f"date={d}" for d in june], "model_version": champion, "reconciled": True}
    ]


def test_a_shadow_scores_beside_the_champion_in_the_score_run(airflow_db, lake, module_mlflow, champion, spec):
    """With a ``shadow`` alias set through the registry, one flights_score run writes the day's predictions and,
    from the same rows, the shadow's partition shadow/flights/version=<v>/date=…; the shadow is not announced."""
    from mlflow import MlflowClient

    from include.mlops import registry, tracking

    day = "2013-01-23"
    client = MlflowClient(module_mlflow, module_mlflow)
    first = client.get_model_version("flights", champion)
    with tracking.using(module_mlflow):  # a cheap shadow: the champion's files as a newer version
        v = str(client.create_model_version("flights", first.source, run_id=first.run_id).version)
    assert registry.set_shadow(spec, v, reason="e2e", tracking_uri=module_mlflow) is not None
    y, m, d = map(int, day.split("-"))
    try:
        dr = (
            dagbag()
            .get_dag("flights_score")
            .test(logical_date=datetime(y, m, d, 3, tzinfo=UTC), run_conf={"date": day})
        )
    finally:
        registry.clear_shadow(spec, reason="e2e done", tracking_uri=module_mlflow)
    assert state(dr) == "success"
    served = lake.read_table("predictions", "flights", f"date={day}", "predictions")
    theirs = lake.read_table("shadow", f"flights/version={v}", f"date={day}", "predictions")
    assert len(theirs) == len(served) == lake.manifest("validated", "flights", f"date={day}").files["flights"].rows
    assert (set(served["role"]), set(served["model_version"])) == ({"champion"}, {champion})
    assert (set(theirs["role"]), set(theirs["model_version"])) == ({"shadow"}, {v})
    manifest = lake.manifest("shadow", f"flights/version={v}", f"date={day}")
    assert manifest.run_id == dr.run_id
    assert manifest.extra["champion_version"] == champion
    assert _asset_events("mlops://predictions/flights", dr) == [
        {"partitions": [f"date={day}"], "model_version": champion}
    ]
