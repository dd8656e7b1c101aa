"""The shadow challenger end to end with dag.test() on real January 2013 days and a temp MLflow.

A champion that learnt nothing serves (trained on Jan 1-16 with the labels shuffled: its ROC AUC is ~0.5).
``flights_train`` trains a logistic regression on Jan 8-28 under a spec whose gate asks for an impossible gain: the
candidate is rejected only for not beating the champion, so it becomes the shadow. (Both spec folders allow a Brier
rise of 0.1: a model fitted on seven January days is poorly calibrated, and the point here is the shadow's path.)
``flights_score`` writes its predictions beside the champion's; ``flights_monitor`` compares
the two on the shadow's test split and the days since (Jan 22-31), finds the shadow better by the shipped spec's
bars and proposes it (a ``retrain`` Asset event naming it); a manual ``flights_train`` run with ``gate_shadow``
sends it through the gate on that window without training, and it is promoted."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
import yaml

from tests.conftest import REPO
from tests.e2e.conftest import dagbag, state, write_validated

pytestmark = pytest.mark.e2e

DAY = "2013-01-31"


@pytest.fixture(scope="module")
def lake(nyc, spec, tmp_path_factory):
    from include.mlops.storage import Lake

    old = os.environ["MLOPS_DATA_ROOT"]
    root = tmp_path_factory.mktemp("shadow") / "lake"
    os.environ["MLOPS_DATA_ROOT"] = str(root)
    yield write_validated(Lake(str(root)), nyc, spec, [("2013-01-01", DAY)])
    os.environ["MLOPS_DATA_ROOT"] = old


@pytest.fixture(scope="module")
def champion(lake, module_mlflow, spec) -> str:
    from mlflow import MlflowClient

    from include.mlops import features, scoring, training

    table = features.features_for_dates(lake, spec, "2013-01-01", "2013-01-16")
    label = spec.label.name
    table[label] = table[label].sample(frac=1.0, random_state=0).to_numpy()  # nothing left to learn
    tags = {"window_start": "2013-01-01", "window_end": "2013-01-16"}
    result = training.train_candidates(spec, table, seed=7, search_iterations=1, candidates=["logreg"], tags=tags)
    MlflowClient(module_mlflow, module_mlflow).set_registered_model_alias("flights", "champion", result.model_version)
    scoring.clear_cache()
    return result.model_version


def _spec_dir(root, **gate) -> object:
    """The shipped specs with the flights gate changed."""
    d = root / "-".join(gate)
    d.mkdir()
    for path in (REPO / "include" / "config").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if doc.get("name") == "flights":
            doc["gate"].update(gate)
        (d / path.name).write_text(yaml.safe_dump(doc))
    return d


@pytest.fixture(scope="module")
def spec_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("specs")
    lenient = {"max_brier": 0.3, "max_brier_rise": 0.1}
    # high: no candidate is ever better by 1.0 ROC AUC; shipped: the shipped bars (gain 0.01), Brier lenient
    return _spec_dir(root, min_roc_auc_gain=1.0, **lenient), _spec_dir(root, **lenient)


def _run(dag, day: str, conf: dict):
    y, m, d = map(int, day.split("-"))
    return dag.test(logical_date=datetime(y, m, d, 5, tzinfo=UTC), run_conf=conf)


def _tasks(dr) -> dict[str, str]:
    return {ti.task_id: state(ti) for ti in dr.get_task_instances()}


@pytest.fixture(scope="module")
def story(airflow_db, lake, champion, spec_dirs):
    """The DAG runs, in order."""
    high, shipped = dagbag(spec_dirs[0]), dagbag(spec_dirs[1])
    conf = {"window_end": "2013-01-28", "window_days": 21, "search_iterations": 2, "seed": 7, "candidates": ["logreg"]}
    out = {"train": _run(high.get_dag("flights_train"), "2013-01-28", conf)}
    out["score"] = _run(shipped.get_dag("flights_score"), DAY, {"date": DAY})
    out["monitor"] = _run(shipped.get_dag("flights_monitor"), DAY, {"date": DAY})
    out["gate"] = _run(shipped.get_dag("flights_train"), DAY, {"gate_shadow": True})
    return out


def test_a_candidate_not_shown_better_becomes_the_shadow(story, module_mlflow, champion, spec):
    from include.mlops import registry

    tis = _tasks(story["train"])
    assert (tis["evaluate"], tis["reject"], tis["promote"]) == ("success", "success", "skipped")
    report = story["train"].get_task_instances()[0].xcom_pull(task_ids="evaluate", dag_id="flights_train")
    assert report["failed"] == ["min_roc_auc_gain"]
    assert report["may_shadow"] is True
    entries = registry.history(spec, module_mlflow)
    shadow = [e for e in entries if e.action == "shadow"]
    assert [e.version for e in shadow] == [report["challenger_version"]]


def _shadowed(spec, uri) -> str:
    from include.mlops import registry

    (entry,) = [e for e in registry.history(spec, uri) if e.action == "shadow"]
    return entry.version


def test_the_shadow_scores_beside_the_champion(story, lake, champion, spec, module_mlflow):
    assert state(story["score"]) == "success"
    version = _shadowed(spec, module_mlflow)
    theirs = lake.read_table("shadow", f"flights/version={version}", f"date={DAY}", "predictions")
    served = lake.read_table("predictions", "flights", f"date={DAY}", "predictions")
    assert len(theirs) == len(served) > 500
    assert set(served["model_version"]) == {champion}


def test_the_monitor_compares_them_and_the_better_shadow_proposes_itself(story, lake, champion, spec, module_mlflow):
    tis = _tasks(story["monitor"])
    assert tis["monitor"] == tis["decide"] == "success"
    monitor = lake.read_json(f"reports/drift/flights/date={DAY}/monitor.json")
    shadow = monitor["metrics"]["shadow"]
    assert shadow["champion"] == champion
    assert shadow["version"] == _shadowed(spec, module_mlflow)
    assert shadow["window"] == ["2013-01-22", DAY]  # the shadow's test split (Jan 22-28) and the days since
    assert shadow["rows"] > 5000
    assert shadow["verdict"] == "better", shadow["detail"]
    assert shadow["auc_gain_interval"][0] >= 0.01
    assert shadow["window_roc_auc"] is not None  # its curve beside the champion's on the monitored week
    assert shadow["stored"]["days"] == 1  # Jan 31, scored by flights_score beside the champion
    assert shadow["stored"]["max_abs_diff"] < 1e-9  # what it said that day is what it says now
    decision = lake.read_json(f"reports/drift/flights/decisions/{DAY}.json")
    assert decision["propose_shadow"] == shadow["version"]
    assert tis["propose_shadow"] == "success"
    extra = story["monitor"].get_task_instances()[0].xcom_pull(task_ids="propose_shadow", dag_id="flights_monitor")
    assert (extra["shadow_version"], extra["window"]) == (shadow["version"], shadow["window"])


def test_the_shadow_goes_through_the_gate_and_is_promoted(story, module_mlflow, spec):
    from include.mlops import registry

    tis = _tasks(story["gate"])
    assert (tis["plan"], tis["build_features"], tis["train"]) == ("success", "skipped", "skipped")
    assert (tis["evaluate"], tis["promote"], tis["reject"]) == ("success", "success", "skipped")
    report = story["gate"].get_task_instances()[0].xcom_pull(task_ids="evaluate", dag_id="flights_train")
    assert (report["window"]["start"], report["window"]["end"]) == ("2013-01-22", DAY)
    gain = next(c for c in report["checks"] if c["name"] == "min_roc_auc_gain")
    assert gain["verdict"] == "pass"
    current = registry.current(spec, module_mlflow)
    assert current["champion"]["version"] == report["challenger_version"]
    assert registry.shadow_version(spec, module_mlflow) is None  # a promoted shadow is no shadow
