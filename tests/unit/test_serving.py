"""Online serving: the ASGI app on a real version trained on real January days (temp lake, temp SQLite MLflow, the
fixtures of test_scoring), through Starlette's TestClient. Served probabilities must equal the pipeline's
``predict_proba`` bit for bit, on the fast path too (unknown, missing and infrequent categories included)."""

from __future__ import annotations

import json
import re
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from include.mlops import features as F
from include.mlops import scoring as S
from include.mlops import serving as V
from include.mlops import training as T
from tests.unit.test_scoring import FIRST, LAST, champion, lake, small_spec  # noqa: F401 (fixtures)

with warnings.catch_warnings():  # Starlette 1.x would rather its TestClient used httpx2; the lock has httpx
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def table(small_spec, lake) -> pd.DataFrame:  # noqa: F811
    """The real feature rows of the lake's days."""
    return F.features_for_dates(lake, small_spec, FIRST, LAST)


@pytest.fixture(scope="module")
def rows(small_spec, table) -> pd.DataFrame:  # noqa: F811
    """600 real rows, then the same rows with an unknown destination, missing categories and missing numbers."""
    x = table[small_spec.feature_names].sample(600, random_state=0).reset_index(drop=True)
    odd = x.head(60).copy()
    odd.loc[0:19, "dest"] = "ZZZ"  # a destination no model has seen
    odd.loc[20:39, ["carrier", "origin"]] = None
    odd.loc[40:59, ["temp", "wind_speed", "plane_age", "route_delay_rate"]] = np.nan
    return pd.concat([x, odd], ignore_index=True)


def _pipeline(uri: str, version: str):
    import mlflow.sklearn

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.sklearn.load_model(f"models:/flights/{version}")


def _app(spec, uri: str, **settings) -> TestClient:
    return TestClient(V.create_app(V.Settings("flights", tracking_uri=uri, **settings), spec=spec))


@pytest.fixture(scope="module")
def client(small_spec, champion):  # noqa: F811
    with _app(small_spec, champion["uri"], reload_seconds=0) as c:
        yield c


@pytest.fixture(scope="module")
def strict(small_spec, champion):  # noqa: F811
    """A server that takes at most 5 rows per request."""
    with _app(small_spec, champion["uri"], reload_seconds=0, max_rows=5) as c:
        yield c


def test_served_probabilities_equal_the_pipelines_predict_proba(client, champion, rows):  # noqa: F811
    expected = _pipeline(champion["uri"], champion["version"]).predict_proba(rows)[:, 1]
    r = client.post("/invocations", content=V.request_body(rows))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert np.array_equal(answer["predictions"], expected)
    assert answer["labels"] == (expected >= champion["threshold"]).astype(int).tolist()
    assert answer["model_version"] == champion["version"]
    # one row per request (the fast path's tree walk), in both JSON layouts
    for i in (0, 1, 2, 600, 620, 640):
        for orient in ("split", "records"):
            one = client.post("/invocations", content=V.request_body(rows.iloc[[i]], orient)).json()
            assert one["predictions"] == [expected[i]], (i, orient)


def _fitted(spec, table: pd.DataFrame, estimator: str):
    """A pipeline of the spec's candidate ``estimator`` (a short one for the trees) fitted on ``table``."""
    candidate = next(c for c in spec.training.candidates if c.estimator == estimator)
    if estimator == "hist_gradient_boosting":
        candidate = candidate.model_copy(update={"params": {"max_iter": 30}})
    pipeline = T.make_pipeline(candidate, spec, seed=0)
    train = table[table[spec.label.name].notna()]
    return pipeline.fit(train[spec.feature_names], train[spec.label.name].astype(int))


def _assert_fast_path_identical(pipeline, spec, frame: pd.DataFrame) -> None:
    fast = V.build_fast_path(pipeline, spec.feature_names)
    assert fast is not None
    assert fast.trees is not None
    kinds = V.feature_kinds(spec)
    columns = V.parse_request(V.request_body(frame), spec.feature_names, kinds, 10_000)
    expected = pipeline.predict_proba(frame)[:, 1]
    n = len(frame)
    assert np.array_equal(fast.predict_proba(columns), expected)  # the classifier on our array
    few = [fast.predict_proba([c[i : i + V.TREE_ROWS] for c in columns]) for i in range(0, n, V.TREE_ROWS)]
    assert np.array_equal(np.concatenate(few), expected)  # the trees in numpy
    probe = V.probe_columns(fast, spec.feature_names, kinds)
    assert np.array_equal(
        fast.predict_proba(probe), pipeline.predict_proba(V.to_frame(spec.feature_names, kinds, probe))[:, 1]
    )


def test_fast_path_is_bit_identical_with_unknown_missing_and_infrequent_categories(
    small_spec,  # noqa: F811
    table,
    rows,
    monkeypatch,
):
    monkeypatch.setattr(T, "_MAX_CATEGORIES", 6)  # most destinations and carriers become "infrequent"
    train = table.copy()
    train.loc[train.index[::20], "carrier"] = None  # a missing category seen in training
    pipeline = _fitted(small_spec, train, "hist_gradient_boosting")
    encoder = pipeline[0].named_transformers_["cat"]
    infrequent = dict(zip(small_spec.categorical_features, encoder.infrequent_categories_, strict=True))
    assert infrequent["dest"] is not None
    assert len(infrequent["dest"]) > 20
    assert any(c is None for c in encoder.categories_[0])  # the missing carrier is a category (an infrequent one)
    _assert_fast_path_identical(pipeline, small_spec, rows)


def test_fast_path_of_the_registered_champion_is_on_and_identical(small_spec, champion, rows):  # noqa: F811
    _assert_fast_path_identical(_pipeline(champion["uri"], champion["version"]), small_spec, rows)


def test_other_pipelines_are_served_through_pandas(spec, small_spec, table, rows):  # noqa: F811
    pipeline = _fitted(spec, table, "logistic_regression")
    assert V.build_fast_path(pipeline, small_spec.feature_names) is None
    model = S.ScoringModel("flights", "1", "models:/flights/1", pipeline, small_spec.feature_names, 0.5)
    served = V.ServedModel(model, V.feature_kinds(small_spec), None, "now")
    columns = V.parse_request(V.request_body(rows), small_spec.feature_names, served.kinds, 10_000)
    assert np.array_equal(served.predict_proba(columns), pipeline.predict_proba(rows)[:, 1])


def test_a_fast_path_that_disagrees_is_switched_off(small_spec, champion, monkeypatch):  # noqa: F811
    wrong = V._Trees.predict_proba
    monkeypatch.setattr(V._Trees, "predict_proba", lambda self, x: np.nextafter(wrong(self, x), 1.0))
    served = V.load_version(small_spec, f"models:/flights/{champion['version']}", champion["uri"])
    assert served.fast is None  # and the pandas path serves


def _body(split: dict) -> bytes:
    return json.dumps({"dataframe_split": split}).encode()


def _set(column: str, value: object):
    def change(split: dict) -> bytes:
        split["data"][0][split["columns"].index(column)] = value
        return _body(split)

    return change


def _drop(column: str):
    def change(split: dict) -> bytes:
        i = split["columns"].index(column)
        return _body({"columns": split["columns"][:i] + split["columns"][i + 1 :], "data": [split["data"][0][:i]]})

    return change


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        pytest.param(lambda s: b"", 400, "empty request body", id="empty"),
        pytest.param(lambda s: b"{not json", 400, "not JSON", id="not-json"),
        pytest.param(
            lambda s: b'{"instances": [[1]]}', 400, "with 'dataframe_split' or 'dataframe_records'", id="tensor"
        ),
        pytest.param(lambda s: _body({**s, "data": []}), 422, "the request has no rows", id="no-rows"),
        pytest.param(
            lambda s: _body({**s, "data": s["data"] * 6}), 422, "6 rows, more than the limit of 5", id="6-rows"
        ),
        pytest.param(_drop("dest"), 422, r"missing feature columns \['dest'\]$", id="no-dest"),
        pytest.param(
            lambda s: b'{"dataframe_records": [{"carrier": "UA"}]}',
            422,
            r"missing feature columns \['sched_dep_hour', 'weekday', ",
            id="records-missing",
        ),
        pytest.param(
            _set("distance", "far"), 422, "'distance' expects a number or null, row 0 has str \"far\"", id="str"
        ),
        pytest.param(_set("carrier", 7), 422, "'carrier' expects a string or null, row 0 has int 7", id="int-category"),
        pytest.param(
            _set("weekday", 2.5), 422, "'weekday' expects an integer or null, row 0 has float 2.5", id="float"
        ),
        pytest.param(_set("month", True), 422, "'month' expects an integer or null, row 0 has bool true", id="bool"),
        pytest.param(
            lambda s: _body({**s, "data": [s["data"][0][:3]]}),
            422,
            "row 0 of 'dataframe_split' has 3 values for 17 columns",
            id="short-row",
        ),
    ],
)
def test_bad_requests_get_a_named_error(strict, rows, change, status, message):
    split = json.loads(V.request_body(rows.head(1)))["dataframe_split"]
    r = strict.post("/invocations", content=change(split))
    assert r.status_code == status, r.text
    assert r.json()["error_code"] == ("BAD_REQUEST" if status == 400 else "INVALID_INPUT")
    assert re.search(message, r.json()["message"]), r.json()["message"]


def test_an_oversized_body_is_refused(small_spec, champion, rows):  # noqa: F811
    with _app(small_spec, champion["uri"], reload_seconds=0, max_body_mb=0.001) as c:
        r = c.post("/invocations", content=V.request_body(rows.head(20)))
    assert r.status_code == 413
    assert "more than the limit of 1048 bytes" in r.json()["message"]


def test_ping_health_and_version(client, champion):  # noqa: F811
    assert client.get("/ping").status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert (health["model_name"], health["model_version"]) == ("flights", champion["version"])
    assert health["threshold"] == pytest.approx(champion["threshold"], abs=1e-6)
    assert health["fast_path"] is True
    assert health["loaded_at"]
    assert health["last_error"] is None
    version = client.get("/version").json()
    assert version["model_version"] == champion["version"]
    assert version["scikit-learn"]


def test_without_the_alias_the_server_starts_and_says_why(small_spec, champion):  # noqa: F811
    with _app(small_spec, champion["uri"], alias="nope", reload_seconds=0) as c:
        assert c.get("/ping").status_code == 503
        health = c.get("/health")
        assert health.status_code == 503
        assert "no alias 'nope'" in health.json()["last_error"]
        r = c.post("/invocations", content=b'{"dataframe_records": [{}]}')
        assert r.status_code == 503
        assert "no alias 'nope'" in r.json()["message"]


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column")
def test_moving_the_alias_swaps_the_served_version(small_spec, champion, table, rows):  # noqa: F811
    """Promotion of a second version, then a rollback: the watcher (every 0.2 s) serves each in turn."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    uri = champion["uri"]
    registry = MlflowClient(uri, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    other = _fitted(small_spec, table, "hist_gradient_boosting")
    x = rows[small_spec.feature_names]
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            other,
            name="model",
            signature=mlflow.models.infer_signature(x.head(50), other.predict_proba(x.head(50))),
            registered_model_name="flights",
            serialization_format="cloudpickle",
            pip_requirements=T._pip_requirements("cloudpickle"),  # inferring them takes seconds
        )
    v2 = str(info.registered_model_version)
    registry.set_model_version_tag("flights", v2, "threshold", "0.3")

    def served_version(c: TestClient, want: str) -> str:
        deadline = time.monotonic() + 20
        while (got := c.get("/health").json()["model_version"]) != want and time.monotonic() < deadline:
            time.sleep(0.1)
        return got

    try:
        with _app(small_spec, uri, reload_seconds=0.2) as c:
            assert served_version(c, champion["version"]) == champion["version"]
            registry.set_registered_model_alias("flights", "champion", v2)  # promotion
            assert served_version(c, v2) == v2
            answer = c.post("/invocations", content=V.request_body(x)).json()
            assert answer["model_version"] == v2
            assert np.array_equal(answer["predictions"], other.predict_proba(x)[:, 1])
            assert answer["labels"] == (other.predict_proba(x)[:, 1] >= 0.3).astype(int).tolist()
            registry.set_registered_model_alias("flights", "champion", champion["version"])  # rollback
            assert served_version(c, champion["version"]) == champion["version"]
    finally:
        registry.set_registered_model_alias("flights", "champion", champion["version"])


def test_settings_travel_to_worker_processes_through_the_environment():
    settings = V.Settings("flights", alias="staging", tracking_uri="sqlite:///x.db", reload_seconds=5, max_rows=7)
    assert V.Settings.from_env(settings.to_env()) == settings
    with pytest.raises(RuntimeError, match="MLOPS_SERVING_DATASET is not set"):
        V.Settings.from_env({})
