"""Registers the replay clock's timetable (include/mlops/replay.py) with Airflow: a DAG may only use a custom
timetable that a plugin names, so the scheduler, the dag-processor and the API server can deserialize it."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from include.mlops.replay import ReplayTimetable


class MlopsTimetablesPlugin(AirflowPlugin):
    name = "mlops_timetables"
    timetables = [ReplayTimetable]  # noqa: RUF012 (AirflowPlugin declares these as class attributes)
