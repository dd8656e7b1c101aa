"""The online feature store (Feast, embedded SQLite store) on real days of both shipped datasets: a validated day
is materialized from the lake by the feature engine, and the scoring server, sent only the entity keys and the
spec's request fields, must answer for every row of the day exactly the probability batch scoring wrote."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest

from include.mlops import feature_store as FS
from include.mlops import features as F
from include.mlops import scoring as S
from include.mlops import serving as V
from include.mlops import training as T
from include.mlops.config import load_spec
from include.mlops.storage import Lake
from tests.unit.test_scoring import FIRST, LAST, champion, lake, small_spec  # noqa: F401 (fixtures)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

DAY = LAST  # the flights day served online
PIZZA_DAYS = pd.date_range("2015-01-01", "2015-01-18").strftime("%Y-%m-%d").tolist()


@pytest.fixture(scope="module", autouse=True)
def online_dir(tmp_path_factory):
    """A fresh embedded store (SQLite files and Feast registry) for this module."""
    old = {k: os.environ.get(k) for k in (FS.DIR_ENV, FS.STORE_ENV, FS.REGISTRY_ENV)}
    os.environ[FS.DIR_ENV] = str(tmp_path_factory.mktemp("online"))
    os.environ.pop(FS.STORE_ENV, None)
    os.environ.pop(FS.REGISTRY_ENV, None)
    yield os.environ[FS.DIR_ENV]
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def serve(spec, uri: str) -> TestClient:
    return TestClient(V.create_app(V.Settings(spec.name, tracking_uri=uri, reload_seconds=0), spec=spec))


def assert_parity(spec, store: Lake, day: str, uri: str) -> int:
    """Every row of ``day`` served from its keys equals the batch prediction: the whole day in one request, then
    the first rows one per request (the fast path's single-row walk) in both JSON layouts."""
    S.score_partition(spec, store, day, tracking_uri=uri)
    batch = store.read_table("predictions", spec.name, f"date={day}", "predictions")
    sent = FS.request_rows(spec, store, day)
    pd.testing.assert_frame_equal(batch[spec.entity_keys], sent[spec.entity_keys])
    with serve(spec, uri) as client:
        r = client.post("/invocations", content=V.request_body(sent, "records"))
        assert r.status_code == 200, r.text
        assert np.array_equal(r.json()["predictions"], batch["probability"].to_numpy())
        for i in range(12):
            one = client.post("/invocations", content=V.request_body(sent.iloc[[i]], "split" if i % 2 else "records"))
            assert one.json()["predictions"] == [batch["probability"].iloc[i]], i
    return len(sent)


def test_flights_served_from_entity_keys_equal_batch_predictions(small_spec, lake, champion):  # noqa: F811
    out = FS.materialize_day(small_spec, lake, DAY)
    assert out["written"] is True
    assert out["rows"] == lake.manifest("validated", "flights", f"date={DAY}").files["flights"].rows
    assert assert_parity(small_spec, lake, DAY, champion["uri"]) > 600


def test_materializing_a_day_again_is_a_no_op(small_spec, lake):  # noqa: F811
    FS.materialize_day(small_spec, lake, DAY)
    again = FS.materialize_day(small_spec, lake, DAY)
    assert again["written"] is False
    assert again["reason"].startswith("unchanged")
    assert again["feature_version"] == F.feature_version(lake, small_spec, DAY, DAY)[0]


def test_stored_values_never_depend_on_later_days(small_spec, lake, tmp_path):  # noqa: F811
    """Day D materialized from the full lake holds what a lake that ends at D computes: nothing after D leaks."""
    day = "2013-01-11"
    FS.materialize_day(small_spec, lake, day)
    cut = Lake(str(tmp_path / "lake"))
    for p in lake.partitions("validated", "flights"):
        if p <= f"date={day}":
            tables = {t: lake.read_table("validated", "flights", p, t) for t in ("flights", "weather")}
            cut.write_partition("validated", "flights", p, tables, source="test")
    ref = {t: lake.read_table("reference", "flights", "snapshot=current", t) for t in ("airlines", "planes")}
    cut.write_partition("reference", "flights", "snapshot=current", ref, source="test")
    expected = F.features_for_dates(cut, small_spec, day, day)
    store = FS.open_store(small_spec)
    keys = FS._key_values(small_spec, expected)
    refs = [f"{FS.features_view(small_spec)}:{FS.field_name(small_spec, f)}" for f in small_spec.feature_names]
    got = store.get_online_features(features=refs, entity_rows=keys).to_dict()
    for f in small_spec.feature_names:
        want = [None if pd.isna(v) else v for v in expected[f].tolist()]
        g = got[FS.field_name(small_spec, f)]
        assert g == want, (f, [(a, b) for a, b in zip(g, want, strict=True) if a != b][:5])


@pytest.fixture(scope="module")
def flights_client(small_spec, lake, champion):  # noqa: F811
    FS.materialize_day(small_spec, lake, DAY)
    with serve(small_spec, champion["uri"]) as c:
        yield c


def _one(small_spec, lake, **change) -> bytes:  # noqa: F811
    row = FS.request_rows(small_spec, lake, DAY).iloc[[0]].copy()
    for k, v in change.items():
        row[k] = v
    return V.request_body(row, "records")


def test_an_unknown_entity_is_a_named_404(flights_client, small_spec, lake):  # noqa: F811
    r = flights_client.post("/invocations", content=_one(small_spec, lake, flight=99999))
    assert r.status_code == 404
    assert r.json()["error_code"] == "ENTITY_NOT_FOUND"
    assert "99999" in r.json()["message"]
    # a real flight of a day that was never materialized is not guessed either
    r = flights_client.post("/invocations", content=_one(small_spec, lake, flight_date="2013-01-02"))
    assert r.status_code == 404, r.text


def test_a_request_field_that_differs_from_the_stored_one_is_refused(flights_client, small_spec, lake):  # noqa: F811
    r = flights_client.post("/invocations", content=_one(small_spec, lake, tailnum="N00000"))
    assert r.status_code == 409
    assert r.json()["error_code"] == "STALE_FEATURES"
    assert "tailnum" in r.json()["message"]


def test_a_keyed_request_missing_a_request_field_names_it(flights_client, small_spec, lake):  # noqa: F811
    row = FS.request_rows(small_spec, lake, DAY).iloc[[0]].drop(columns=["sched_dep_time"])
    r = flights_client.post("/invocations", content=V.request_body(row, "records"))
    assert r.status_code == 422
    assert "sched_dep_time" in r.json()["message"]


def test_full_feature_requests_still_work(flights_client, small_spec, lake, champion):  # noqa: F811
    rows = F.features_for_dates(lake, small_spec, DAY, DAY)[small_spec.feature_names].head(20)
    r = flights_client.post("/invocations", content=V.request_body(rows))
    assert r.status_code == 200
    batch = lake.read_table("predictions", "flights", f"date={DAY}", "predictions")
    assert np.array_equal(r.json()["predictions"], batch["probability"].head(20).to_numpy())


# -- the second dataset ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pizzas():
    """The pizzas spec with a split that fits 18 days and one small candidate."""
    spec = load_spec("pizzas")
    hgb = spec.training.candidates[1].model_copy(update={"params": {"max_iter": 40, "learning_rate": 0.1}})
    training = spec.training.model_copy(
        update={"validation_days": 3, "test_days": 3, "search_iterations": 1, "candidates": [hgb]}
    )
    return spec.model_copy(update={"training": training})


@pytest.fixture(scope="module")
def pizza_lake(tmp_path_factory, pizzas) -> Lake:
    from include.datasets.pizzas import load_pizzaplace

    out = Lake(str(tmp_path_factory.mktemp("pizzas") / "lake"))
    real = load_pizzaplace()
    orders = real["orders"]
    for d in PIZZA_DAYS:
        day = orders[orders["order_date"] == d].reset_index(drop=True)
        out.write_partition("validated", "pizzas", f"date={d}", {"orders": day}, source="test")
    out.write_partition("reference", "pizzas", "snapshot=current", {"menu": real["menu"]}, source="test")
    return out


@pytest.fixture(scope="module")
def pizza_champion(tmp_path_factory, pizzas, pizza_lake) -> str:
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("pizzas-mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    table = F.features_for_dates(pizza_lake, pizzas, PIZZA_DAYS[0], PIZZA_DAYS[-1])
    result = T.train_candidates(pizzas, table, tracking_uri=uri, artifact_root=str(folder / "artifacts"))
    MlflowClient(uri, uri).set_registered_model_alias("pizzas", "champion", result.model_version)
    S.clear_cache()
    return uri


def test_pizzas_served_from_entity_keys_equal_batch_predictions(pizzas, pizza_lake, pizza_champion):
    day = PIZZA_DAYS[-1]
    assert FS.materialize_day(pizzas, pizza_lake, day)["written"] is True
    assert assert_parity(pizzas, pizza_lake, day, pizza_champion) > 50


# -- discovery ---------------------------------------------------------------------------------------------
def test_the_catalog_lists_definitions_freshness_and_the_models_using_each_feature(
    small_spec,  # noqa: F811
    lake,  # noqa: F811
    champion,  # noqa: F811
    monkeypatch,
    capsys,
):
    import json

    from include.mlops.__main__ import main

    FS.materialize_day(small_spec, lake, DAY)
    monkeypatch.setenv("MLOPS_DATA_ROOT", lake.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion["uri"])
    assert main(["features", "flights", "--json"]) == 0
    cat = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in cat["features"]] == small_spec.feature_names
    by_name = {f["name"]: f for f in cat["features"]}
    assert by_name["route_delay_rate"]["kind"] == "window"
    assert by_name["route_delay_rate"]["definition"].startswith("rate of label per origin, dest over the 28 days")
    assert by_name["plane_age"]["definition"] == "year - plane.year"
    assert by_name["plane_age"]["reads"] == ["year", "plane.year"]
    used = {tuple(f["used_by"]) for f in cat["features"]}
    assert len(used) == 1, cat["registry_error"]  # every feature: the one registered version, by its aliases
    (label,) = used.pop()
    assert label.startswith(f"v{champion['version']} (")
    assert "champion" in label
    assert cat["online"]["last_day"] == DAY
    assert cat["online"]["last_feature_version"] == F.feature_version(lake, small_spec, DAY, DAY)[0]
    assert main(["features", "flights"]) == 0
    text = capsys.readouterr().out
    assert "route_delay_rate" in text
    assert f"last written {cat['online']['last_materialized_at']}" in text


def test_model_health_shows_the_feature_catalog(small_spec, lake, champion):  # noqa: F811
    from include.mlops.health import PublicUrls, model_health
    from include.mlops.health_html import render_page

    FS.materialize_day(small_spec, lake, DAY)
    health = model_health(small_spec, lake, champion["uri"])
    assert "features" not in health["errors"]
    assert health["features"]["online"]["last_day"] == DAY
    page = render_page(health, ["flights"], PublicUrls.from_env())
    section = page[page.index("<h2>Features</h2>") :]
    assert section.count("<tr>") == len(small_spec.features) + 1
    assert "year - plane.year" in section
    assert f"v{champion['version']} (" in section
    assert f"… {DAY} (" in section


def test_a_day_validated_late_rewrites_the_days_whose_windows_read_it(small_spec, lake, tmp_path, monkeypatch):  # noqa: F811
    """A parallel backfill validates a day after later days were materialized: those days' stored windows lacked
    it, so they are materialized again and end equal to what batch scoring computes from the complete lake; the
    validated days no run was told of are caught up."""
    monkeypatch.setenv(FS.DIR_ENV, str(tmp_path / "online"))  # a store of this test's own
    late, later = "2013-01-05", ["2013-01-10", "2013-01-12"]
    copy = Lake(str(tmp_path / "lake"))

    def validate(p: str) -> None:
        tables = {t: lake.read_table("validated", "flights", p, t) for t in ("flights", "weather")}
        copy.write_partition("validated", "flights", p, tables, source="test")

    for p in lake.partitions("validated", "flights"):
        if p != f"date={late}":
            validate(p)
    ref = {t: lake.read_table("reference", "flights", "snapshot=current", t) for t in ("airlines", "planes")}
    copy.write_partition("reference", "flights", "snapshot=current", ref, source="test")
    for d in later:
        FS.materialize_day(small_spec, copy, d)
    validate(f"date={late}")
    days = FS.days_to_materialize(small_spec, copy, [late])
    caught_up = ["2013-01-01", "2013-01-02", "2013-01-03", "2013-01-04"]  # validated, never materialized
    assert days == [*caught_up, late, *later]
    assert all(FS.materialize_day(small_spec, copy, d)["written"] for d in days)
    rest = ["2013-01-06", "2013-01-07", "2013-01-08", "2013-01-09", "2013-01-11"]
    assert FS.days_to_materialize(small_spec, copy, [later[-1]]) == [*rest, later[-1]]  # 01-12 itself: current
    assert FS.materialize_day(small_spec, copy, later[-1])["written"] is False
    expected = F.features_for_dates(copy, small_spec, later[-1], later[-1])
    ref = f"{FS.features_view(small_spec)}:route_delay_rate"
    got = FS.open_store(small_spec).get_online_features([ref], FS._key_values(small_spec, expected)).to_dict()
    assert got["route_delay_rate"] == expected["route_delay_rate"].tolist()


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ("gate_id", "'gate_id' is not a column of the primary table"),
        ("carrier", "'carrier' is an entity key, the label or a forbidden feature"),
        ("arr_delay", "'arr_delay' is an entity key, the label or a forbidden feature"),
        ("dep_time", "'dep_time' is an entity key, the label or a forbidden feature"),
    ],
)
def test_request_fields_the_spec_cannot_take_are_named(spec, field, problem):
    from pydantic import ValidationError

    from include.mlops.config import DatasetSpec

    raw = spec.model_dump(mode="json")
    raw["online"] = {"request_fields": ["dest", field]}
    with pytest.raises(ValidationError, match=f"online.request_fields: {problem}"):
        DatasetSpec.model_validate(raw)
