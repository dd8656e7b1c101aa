"""Scoring: a real version trained by training.train_candidates on real January days (temp lake, temp SQLite
MLflow), promoted to champion; score_partition must write exactly what the model's predict_proba gives."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from include.mlops import features as F
from include.mlops import scoring as S
from include.mlops import tracking
from include.mlops import training as T
from include.mlops.storage import Lake

FIRST, LAST = "2013-01-01", "2013-01-12"


@pytest.fixture(scope="module")
def small_spec(spec):
    """The flights spec with a split that fits 12 days and a one-trial search: training takes seconds."""
    hgb = spec.training.candidates[1].model_copy(update={"params": {"max_iter": 60, "learning_rate": 0.1}})
    training = spec.training.model_copy(
        update={
            "validation_days": 3,
            "test_days": 3,
            "search_iterations": 1,
            "reference_sample_rows": 500,
            "candidates": [hgb],
        }
    )
    return spec.model_copy(update={"training": training})


@pytest.fixture(scope="module")
def lake(tmp_path_factory, nyc, spec) -> Lake:
    """Validated real days 2013-01-01 … 2013-01-12 and the reference tables."""
    lake = Lake(str(tmp_path_factory.mktemp("scoring") / "lake"))
    f, w = nyc["flights"], nyc["weather"]
    for d in pd.date_range(FIRST, LAST).strftime("%Y-%m-%d"):
        tables = {
            "flights": f[f["flight_date"] == d].reset_index(drop=True)[list(spec.source.tables["flights"].columns)],
            "weather": w[w["flight_date"] == d].reset_index(drop=True)[list(spec.source.tables["weather"].columns)],
        }
        lake.write_partition("validated", "flights", f"date={d}", tables, source="test")
    ref = {k: nyc[k] for k in ("airlines", "airports", "planes")}
    lake.write_partition("reference", "flights", "snapshot=current", ref, source="test")
    return lake


@pytest.fixture(scope="module")
def champion(tmp_path_factory, small_spec, lake) -> dict:
    """Version 1 of ``flights``, trained on the lake's days and promoted (alias champion)."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("scoring-mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    table = F.features_for_dates(lake, small_spec, FIRST, LAST)
    result = T.train_candidates(small_spec, table, tracking_uri=uri, artifact_root=str(folder / "artifacts"))
    MlflowClient(uri, uri).set_registered_model_alias("flights", "champion", result.model_version)
    S.clear_cache()
    return {"uri": uri, "version": result.model_version, "threshold": result.threshold}


def _direct(uri: str, version: str):
    """The registered model loaded by MLflow itself, outside the scoring module."""
    import mlflow.sklearn

    mlflow.set_registry_uri(uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.sklearn.load_model(f"models:/flights/{version}")


def test_predictions_equal_the_models_predict_proba_on_the_same_rows(small_spec, lake, champion):
    out = S.score_partition(small_spec, lake, "2013-01-10", run_id="manual__test", tracking_uri=champion["uri"])
    stored = lake.read_table("predictions", "flights", "date=2013-01-10", "predictions")
    rows = F.features_for_dates(lake, small_spec, "2013-01-10", "2013-01-10")
    expected = _direct(champion["uri"], champion["version"]).predict_proba(rows[small_spec.feature_names])[:, 1]

    assert list(stored.columns) == [*small_spec.entity_keys, "probability", "prediction", "model_version", "role"]
    assert set(stored["role"]) == {"champion"}
    pd.testing.assert_frame_equal(stored[small_spec.entity_keys], rows[small_spec.entity_keys])
    np.testing.assert_array_equal(stored["probability"].to_numpy(), expected)
    np.testing.assert_array_equal(stored["prediction"].to_numpy(), (expected >= champion["threshold"]).astype(int))
    assert set(stored["model_version"]) == {champion["version"]}
    assert out["rows"] == len(stored) == lake.manifest("validated", "flights", "date=2013-01-10").files["flights"].rows
    assert out["model_version"] == champion["version"]
    assert out["threshold"] == pytest.approx(champion["threshold"], abs=1e-6)
    manifest = lake.manifest("predictions", "flights", "date=2013-01-10")
    assert manifest.run_id == "manual__test"
    assert manifest.extra["model_uri"] == f"models:/flights/{champion['version']}"


def test_cancelled_flights_are_scored_and_labels_are_not_stored(small_spec, lake, champion):
    S.score_partition(small_spec, lake, "2013-01-11", tracking_uri=champion["uri"])
    stored = lake.read_table("predictions", "flights", "date=2013-01-11", "predictions")
    validated = lake.read_table("validated", "flights", "date=2013-01-11", "flights")
    assert validated["dep_time"].isna().any(), "the day should hold cancellations"
    assert len(stored) == len(validated)
    assert "delayed" not in stored.columns
    assert "arr_delay" not in stored.columns


def test_rescoring_a_day_is_idempotent(small_spec, lake, champion):
    first = S.score_partition(small_spec, lake, date(2013, 1, 12), tracking_uri=champion["uri"])
    again = S.score_partition(small_spec, lake, "2013-01-12", tracking_uri=champion["uri"])
    assert first["sha256"] == again["sha256"]


def test_the_model_is_loaded_once_per_process_and_version(small_spec, champion):
    a = S.load_model(small_spec, tracking_uri=champion["uri"])
    b = S.load_model(small_spec, f"models:/flights/{champion['version']}", tracking_uri=champion["uri"])
    assert a.model is b.model
    assert a.version == b.version == champion["version"]
    assert a.features == small_spec.feature_names


def test_without_a_champion_scoring_names_the_problem(small_spec, lake, champion):
    from mlflow import MlflowClient

    client = MlflowClient(champion["uri"], champion["uri"])
    client.delete_registered_model_alias("flights", "champion")
    try:
        with pytest.raises(S.NoChampionError, match="no 'champion' alias"):
            S.score_partition(small_spec, lake, "2013-01-10", tracking_uri=champion["uri"])
    finally:
        client.set_registered_model_alias("flights", "champion", champion["version"])


@pytest.mark.parametrize(
    ("day", "model_uri", "match"),
    [
        ("2013-02-01", None, "validated/flights/date=2013-02-01 does not exist"),
        ("2013-01-10", "models:/flights/99", "no version '99'"),
        ("2013-01-10", "models:/flights@nope", "no alias 'nope'"),
    ],
)
def test_scoring_errors_are_named(small_spec, lake, champion, day, model_uri, match):
    with pytest.raises(S.ScoringError, match=match):
        S.score_partition(small_spec, lake, day, model_uri=model_uri, tracking_uri=champion["uri"])


def test_score_frame_needs_the_entity_keys_and_features(small_spec, lake, champion):
    model = S.load_model(small_spec, tracking_uri=champion["uri"])
    rows = F.features_for_dates(lake, small_spec, "2013-01-10", "2013-01-10")
    with pytest.raises(S.ScoringError, match="entity keys"):
        S.score_frame(small_spec, model, rows.drop(columns=["carrier"]))
    with pytest.raises(S.ScoringError, match="feature columns"):
        S.predict(model, rows.drop(columns=["temp"]))


@pytest.mark.parametrize(
    ("extras", "day", "default", "expected"),
    [
        (
            [{"partition": "date=2013-01-02"}, {"partition": "date=2013-01-01"}],
            None,
            None,
            ["2013-01-01", "2013-01-02"],
        ),
        ([{"partition": "date=2013-01-02"}, {"partition": "date=2013-01-02"}], None, None, ["2013-01-02"]),
        ([{"partition": "date=2013-01-02"}], "2013-03-04", None, ["2013-03-04"]),
        ([None, {"rows": 3}], None, date(2013, 5, 6), ["2013-05-06"]),
        ([], None, None, []),
    ],
    ids=["events-sorted", "deduplicated", "param-wins", "manual-default", "nothing"],
)
def test_partitions_to_score(extras, day, default, expected):
    assert S.partitions_to_score(extras, day, default) == expected


def test_read_predictions_covers_the_window(small_spec, lake, champion):
    S.score_partition(small_spec, lake, "2013-01-10", tracking_uri=champion["uri"])
    got = S.read_predictions(small_spec, lake, "2013-01-09", "2013-01-10")
    assert set(got["flight_date"]) == {"2013-01-10"}
    assert S.read_predictions(small_spec, lake, "2013-03-01", "2013-03-07").empty


def test_a_failing_registry_is_not_mistaken_for_a_missing_champion(small_spec):
    """Only MLflow's 'not found' answers mean "no champion"; an outage must fail (and be retried), not skip."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    class Down:
        def get_model_version_by_alias(self, name, alias):
            raise MlflowException("connection refused", error_code=TEMPORARILY_UNAVAILABLE)

    class Empty:
        def get_model_version_by_alias(self, name, alias):
            raise MlflowException(f"Registered Model with name={name} not found", error_code=RESOURCE_DOES_NOT_EXIST)

    with pytest.raises(MlflowException, match="connection refused") as err:
        S._resolve(Down(), small_spec, "models:/flights@champion")
    assert not isinstance(err.value, S.ScoringError)
    with pytest.raises(S.NoChampionError):
        S._resolve(Empty(), small_spec, "models:/flights@champion")


def test_long_frames_are_predicted_in_slices_with_the_same_result(small_spec, lake, champion, monkeypatch):
    rows = F.features_for_dates(lake, small_spec, "2013-01-10", "2013-01-10")
    model = S.load_model(small_spec, tracking_uri=champion["uri"])
    whole = S.predict(model, rows)
    monkeypatch.setattr(S, "PREDICT_CHUNK_ROWS", 97)  # slices of 97 rows and a short last one
    assert len(rows) > 3 * 97
    np.testing.assert_array_equal(S.predict(model, rows), whole)
    np.testing.assert_array_equal(S.score_frame(small_spec, model, rows)["probability"].to_numpy(), whole)


def test_load_model_reads_the_registry_it_is_given(small_spec, champion, tmp_path, monkeypatch):
    """The process-wide tracking URI points at another (empty) store: the version is still found and
    downloaded from the registry named by ``tracking_uri``."""
    import mlflow

    other = f"sqlite:///{tmp_path}/other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", other)
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(other)
    mlflow.set_registry_uri(other)
    S.clear_cache()
    try:
        model = S.load_model(small_spec, tracking_uri=champion["uri"])
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
        S.clear_cache()
    assert model.version == champion["version"]
    assert model.uri == f"models:/flights/{champion['version']}"


def test_served_history_is_kept_and_a_rescore_is_a_separate_labelled_output(small_spec, lake, champion):
    """A day served by v1 is never replaced by another version (a scheduled run woken by an old validated event
    under a newer champion keeps it); ``rescore=True`` writes rescored/<ds>/version=<v>/… and leaves it alone."""
    from mlflow import MlflowClient

    day = "2013-01-09"
    client = MlflowClient(champion["uri"], champion["uri"])
    first = client.get_model_version("flights", champion["version"])
    served = S.score_partition(small_spec, lake, day, tracking_uri=champion["uri"])
    again = S.score_partition(small_spec, lake, day, tracking_uri=champion["uri"])
    assert served["written"]
    assert again["written"]
    assert again["sha256"] == served["sha256"]
    before = lake.manifest("predictions", "flights", f"date={day}").as_dict()

    with tracking.using(champion["uri"]):  # MLflow resolves a models:/m-... source with a default client
        newer = client.create_model_version("flights", first.source, run_id=first.run_id)  # same files, new version
    client.set_registered_model_alias("flights", "champion", newer.version)
    try:
        kept = S.score_partition(small_spec, lake, day, run_id="scheduled__later", tracking_uri=champion["uri"])
        rescored = S.score_partition(small_spec, lake, day, tracking_uri=champion["uri"], rescore=True)
    finally:
        client.set_registered_model_alias("flights", "champion", champion["version"])
    assert kept["written"] is False
    assert kept["model_version"] == champion["version"]
    assert f"served by v{champion['version']}" in kept["reason"]
    assert lake.manifest("predictions", "flights", f"date={day}").as_dict() == before
    assert rescored["written"]
    assert rescored["zone"] == "rescored"
    assert rescored["uri"].endswith(f"rescored/flights/version={newer.version}/date={day}")
    m = lake.manifest("rescored", f"flights/version={newer.version}", f"date={day}")
    assert m.extra["model_version"] == str(newer.version)
    other = lake.read_table("rescored", f"flights/version={newer.version}", f"date={day}", "predictions")
    kept_rows = lake.read_table("predictions", "flights", f"date={day}", "predictions")
    np.testing.assert_array_equal(other["probability"], kept_rows["probability"])  # same model files, same scores
    assert set(other["model_version"]) == {str(newer.version)}
    assert set(kept_rows["model_version"]) == {str(first.version)}
    assert lake.manifest("predictions", "flights", f"date={day}").as_dict() == before


def test_reconcile_scores_validated_days_without_predictions_since_the_first_champion(small_spec, lake, champion):
    """A lost validated Asset event leaves Jan 7-8 unscored: reconcile finds and scores them (and any other gap
    after the champion's window, Jan 6), never the days before it."""
    from mlflow import MlflowClient

    client = MlflowClient(champion["uri"], champion["uri"])
    client.set_model_version_tag("flights", champion["version"], "window_end", "2013-01-06")
    S.score_partition(small_spec, lake, "2013-01-10", tracking_uri=champion["uri"])
    for day in ("2013-01-07", "2013-01-08"):
        lake.delete_partition("predictions", "flights", f"date={day}")
    gaps = [
        f"2013-01-{d:02d}"
        for d in range(7, 13)
        if lake.manifest("predictions", "flights", f"date=2013-01-{d:02d}") is None
    ]
    assert S.first_scoring_day(small_spec, lake, champion["uri"]) == "2013-01-07"
    # old validated events (e.g. make demo's, handed to the score DAG when make up starts) name training days too
    events = ["2013-01-05", "2013-01-06", "2013-01-07", "2013-01-10"]
    assert S.before_first_scoring_day(small_spec, lake, events, champion["uri"]) == (
        ["2013-01-07", "2013-01-10"],
        ["2013-01-05", "2013-01-06"],
    )
    assert S.unscored_days(small_spec, lake, champion["uri"]) == gaps
    assert gaps[:2] == ["2013-01-07", "2013-01-08"]

    first = S.reconcile(small_spec, lake, max_days=1, run_id="scheduled__r1", tracking_uri=champion["uri"])
    assert [r["date"] for r in first] == ["2013-01-07"]
    rest = S.reconcile(small_spec, lake, run_id="scheduled__r2", tracking_uri=champion["uri"])
    assert [r["date"] for r in rest] == gaps[1:]
    assert all(r["written"] for r in first + rest)
    assert lake.manifest("predictions", "flights", "date=2013-01-08").run_id == "scheduled__r2"
    assert S.unscored_days(small_spec, lake, champion["uri"]) == []
    assert S.reconcile(small_spec, lake, tracking_uri=champion["uri"]) == []
    assert [p for p in lake.partitions("predictions", "flights") if p < "date=2013-01-07"] == []


# -- the shadow ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shadow(small_spec, lake, champion, tmp_path_factory) -> dict:
    """Version 2: trained on other days with another seed (so its scores differ from the champion's); not champion."""
    table = F.features_for_dates(lake, small_spec, "2013-01-02", LAST)
    result = T.train_candidates(
        small_spec,
        table,
        seed=11,
        tracking_uri=champion["uri"],
        artifact_root=str(tmp_path_factory.mktemp("shadow-artifacts")),
    )
    return {"version": result.model_version, "threshold": result.threshold}


@pytest.fixture
def shadowing(small_spec, champion, shadow):
    """The shadow alias on version 2 for one test (set through the registry, as the train DAG will)."""
    from include.mlops import registry as R

    entry = R.set_shadow(small_spec, shadow["version"], reason="test", tracking_uri=champion["uri"])
    assert entry is not None
    assert R.shadow_version(small_spec, champion["uri"]) == shadow["version"]
    yield shadow
    R.clear_shadow(small_spec, reason="test done", tracking_uri=champion["uri"])


def test_a_shadow_scores_the_same_rows_beside_the_champion(small_spec, lake, champion, shadowing, monkeypatch):
    day, v = "2013-01-08", shadowing["version"]
    builds = []
    real = F.features_for_dates
    monkeypatch.setattr(F, "features_for_dates", lambda *a, **k: builds.append(a[2:]) or real(*a, **k))
    out = S.score_partition(small_spec, lake, day, run_id="manual__shadow", tracking_uri=champion["uri"])
    assert len(builds) == 1, "the feature rows are built once for both models"

    served = lake.read_table("predictions", "flights", f"date={day}", "predictions")
    theirs = lake.read_table("shadow", f"flights/version={v}", f"date={day}", "predictions")
    rows = real(lake, small_spec, day, day)
    expected = _direct(champion["uri"], v).predict_proba(rows[small_spec.feature_names])[:, 1]
    assert list(theirs.columns) == list(served.columns)
    pd.testing.assert_frame_equal(theirs[small_spec.entity_keys], served[small_spec.entity_keys])
    np.testing.assert_array_equal(theirs["probability"].to_numpy(), expected)
    np.testing.assert_array_equal(theirs["prediction"].to_numpy(), (expected >= shadowing["threshold"]).astype(int))
    assert not np.array_equal(theirs["probability"], served["probability"]), "two different models"
    assert (set(theirs["role"]), set(theirs["model_version"])) == ({"shadow"}, {v})
    assert (set(served["role"]), set(served["model_version"])) == ({"champion"}, {champion["version"]})

    m = lake.manifest("shadow", f"flights/version={v}", f"date={day}")
    assert (m.run_id, m.extra["model_uri"]) == ("manual__shadow", f"models:/flights/{v}")
    assert (m.extra["champion_version"], m.extra["served_version"]) == (champion["version"], champion["version"])
    assert out["written"]
    assert out["model_version"] == champion["version"]
    assert out["shadow"]["written"] is True
    assert (out["shadow"]["model_version"], out["shadow"]["rows"]) == (v, len(served))
    assert out["shadow"]["sha256"] == m.sha256
    assert out["shadow"]["uri"].endswith(f"shadow/flights/version={v}/date={day}")
    assert f"shadow v{v}: {len(served)} rows" in S.describe(out)
    assert S.announced([out]) == {"partitions": [f"date={day}"], "model_version": champion["version"]}

    got = S.read_shadow_predictions(small_spec, lake, v, "2013-01-01", day)
    pd.testing.assert_frame_equal(got, theirs)
    assert day in S.shadow_days(small_spec, lake, v)
    assert S.shadow_days(small_spec, lake, 99) == []
    none = S.read_shadow_predictions(small_spec, lake, v, "2013-03-01", "2013-03-02")
    assert none.empty
    assert list(none.columns) == list(served.columns)
    assert set(S.read_predictions(small_spec, lake, day, day)["role"]) == {"champion"}


def test_a_kept_day_gets_the_shadows_predictions_and_a_rescore_none(small_spec, lake, champion, shadowing):
    """A day served by v1 while another version is champion is kept as served; the shadow's partition is still
    written (once) beside it. A re-score never shadow-scores."""
    from mlflow import MlflowClient

    day, v = "2013-01-07", shadowing["version"]
    S.score_partition(small_spec, lake, day, tracking_uri=champion["uri"])
    lake.delete_partition("shadow", f"flights/version={v}", f"date={day}")
    before = lake.manifest("predictions", "flights", f"date={day}").as_dict()
    client = MlflowClient(champion["uri"], champion["uri"])
    first = client.get_model_version("flights", champion["version"])
    with tracking.using(champion["uri"]):
        newer = client.create_model_version("flights", first.source, run_id=first.run_id)
    client.set_registered_model_alias("flights", "champion", newer.version)
    try:
        kept = S.score_partition(small_spec, lake, day, run_id="scheduled__kept", tracking_uri=champion["uri"])
        again = S.score_partition(small_spec, lake, day, tracking_uri=champion["uri"])
        rescored = S.score_partition(small_spec, lake, "2013-01-06", tracking_uri=champion["uri"], rescore=True)
    finally:
        client.set_registered_model_alias("flights", "champion", champion["version"])
    assert kept["written"] is False
    assert lake.manifest("predictions", "flights", f"date={day}").as_dict() == before
    assert kept["shadow"]["written"] is True
    m = lake.manifest("shadow", f"flights/version={v}", f"date={day}")
    assert (m.run_id, m.extra["served_version"], m.extra["champion_version"]) == (
        "scheduled__kept",
        champion["version"],
        str(newer.version),
    )
    assert m.rows == before["rows"]
    assert again["shadow"]["written"] is False
    assert again["shadow"]["reason"] == f"shadow v{v}: already scored"
    assert again["shadow"]["sha256"] == m.sha256
    assert rescored["written"]
    assert rescored["shadow"] is None
    assert lake.manifest("shadow", f"flights/version={v}", "date=2013-01-06") is None


def test_a_broken_shadow_never_stops_the_champion(small_spec, lake, champion, shadow, tmp_path, caplog):
    """The shadow alias on a version whose model files are gone: the champion's day is scored and written, the
    summary and the log say why the shadow's is not."""
    import shutil

    import mlflow.artifacts
    from mlflow import MlflowClient

    from include.mlops import registry as R

    client = MlflowClient(champion["uri"], champion["uri"])
    with tracking.using(champion["uri"]):
        files = mlflow.artifacts.download_artifacts(f"models:/flights/{shadow['version']}", dst_path=str(tmp_path))
        broken = client.create_model_version("flights", files).version
    shutil.rmtree(files)
    R.set_shadow(small_spec, broken, reason="files deleted", tracking_uri=champion["uri"])
    try:
        out = S.score_partition(small_spec, lake, "2013-01-05", tracking_uri=champion["uri"])
    finally:
        R.clear_shadow(small_spec, reason="test done", tracking_uri=champion["uri"])
    assert out["written"]
    assert out["rows"] > 0
    assert lake.manifest("predictions", "flights", "date=2013-01-05") is not None
    assert (out["shadow"]["written"], out["shadow"]["model_version"]) == (False, str(broken))
    assert out["shadow"]["reason"].startswith(f"shadow v{broken} not scored: ")
    assert lake.manifest("shadow", f"flights/version={broken}", "date=2013-01-05") is None
    assert f"shadow v{broken} not scored" in S.describe(out)
    assert out["shadow"]["reason"] in caplog.text


def test_without_a_shadow_the_summary_says_none(small_spec, lake, champion):
    out = S.score_partition(small_spec, lake, "2013-01-04", tracking_uri=champion["uri"])
    assert out["shadow"] is None
    assert "shadow" not in S.describe(out)
