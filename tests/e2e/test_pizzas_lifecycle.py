"""The second shipped dataset, pizzas (include/config/pizzas.yaml + include/datasets/pizzas.py), through every
stage with real dag.test() runs and no platform code that knows it: the source seeded from its spec, 25 real
days of January 2015 ingested and validated by pizzas_ingest, a champion trained, gated and promoted by
pizzas_train, a day scored by pizzas_score and checked by pizzas_monitor, Model health built and the champion
served over HTTP. Its own lake and MLflow DB."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from tests.e2e.conftest import dagbag, state

pytestmark = pytest.mark.e2e

FIRST, TRAIN_END, SCORED = date(2015, 1, 1), date(2015, 1, 24), date(2015, 1, 25)


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.fixture(scope="module")
def pizzas():
    from include.mlops.config import load_spec

    return load_spec("pizzas")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    from include.mlops.storage import Lake

    old = os.environ["MLOPS_DATA_ROOT"]
    root = tmp_path_factory.mktemp("pizzas") / "lake"
    os.environ["MLOPS_DATA_ROOT"] = str(root)
    yield Lake(str(root))
    os.environ["MLOPS_DATA_ROOT"] = old


@pytest.fixture(scope="module")
def story(airflow_db, pizzas, lake, module_mlflow):
    """Seed, then every DAG run of the lifecycle in order."""
    from include.mlops.sources import seed_source

    seeded = seed_source(pizzas, os.environ["MLOPS_SOURCE_URL"])
    bag = dagbag()
    out = {"seeded": seeded, "ingest": []}
    day = FIRST
    while day <= SCORED:
        out["ingest"].append(bag.get_dag("pizzas_ingest").test(logical_date=_at(day), run_conf={}))
        day += timedelta(days=1)
    conf = {"window_end": TRAIN_END.isoformat(), "window_days": 21, "search_iterations": 2, "seed": 7}
    out["train"] = bag.get_dag("pizzas_train").test(logical_date=_at(SCORED), run_conf=conf)
    out["score"] = bag.get_dag("pizzas_score").test(logical_date=_at(SCORED), run_conf={"date": SCORED.isoformat()})
    out["monitor"] = bag.get_dag("pizzas_monitor").test(logical_date=_at(SCORED), run_conf={"date": SCORED.isoformat()})
    return out


def test_source_is_seeded_from_the_spec(story):
    assert story["seeded"].rows["orders"] == 49_574  # the real 2015 sales
    assert story["seeded"].rows["menu"] == 32


def test_every_day_is_ingested_and_validated(story, lake):
    assert [state(dr) for dr in story["ingest"]] == ["success"] * len(story["ingest"])
    days = lake.partitions("validated", "pizzas")
    assert days == [f"date={FIRST + timedelta(days=i)}" for i in range((SCORED - FIRST).days + 1)]
    m = lake.manifest("validated", "pizzas", "date=2015-01-02")
    assert m.files["orders"].rows > 100
    assert lake.manifest("reference", "pizzas", "snapshot=current") is not None
    assert lake.exists("reports/gx/pizzas/date=2015-01-02/docs/index.html")


def test_champion_is_trained_gated_and_promoted(story, pizzas, module_mlflow):
    from mlflow import MlflowClient

    dr = story["train"]
    assert state(dr) == "success"
    tis = {ti.task_id: state(ti) for ti in dr.get_task_instances()}
    assert tis["build_features"] == tis["train"] == tis["evaluate"] == tis["promote"] == "success"
    client = MlflowClient(module_mlflow, module_mlflow)
    mv = client.get_model_version_by_alias("pizzas", "champion")
    assert mv.tags["window_end"] == TRAIN_END.isoformat()
    assert client.get_run(mv.run_id).data.metrics["test_roc_auc"] > 0.6


def test_scored_day_has_a_prediction_per_validated_row(story, lake, pizzas):
    from include.mlops.scoring import read_predictions

    assert state(story["score"]) == "success"
    preds = read_predictions(pizzas, lake, SCORED, SCORED)
    validated = lake.read_table("validated", "pizzas", f"date={SCORED}", "orders")
    assert len(preds) == len(validated) > 0
    assert list(preds.columns[:3]) == ["order_date", "order_id", "line"]
    assert preds["probability"].between(0, 1).all()


def test_monitor_judges_the_day(story, lake):
    assert state(story["monitor"]) == "success"
    decision = lake.read_json(f"reports/drift/pizzas/decisions/{SCORED}.json")
    assert decision["day"] == SCORED.isoformat()
    assert isinstance(decision["retrain"], bool)
    assert {c["name"] for c in decision["checks"]}  # every check of the policy is recorded


def test_model_health_lists_the_champion(story, pizzas, lake, module_mlflow):
    from include.mlops.config import spec_paths
    from include.mlops.health import PublicUrls, model_health
    from include.mlops.health_html import render_page

    page = model_health(pizzas, lake, module_mlflow)
    assert page["dataset"] == "pizzas"
    assert page["champion"]["version"]
    datasets = [p.stem for p in spec_paths()]  # what the plugin lists: every spec, the one picked marked
    html = render_page(page, datasets, PublicUrls.from_env())
    assert 'class="current">pizzas</a>' in html
    assert ">flights</a>" in html
    assert "<h1>Model health: pizzas</h1>" in html


def test_champion_is_served_over_http(story, pizzas, lake, module_mlflow):
    from starlette.testclient import TestClient

    from include.mlops import features, serving
    from include.mlops.scoring import read_predictions

    rows = features.features_for_dates(lake, pizzas, SCORED, SCORED)[pizzas.feature_names].head(20)
    settings = serving.Settings("pizzas", tracking_uri=module_mlflow, reload_seconds=0)
    with TestClient(serving.create_app(settings, spec=pizzas)) as client:
        r = client.post("/invocations", content=serving.request_body(rows))
    assert r.status_code == 200, r.text
    batch = read_predictions(pizzas, lake, SCORED, SCORED)["probability"].head(20).to_numpy()
    np.testing.assert_allclose(r.json()["predictions"], batch, rtol=0, atol=1e-12)
