"""A dataset the platform has never seen, written as a newcomer would from the README's "Add your own dataset"
alone: hourly weather observations (three NYC stations, 2013) with a datetime time column, a text category,
other keys, a threshold label on another column and no join — only a spec file and a CSV seed file in a spec
folder of its own (MLOPS_SPEC_DIR). Ingest, features, train + gate + promote, score and monitor run through
dag.test with nothing added under include/mlops, dags or plugins."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.e2e.conftest import dagbag, state

pytestmark = pytest.mark.e2e

FIRST, TRAIN_END, SCORED = date(2013, 1, 1), date(2013, 1, 20), date(2013, 1, 21)

SPEC = """
name: rain
description: Will it rain at the station in this hour? From the hour's other readings.
source:
  connection_id: rain_source
  primary_table: observations
  tables:
    observations:
      query: >
        SELECT station, observed_at, temp, dewp, humid, wind_speed, pressure, precip
        FROM observations WHERE observed_at >= :start AND observed_at < :end
      time_column: observed_at
      columns: {station: str, observed_at: datetime, temp: float, dewp: float, humid: float,
                wind_speed: float, pressure: float, precip: float}
  seed: {files: {observations: SEED_CSV}}
time: {column: observed_at, start: 2013-01-01, end: 2013-12-31, timezone: America/New_York}
entity_keys: [station, observed_at]
label: {name: rain, column: precip, threshold: 0}
features:
  - {name: station, dtype: category, description: the weather station}
  - {name: hour, dtype: int, description: local hour, calendar: {column: observed_at, part: hour}}
  - {name: temp, dtype: float, description: temperature (F)}
  - {name: dewp, dtype: float, description: dew point (F)}
  - {name: humid, dtype: float, description: relative humidity}
  - {name: spread, dtype: float, description: temperature minus dew point, expr: "temp - dewp"}
  - {name: wind_speed, dtype: float, description: wind speed (mph)}
  - {name: pressure, dtype: float, description: sea-level pressure (mb)}
  - {name: rain_rate_3d, dtype: float, description: share of rainy hours at the station over 3 days,
     window: {of: label, agg: rate, by: [station], days: 3, prior: 5}}
validation:
  expectations:
    - {table: observations, type: expect_table_row_count_to_be_between, kwargs: {min_value: 1, max_value: 200},
       severity: critical}
    - {table: observations, type: expect_column_values_to_not_be_null, kwargs: {column: station}, severity: warning}
    - {table: observations, type: expect_column_values_to_be_in_set,
       kwargs: {column: station, value_set: [EWR, JFK, LGA]}, severity: warning}
training:
  window_days: 20
  validation_days: 4
  test_days: 5
  cadence_days: 30
  search_iterations: 2
  candidates:
    - {name: logreg, estimator: logistic_regression, params: {max_iter: 500}}
    - {name: hgb, estimator: hist_gradient_boosting, params: {max_iter: 60}}
gate: {min_roc_auc: 0.6, max_brier: 0.2, max_roc_auc_drop: 0.02}
monitoring: {window_days: 1, max_drift_share: 0.5, max_prediction_drift: 0.2, max_roc_auc_drop: 0.1,
             max_brier_rise: 0.05, retrain_debounce_days: 7, min_labelled_rows: 20}
"""


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory, nyc):
    """The newcomer's spec folder: the spec and its seed CSV (the real hourly observations, renamed)."""
    d = tmp_path_factory.mktemp("unseen-specs")
    w = nyc["weather"].rename(columns={"origin": "station", "time_hour": "observed_at"})
    w[["station", "observed_at", "temp", "dewp", "humid", "wind_speed", "pressure", "precip"]].to_csv(
        d / "observations.csv", index=False
    )
    (d / "rain.yaml").write_text(SPEC.replace("SEED_CSV", str(d / "observations.csv")))
    return d


@pytest.fixture(scope="module")
def story(airflow_db, spec_dir, module_mlflow, tmp_path_factory):
    from include.mlops.config import load_spec
    from include.mlops.sources import seed_source
    from include.mlops.storage import Lake

    saved = {k: os.environ.get(k) for k in ("MLOPS_DATA_ROOT", "MLOPS_SPEC_DIR", "AIRFLOW_CONN_RAIN_SOURCE")}
    os.environ["MLOPS_DATA_ROOT"] = str(tmp_path_factory.mktemp("unseen") / "lake")
    os.environ["MLOPS_SPEC_DIR"] = str(spec_dir)
    os.environ["AIRFLOW_CONN_RAIN_SOURCE"] = json.dumps(
        {"conn_type": "generic", "extra": {"sqlalchemy_url": os.environ["MLOPS_SOURCE_URL"]}}
    )
    try:
        spec = load_spec("rain")
        out = {"spec": spec, "lake": Lake(), "seeded": seed_source(spec, os.environ["MLOPS_SOURCE_URL"])}
        bag = dagbag(spec_dir)
        out["ingest"] = []
        day = FIRST
        while day <= SCORED:
            out["ingest"].append(bag.get_dag("rain_ingest").test(logical_date=_at(day), run_conf={}))
            day += timedelta(days=1)
        conf = {"window_end": TRAIN_END.isoformat(), "search_iterations": 2, "seed": 7}
        out["train"] = bag.get_dag("rain_train").test(logical_date=_at(SCORED), run_conf=conf)
        run_conf = {"date": SCORED.isoformat()}
        out["score"] = bag.get_dag("rain_score").test(logical_date=_at(SCORED), run_conf=run_conf)
        out["monitor"] = bag.get_dag("rain_monitor").test(logical_date=_at(SCORED), run_conf=run_conf)
        yield out
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_every_stage_runs_for_a_spec_the_code_has_never_seen(story):
    assert story["seeded"].rows["observations"] == 26_115
    assert [state(dr) for dr in story["ingest"]] == ["success"] * len(story["ingest"])
    assert state(story["train"]) == "success"
    tis = {ti.task_id: state(ti) for ti in story["train"].get_task_instances()}
    assert tis["promote"] == "success", tis
    assert state(story["score"]) == "success"
    assert state(story["monitor"]) == "success"


def test_predictions_keep_the_hourly_keys(story):
    from include.mlops.scoring import read_predictions

    lake, spec = story["lake"], story["spec"]
    preds = read_predictions(spec, lake, SCORED, SCORED)
    rows = lake.read_table("validated", "rain", f"date={SCORED}", "observations")
    assert len(preds) == len(rows) > 60
    assert preds[["station", "observed_at"]].duplicated().sum() == 0  # one prediction per station-hour
