"""flights_ingest end to end: real dag.test() runs against a seeded SQLite source, a temp lake and a temp
Airflow metadata DB. Clean day, corrupted upload (critical and warning), idempotent re-run, refused path.
February days: the shared validated_january fixture of tests/e2e owns Jan 1-24."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ingest_dag(airflow_db, source_db):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag("flights_ingest")


@pytest.fixture
def lake():
    from include.mlops.storage import Lake

    return Lake()


def _run(dag, day: str, conf: dict | None = None):
    y, m, d = map(int, day.split("-"))
    return dag.test(logical_date=datetime(y, m, d, tzinfo=UTC), run_conf=conf)


def _state(dr) -> str:
    return str(dr.state).rsplit(".", 1)[-1].lower()


def _asset_events(uri: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id).where(AssetModel.uri == uri)
        ).all()
    return [r[0] for r in rows]


def test_clean_day_is_validated_documented_and_published(ingest_dag, lake, spec):
    dr = _run(ingest_dag, "2013-02-05")
    assert _state(dr) == "success"
    m = lake.manifest("validated", "flights", "date=2013-02-05")
    assert m is not None
    flights = lake.read_table("validated", "flights", "date=2013-02-05", "flights")
    assert len(flights) == m.files["flights"].rows > 600
    assert set(flights["flight_date"]) == {"2013-02-05"}
    assert list(flights.columns) == list(spec.source.tables["flights"].columns)
    assert lake.exists("reports/gx/flights/date=2013-02-05/docs/index.html")
    result = lake.read_json("reports/gx/flights/date=2013-02-05/result.json")
    assert result["status"] == "passed"
    assert lake.manifest("raw", "flights", "date=2013-02-05") is not None
    events = [e for e in _asset_events("mlops://validated/flights") if e.get("partition") == "date=2013-02-05"]
    assert events, "no Asset event for the validated partition"
    assert events[-1]["sha256"] == m.sha256
    assert events[-1]["rows"] == m.rows


def test_rerun_gives_identical_partition(ingest_dag, lake):
    _run(ingest_dag, "2013-02-07")
    first = lake.manifest("validated", "flights", "date=2013-02-07").as_dict()
    files_first = sorted(lake.fs.ls(lake.partition_path("validated", "flights", "date=2013-02-07")))
    dr = _run(ingest_dag, "2013-02-07")
    assert _state(dr) == "success"
    second = lake.manifest("validated", "flights", "date=2013-02-07").as_dict()
    files_second = sorted(lake.fs.ls(lake.partition_path("validated", "flights", "date=2013-02-07")))
    assert {k: v for k, v in first.items() if k != "run_id"} == {k: v for k, v in second.items() if k != "run_id"}
    assert files_first == files_second


def test_real_bad_weather_reading_is_quarantined_row_by_row(ingest_dag, lake):
    dr = _run(ingest_dag, "2013-02-12")
    assert _state(dr) == "success"
    q = lake.read_table("quarantine", "flights", "date=2013-02-12", "weather")
    assert len(q) == 1
    assert q["wind_speed"].iloc[0] > 1000
    assert "weather.expect_column_values_to_be_between(wind_speed)" in q["_reasons"].iloc[0]
    reasons = json.loads(lake.read_blob("quarantine", "flights", "date=2013-02-12", "reasons.json"))
    assert reasons["status"] == "warning"
    weather = lake.read_table("validated", "flights", "date=2013-02-12", "weather")
    assert weather["wind_speed"].max() < 150


def _upload(landing, nyc, day: str, name: str, mutate) -> str:
    rows = nyc["flights"][nyc["flights"]["flight_date"] == day].reset_index(drop=True).copy()
    rows = mutate(rows)
    path = landing / name
    rows.to_csv(path, index=False)
    return str(path)


def test_corrupted_upload_critical_is_quarantined_and_validated_zone_unchanged(ingest_dag, lake, landing, nyc):
    _run(ingest_dag, "2013-02-05")
    before = lake.manifest("validated", "flights", "date=2013-02-05").as_dict()
    uri = _upload(landing, nyc, "2013-02-06", "no_distance.csv", lambda df: df.drop(columns=["distance"]))
    dr = _run(ingest_dag, "2013-02-06", {"source_uri": uri, "date": "2013-02-06"})
    assert _state(dr) == "failed"
    assert lake.manifest("validated", "flights", "date=2013-02-06") is None
    reasons = json.loads(lake.read_blob("quarantine", "flights", "date=2013-02-06", "reasons.json"))
    assert reasons["status"] == "failed"
    assert any("expect_table_columns_to_match_set" in r for r in reasons["reasons"])
    # the upload is kept byte for byte, in raw and in the quarantine record
    assert lake.read_blob("raw", "flights", "date=2013-02-06", "upload.csv") == Path(uri).read_bytes()
    assert lake.manifest("validated", "flights", "date=2013-02-05").as_dict() == before


def test_rejected_reupload_keeps_the_days_validated_partition(ingest_dag, lake, landing, nyc):
    # explicit conf: in-process dag.test runs keep the previous run's conf as the DAG's Param values
    assert _state(_run(ingest_dag, "2013-02-10", {"source_uri": None, "date": "2013-02-10"})) == "success"
    before = lake.manifest("validated", "flights", "date=2013-02-10").as_dict()
    uri = _upload(landing, nyc, "2013-02-10", "no_carrier.csv", lambda df: df.drop(columns=["carrier"]))
    dr = _run(ingest_dag, "2013-02-10", {"source_uri": uri, "date": "2013-02-10"})
    assert _state(dr) == "failed"
    assert json.loads(lake.read_blob("quarantine", "flights", "date=2013-02-10", "reasons.json"))["status"] == "failed"
    assert lake.manifest("validated", "flights", "date=2013-02-10").as_dict() == before


def test_corrupted_upload_warning_quarantines_only_bad_rows(ingest_dag, lake, landing, nyc):
    def corrupt(df):
        df.loc[:4, "origin"] = "XXX"
        return df

    uri = _upload(landing, nyc, "2013-02-08", "bad_origin.csv", corrupt)
    dr = _run(ingest_dag, "2013-02-08", {"source_uri": uri, "date": "2013-02-08"})
    assert _state(dr) == "success"
    q = lake.read_table("quarantine", "flights", "date=2013-02-08", "flights")
    assert len(q) == 5
    assert all("flights.expect_column_values_to_be_in_set(origin)" in r for r in q["_reasons"])
    v = lake.read_table("validated", "flights", "date=2013-02-08", "flights")
    assert "XXX" not in set(v["origin"])
    assert len(v) + len(q) == int((nyc["flights"]["flight_date"] == "2013-02-08").sum())


def test_upload_outside_allowed_roots_is_refused(ingest_dag, lake, test_root, nyc):
    outside = test_root / "elsewhere.csv"
    nyc["flights"].head(5).to_csv(outside, index=False)
    dr = _run(ingest_dag, "2013-02-09", {"source_uri": str(outside), "date": "2013-02-09"})
    assert _state(dr) == "failed"
    assert lake.manifest("raw", "flights", "date=2013-02-09") is None
    assert lake.manifest("validated", "flights", "date=2013-02-09") is None
