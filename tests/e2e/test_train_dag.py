"""flights_train end to end: a real dag.test() run on validated partitions of real January 2013 days, with a
temp SQLite MLflow: parent and nested runs, metrics, artifacts, the registered version and its alias."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.e2e.conftest import JAN_END as WINDOW_END

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def train_run(airflow_db, validated_january, module_mlflow):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO

    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("flights_train")
    conf = {"window_end": WINDOW_END.isoformat(), "window_days": 21, "search_iterations": 2, "seed": 7}
    return dag.test(logical_date=datetime(2013, 1, 25, tzinfo=UTC), run_conf=conf)


def _trained_version(client):
    """The version the run registered (the module's MLflow DB is fresh: the only one). It keeps alias
    ``challenger`` only if the gate passed it: a rejected version loses it."""
    (mv,) = client.search_model_versions("name='flights'")
    return mv


def test_train_run_succeeds(train_run):
    assert str(train_run.state).rsplit(".", 1)[-1].lower() == "success"
    tis = {ti.task_id: str(ti.state).rsplit(".", 1)[-1].lower() for ti in train_run.get_task_instances()}
    for task_id in ("plan", "build_features", "train", "evaluate", "decide"):
        assert tis[task_id] == "success", task_id
    # the gate decides: exactly one of promote / reject ran (gate scenarios are in test_gate_dag.py)
    assert sorted([tis["promote"], tis["reject"]]) == ["skipped", "success"]


def test_feature_table_materialised(train_run, validated_january, module_mlflow):
    from mlflow import MlflowClient

    mv = _trained_version(MlflowClient(tracking_uri=module_mlflow))
    m = validated_january.manifest("features", "flights", f"version={mv.tags['feature_version']}")
    assert m is not None, "the feature table the model was trained on is not in the lake"
    assert m.rows > 15_000  # 21 real days of departures


def test_mlflow_runs_metrics_artifacts_and_challenger(train_run):
    import os

    from mlflow import MlflowClient

    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = _trained_version(client)
    assert mv.tags["window_end"] == WINDOW_END.isoformat()
    assert mv.tags["airflow.dag_id"] == "flights_train"
    assert mv.tags["airflow.run_id"] == train_run.run_id
    assert ("challenger" in mv.aliases) == (mv.tags["gate.decision"] == "passed")  # a rejected one loses it
    assert mv.tags["trained_because"].startswith("manual")
    assert client.list_artifacts(mv.run_id, "lineage")  # lineage.json + spec.yaml (tests/unit/test_lineage.py)
    parent = client.get_run(mv.run_id)
    for metric in ("test_roc_auc", "test_pr_auc", "test_log_loss", "test_brier", "test_f1"):
        assert metric in parent.data.metrics, metric
    assert 0.5 < parent.data.metrics["test_roc_auc"] < 1.0
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags.get("mlflow.runName") for c in children) == ["hgb", "logreg"]
    assert parent.inputs.dataset_inputs, "feature table not logged as a dataset input"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/roc.png", "plots/pr.png", "plots/calibration.png", "plots/confusion_matrix.png"} <= artifacts
