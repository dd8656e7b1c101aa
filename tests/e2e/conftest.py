"""Shared e2e fixtures: real validated partitions, a DagBag per spec folder, an MLflow DB per module."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.conftest import REPO

JAN_END = date(2013, 1, 24)


@pytest.fixture(scope="session")
def validated_january(nyc, spec):
    """Real rows of Jan 1-24 in the validated zone (ingestion itself is covered by test_ingest_dag)."""
    from include.mlops.storage import Lake

    return write_validated(Lake(), nyc, spec, [(date(2013, 1, 1), JAN_END)])


def write_validated(lake, nyc, spec, spans):
    """Real rows of each [first, last] day span in the validated zone, plus the reference tables."""
    from include.mlops.ingest import REFERENCE_PARTITION

    for first, last in spans:
        day = date.fromisoformat(str(first))
        while day <= date.fromisoformat(str(last)):
            tables = {}
            for t in ("flights", "weather"):
                rows = nyc[t][nyc[t]["flight_date"] == day.isoformat()].reset_index(drop=True)
                tables[t] = rows[list(spec.source.tables[t].columns)]
            lake.write_partition("validated", spec.name, f"date={day}", tables, source="test")
            day += timedelta(days=1)
    ref = {"airlines": nyc["airlines"], "airports": nyc["airports"], "planes": nyc["planes"]}
    lake.write_partition("reference", spec.name, REFERENCE_PARTITION, ref, source="test")
    return lake


@pytest.fixture(scope="module")
def module_mlflow(test_root, request):
    """A fresh MLflow tracking DB for one test module (registries do not leak between scenarios)."""
    old = os.environ["MLFLOW_TRACKING_URI"]
    uri = f"sqlite:///{test_root}/mlflow-{request.module.__name__.rsplit('.', 1)[-1]}.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    os.environ["MLFLOW_TRACKING_URI"] = old


def dagbag(spec_dir: Path | None = None):
    """Parse the DAG folder, optionally with another spec folder (a spec override)."""
    from airflow.dag_processing.dagbag import DagBag

    old = os.environ.get("MLOPS_SPEC_DIR")
    if spec_dir:
        os.environ["MLOPS_SPEC_DIR"] = str(spec_dir)
    try:
        bag = DagBag(dag_folder=str(REPO / "dags"))
    finally:
        if old is None:
            os.environ.pop("MLOPS_SPEC_DIR", None)
        else:
            os.environ["MLOPS_SPEC_DIR"] = old
    assert bag.import_errors == {}
    return bag


def state(obj) -> str:
    return str(obj.state).rsplit(".", 1)[-1].lower()
