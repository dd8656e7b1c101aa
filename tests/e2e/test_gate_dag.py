"""Gate, promotion, rejection and rollback on real MLflow through real DAG runs (dag.test):
the first run promotes; a deliberately worse candidate (spec override) is rejected and the champion stays;
a retrain is promoted; rollback restores the previous champion; a never-approved version is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from include.mlops.config import SPEC_DIR
from tests.e2e.conftest import JAN_END, dagbag, state

pytestmark = pytest.mark.e2e

CONF = {"window_end": JAN_END.isoformat(), "window_days": 21, "search_iterations": 2, "seed": 7}


def _override(tmp_path_factory, name: str, edit) -> object:
    raw = yaml.safe_load((SPEC_DIR / "flights.yaml").read_text())
    # A 21-day January window leaves a 7-day test split too small for the shipped thresholds (tuned on
    # two-month windows): relax the absolute and slice checks; non-regression stays as shipped.
    raw["gate"].update(min_roc_auc=0.55, max_brier=0.25, max_slice_gap=0.6, min_slice_rows=300)
    # Promotion mechanics: a retrain on the same window must be promotable, so not-worse is enough here (the
    # shipped superiority bar and the shadow it leads to are tested in test_shadow_dag.py).
    raw["gate"].update(min_roc_auc_gain=None, max_brier_rise=0.01)
    edit(raw)
    d = tmp_path_factory.mktemp(name)
    (d / "flights.yaml").write_text(yaml.safe_dump(raw))
    return d


@pytest.fixture(scope="module")
def normal_spec_dir(tmp_path_factory):
    return _override(tmp_path_factory, "normal-spec", lambda raw: None)


@pytest.fixture(scope="module")
def worse_spec_dir(tmp_path_factory):
    """The same spec with one deliberately useless candidate: leaves must hold more rows than the training
    split has, so no split is possible and every flight gets the base rate (ROC AUC 0.5)."""

    def stump(raw):
        raw["training"]["candidates"] = [
            {
                "name": "constant",
                "estimator": "hist_gradient_boosting",
                "params": {"max_iter": 1, "min_samples_leaf": 1_000_000},
            }
        ]

    return _override(tmp_path_factory, "worse-spec", stump)


@pytest.fixture(scope="module")
def client(module_mlflow):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=module_mlflow, registry_uri=module_mlflow)


@pytest.fixture(scope="module")
def scenario(airflow_db, validated_january, module_mlflow, normal_spec_dir, worse_spec_dir, client):
    """Run the whole story once; tests below read what it left."""
    from include.mlops import registry
    from include.mlops.config import load_spec_file

    runs = {}
    # distinct logical dates: dag.test replaces an earlier run of the same date (the window comes from CONF)
    normal = dagbag(normal_spec_dir)
    train = normal.get_dag("flights_train")
    runs["first"] = train.test(logical_date=datetime(2013, 1, 25, tzinfo=UTC), run_conf=CONF)
    worse = dagbag(worse_spec_dir).get_dag("flights_train")
    runs["worse"] = worse.test(logical_date=datetime(2013, 1, 26, tzinfo=UTC), run_conf=CONF)
    runs["retrain"] = train.test(logical_date=datetime(2013, 1, 27, tzinfo=UTC), run_conf=CONF)
    champion_before_rollback = str(client.get_model_version_by_alias("flights", "champion").version)
    runs["rollback"] = normal.get_dag("flights_rollback").test(run_conf={"reason": "e2e: retrain misbehaves"})
    runs["refused"] = normal.get_dag("flights_rollback").test(run_conf={"version": "2", "reason": "try rejected"})
    return {
        "runs": runs,
        "champion_before_rollback": champion_before_rollback,
        "history": registry.history(load_spec_file(normal_spec_dir / "flights.yaml")),
    }


def _tasks(dr) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(select(TaskInstance).where(TaskInstance.run_id == dr.run_id)).all()
        return {ti.task_id: state(ti) for ti in tis}


def test_first_run_promotes(scenario, client):
    dr = scenario["runs"]["first"]
    assert state(dr) == "success"
    assert _tasks(dr)["promote"] == "success"
    assert _tasks(dr)["reject"] == "skipped"
    v1 = client.get_model_version("flights", "1")
    assert v1.tags["gate.decision"] == "passed"
    assert v1.tags["gate.report_uri"].endswith("gate.html")


def test_worse_candidate_is_rejected_and_champion_stays(scenario, client):
    dr = scenario["runs"]["worse"]
    assert state(dr) == "success"  # a rejection is a decision, not a pipeline failure
    assert _tasks(dr)["reject"] == "success"
    assert _tasks(dr)["promote"] == "skipped"
    v2 = client.get_model_version("flights", "2")
    assert v2.tags["gate.decision"] == "rejected"
    assert "max_roc_auc_drop" in v2.tags["rejected_reasons"]


def test_retrain_is_promoted_over_the_first(scenario):
    assert _tasks(scenario["runs"]["retrain"])["promote"] == "success"
    assert scenario["champion_before_rollback"] == "3"


def test_rollback_restores_previous_champion(scenario, client):
    assert state(scenario["runs"]["rollback"]) == "success"
    assert str(client.get_model_version_by_alias("flights", "champion").version) == "1"


def test_rollback_to_a_rejected_version_is_refused(scenario, client):
    assert state(scenario["runs"]["refused"]) == "failed"
    assert str(client.get_model_version_by_alias("flights", "champion").version) == "1"


def test_audit_history(scenario):
    got = [(e.action, e.version, e.from_version, e.to_version) for e in scenario["history"]]
    assert got == [
        ("promote", "1", None, "1"),
        ("reject", "2", "1", "1"),
        ("promote", "3", "1", "3"),
        ("rollback", "1", "3", "1"),
    ]
    assert all(e.dag_run for e in scenario["history"])


def test_gate_reports_in_the_lake(scenario, validated_january, client):
    for v in ("1", "2", "3"):
        mv = client.get_model_version("flights", v)
        # keyed by the version's run id too, so a second MLflow store's v1 never overwrites this one
        assert mv.tags["gate.report_path"] == f"reports/gate/flights/v{v}-{mv.run_id[:8]}/gate.html"
        assert validated_january.exists(mv.tags["gate.report_path"]), v
