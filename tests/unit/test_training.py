"""Training: time split, pipelines on raw feature rows, seeded search, MLflow runs, registry alias."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from include.mlops import features as F
from include.mlops import training as T


@pytest.fixture(scope="module")
def table(spec, nyc) -> pd.DataFrame:
    """Real features of 2013-01-01 … 2013-01-16 (about 13k flights)."""
    f, w = nyc["flights"], nyc["weather"]
    keep_f, keep_w = f["flight_date"] <= "2013-01-16", w["flight_date"] <= "2013-01-16"
    return F.build_features(spec, {"flights": f[keep_f], "weather": w[keep_w], "planes": nyc["planes"]})


# -- time split ----------------------------------------------------------------------------------------
def test_time_split_is_by_date_and_never_shuffled(small_spec, table):
    shuffled = table.sample(frac=1.0, random_state=1)
    train, valid, test = T.time_split(shuffled, small_spec)
    assert train["flight_date"].max() < valid["flight_date"].min()
    assert valid["flight_date"].max() < test["flight_date"].min()
    assert valid["flight_date"].nunique() == 4
    assert test["flight_date"].nunique() == 4
    assert test["flight_date"].max() == "2013-01-16"
    assert len(train) + len(valid) + len(test) == len(table)


def test_time_split_refuses_a_window_too_short(small_spec, table):
    short = table[table["flight_date"] <= "2013-01-08"]  # 8 dates: no training day left
    with pytest.raises(T.TrainingError, match="at least 9"):
        T.time_split(short, small_spec)


# -- pipelines and metrics -----------------------------------------------------------------------------
@pytest.mark.parametrize("candidate", [0, 1], ids=["logreg", "hgb"])
def test_pipeline_takes_raw_rows_with_unseen_categories_and_missing_values(small_spec, table, candidate):
    cand = small_spec.training.candidates[candidate]
    labelled = table[table["delayed"].notna()]
    pipe = T.make_pipeline(cand, small_spec, seed=0)
    with T.limited_threads():
        pipe.fit(labelled[small_spec.feature_names], labelled["delayed"].astype(int))
    odd = labelled[small_spec.feature_names].head(3).copy()
    odd["dest"] = ["ZZZ", None, "XYZ"]
    odd["temp"] = np.nan
    odd["route_delay_rate"] = np.nan
    p = pipe.predict_proba(odd)[:, 1]
    assert np.isfinite(p).all()
    assert ((p > 0) & (p < 1)).all()


def test_unknown_estimator_parameter_is_a_training_error(small_spec, table):
    bad = small_spec.training.candidates[0].model_copy(update={"params": {"not_a_param": 1}})
    with pytest.raises(T.TrainingError, match="logreg"):
        T.make_pipeline(bad, small_spec, seed=0)


def test_threshold_maximises_f1():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.round(np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1), 2)
    t = T.choose_threshold(y, p)
    best = max(f1_score(y, (p >= c).astype(int)) for c in np.unique(p))
    assert f1_score(y, (p >= t).astype(int)) == pytest.approx(best)


def test_fit_rows_caps_the_rows_a_candidate_is_fitted_on(small_spec, table):
    """Up to training.max_fit_rows every row; above it a seeded sample of exactly that many, in row order."""
    assert T.fit_rows(small_spec, table) is table  # 13k rows: far below the flights spec's 2 M
    big = pd.concat([table] * 3, ignore_index=True)
    capped = small_spec.model_copy(update={"training": small_spec.training.model_copy(update={"max_fit_rows": 10_000})})
    sample = T.fit_rows(capped, big)
    assert len(sample) == 10_000
    assert sample.index.is_monotonic_increasing
    assert sample.index.is_unique
    pd.testing.assert_frame_equal(sample, T.fit_rows(capped, big))  # the same rows on every run
    pd.testing.assert_frame_equal(sample, big.loc[sample.index])


def test_search_is_reproducible_with_the_same_seed(small_spec, table):
    a = T.search_candidates(small_spec, table, seed=7, candidates=["hgb"])
    b = T.search_candidates(small_spec, table, seed=7, candidates=["hgb"])
    assert a.candidates["hgb"].summary() | {"seconds": 0} == b.candidates["hgb"].summary() | {"seconds": 0}
    assert len(a.candidates["hgb"].trials) == 2
    assert a.candidates["hgb"].test["roc_auc"] > 0.55


def test_unknown_candidate_is_refused(small_spec, table):
    with pytest.raises(T.TrainingError, match="unknown candidates"):
        T.search_candidates(small_spec, table, candidates=["xgboost"])


# -- MLflow --------------------------------------------------------------------------------------------
def test_train_candidates_tracks_registers_and_is_reproducible(small_spec, table, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # anything written to ./mlruns would show up here
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tags = {"airflow.dag_id": "flights_train", "airflow.run_id": "manual__1"}
    first = T.train_candidates(small_spec, table, seed=3, tracking_uri=uri, tags=tags, feature_version="fv123")
    json.dumps(first.as_dict())  # small and JSON-serialisable, for XCom

    client = MlflowClient(uri, uri)  # the registry too: a registry URI set by another test would win
    exp = client.get_experiment(first.experiment_id)
    assert exp.name == "flights"
    assert exp.artifact_location.startswith((tmp_path / "mlflow-artifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()

    parent = client.get_run(first.parent_run_id)
    assert parent.data.tags["feature_version"] == "fv123"
    assert parent.data.tags["airflow.dag_id"] == "flights_train"
    assert parent.data.tags["spec_hash"] == first.spec_hash
    assert parent.data.tags["git_sha"]
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "f1"):
        assert parent.data.metrics[f"valid_{key}"] == pytest.approx(first.metrics[f"valid_{key}"])
        assert parent.data.metrics[f"test_{key}"] == pytest.approx(first.metrics[f"test_{key}"])
    assert [d.dataset.digest for d in parent.inputs.dataset_inputs] == ["fv123"]

    children = client.search_runs([first.experiment_id], f"tags.mlflow.parentRunId = '{first.parent_run_id}'")
    assert {r.data.tags["candidate"] for r in children} == {"logreg", "hgb"}
    assert {r.info.run_id for r in children} == set(first.candidate_runs.values())
    assert all("test_roc_auc" in r.data.metrics for r in children)

    artifacts = {a.path for a in client.list_artifacts(first.parent_run_id, "plots")}
    expected = {"roc", "pr", "calibration", "confusion_matrix", "permutation_importance"}
    assert artifacts == {f"plots/{p}.png" for p in expected}
    ref = pd.read_parquet(mlflow.artifacts.download_artifacts(first.reference_uri, tracking_uri=uri))
    assert len(ref) == 500
    assert {*small_spec.feature_names, "delayed", T.PREDICTION_COLUMN} <= set(ref.columns)
    assert ref["flight_date"].max() < first.split["valid"]["start"]  # drawn from the training split only

    version = client.get_model_version_by_alias("flights", "challenger")
    assert str(version.version) == first.model_version == "1"
    assert version.run_id == first.parent_run_id
    assert version.tags["feature_version"] == "fv123"
    assert float(version.tags["test_roc_auc"]) == pytest.approx(first.metrics["test_roc_auc"], abs=1e-6)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.sklearn.load_model("models:/flights@challenger")
    p = model.predict_proba(table[small_spec.feature_names].head(50))[:, 1]
    assert ((p > 0) & (p < 1)).all()

    # Same table, same seed: same metrics; the new version takes the alias.
    second = T.train_candidates(small_spec, table, seed=3, tracking_uri=uri, feature_version="fv123")
    assert second.metrics == first.metrics
    assert second.best_candidate == first.best_candidate
    assert second.model_version == "2"
    assert str(client.get_model_version_by_alias("flights", "challenger").version) == "2"
