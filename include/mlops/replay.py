"""The replay clock: a historical dataset's days, one per real interval, as an Airflow timetable.

A spec with ``time.replay: true`` (the shipped 2013 flights and 2015 pizzas) describes a year that is over, so a
real-time daily schedule never runs it. Its ingest and monitor DAGs use :class:`ReplayTimetable` instead:

* **clock on** (``MLOPS_REPLAY_EVERY`` seconds > 0, set by ``make up``): the scheduler creates the run of the next
  data day every ``every`` seconds of real time. The first day is the day after the last scheduled run, or the
  ``MLOPS_REPLAY_FROM`` day for this dataset (``make up`` sets it to the first day the lake has not ingested, so
  the replay continues where ``make demo`` stopped), whichever is later; with neither, the clock waits. Each
  run's logical date and data interval are its data day ``[day, day + 1)`` and its run id carries it
  (``scheduled__2013-08-02T00:00:00+00:00``). When the scheduler was stopped for a while, the days it missed run
  back to back until the clock has caught up.
* **clock off** (the default; also every backfill, which always asks with ``catchup``): plain daily data
  intervals, exactly as the real-time schedule — a run once its day is over, none for a past year with catchup off.

Manual runs get the data interval of the day they name, ``[day, day + 1)`` (a daily cron data-interval timetable
would give the interval *ending* there). ``lag_days`` shifts the clock's days back: the monitor checks the day
before the one being ingested, so its window is complete when it runs.

The class is registered with Airflow by ``plugins/mlops_ui.py`` (custom timetables must be), so every component
can deserialize the DAGs that use it. Cheap to import: DAG files import it at parse time.
"""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from typing import Any

import pendulum
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable
from pendulum import DateTime

EVERY_ENV = "MLOPS_REPLAY_EVERY"
FROM_ENV = "MLOPS_REPLAY_FROM"
DAY = timedelta(days=1)


def _midnight(value: Any) -> DateTime:
    d = value.date() if hasattr(value, "date") else value
    return pendulum.datetime(d.year, d.month, d.day, tz="UTC")


class ReplayTimetable(Timetable):
    """One data day per run; on the replay clock, one day every ``every_seconds`` of real time."""

    run_ordering = ("logical_date", "data_interval_end")

    def __init__(self, every_seconds: int = 0, first_day: str | None = None, lag_days: int = 0) -> None:
        if every_seconds < 0 or lag_days < 0:
            raise ValueError(f"every_seconds and lag_days must be >= 0, got {every_seconds} / {lag_days}")
        self.every_seconds = int(every_seconds)
        self.first_day = date.fromisoformat(first_day).isoformat() if first_day else None
        self.lag_days = int(lag_days)
        self.description = (
            f"Replay: one data day every {self.every_seconds} s"
            + (f" from {self.first_day}" if self.first_day else "")
            + (f", {self.lag_days} day(s) behind ingestion" if self.lag_days else "")
            if self.every_seconds
            else "Daily data intervals (replay clock off: make up starts it)"
        )

    @classmethod
    def for_spec(cls, dataset: str, lag_days: int = 0) -> ReplayTimetable:
        """The timetable of a replayed dataset's DAG, with the clock the environment sets (``make up``)."""
        every = int(os.environ.get(EVERY_ENV) or 0)
        starts = json.loads(os.environ.get(FROM_ENV) or "{}")
        first = starts.get(dataset)
        if first and lag_days:
            first = (date.fromisoformat(first) - timedelta(days=lag_days)).isoformat()
        return cls(every_seconds=every, first_day=first, lag_days=lag_days)

    @property
    def summary(self) -> str:
        return f"replay 1 day / {self.every_seconds}s" if self.every_seconds else "replay (clock off)"

    def serialize(self) -> dict[str, Any]:
        return {"every_seconds": self.every_seconds, "first_day": self.first_day, "lag_days": self.lag_days}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> ReplayTimetable:
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplayTimetable) and self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash(tuple(self.serialize().items()))

    def generate_run_id(
        self, *, run_type: Any, run_after: DateTime, data_interval: DataInterval | None, **extra
    ) -> str:
        """Run ids carry the data day (``scheduled__2013-08-02T00:00:00+00:00``), not the wall-clock time."""
        at = data_interval.start if data_interval is not None else run_after
        return run_type.generate_run_id(suffix=at.isoformat())

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        start = _midnight(run_after)
        return DataInterval(start=start, end=start + DAY)

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        last = DagRunInfo.interval(*last_automated_data_interval) if last_automated_data_interval else None
        return self.next_dagrun_info_v2(last_dagrun_info=last, restriction=restriction)

    def next_dagrun_info_v2(
        self, *, last_dagrun_info: DagRunInfo | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        last_interval = last_dagrun_info.data_interval if last_dagrun_info else None
        candidates = []
        if last_interval is not None:
            candidates.append(_midnight(last_interval.end))
        elif restriction.earliest is not None:
            candidates.append(_midnight(restriction.earliest))
        clock = self.every_seconds and not restriction.catchup  # a backfill always asks with catchup
        if clock and last_interval is None and not self.first_day:
            return None  # where the replay starts is for make up to say (MLOPS_REPLAY_FROM), never a guess
        if clock and self.first_day:
            candidates.append(_midnight(date.fromisoformat(self.first_day)))
        if not clock and not restriction.catchup:  # like a daily data-interval timetable: the last complete day
            candidates.append(_midnight(pendulum.now("UTC")) - DAY)
        if not candidates:
            return None
        day = max(candidates)
        if restriction.earliest is not None and day < _midnight(restriction.earliest):
            day = _midnight(restriction.earliest)
        if restriction.latest is not None and day > restriction.latest:
            return None
        if not clock:
            return DagRunInfo.interval(day, day + DAY)
        if last_dagrun_info is not None and last_dagrun_info.run_after is not None:
            run_after = last_dagrun_info.run_after + timedelta(seconds=self.every_seconds)
        else:  # the clock's first run: due now (to the minute, so that re-parsing the DAG does not move it)
            run_after = pendulum.now("UTC").replace(second=0, microsecond=0)
        return DagRunInfo(run_after=run_after, data_interval=DataInterval(day, day + DAY))
