"""The replay clock's timetable (include/mlops/replay.py): data days in order, one per real interval, continuing
after the last scheduled run or at the first day the lake lacks; plain daily intervals with the clock off and for
backfills; manual runs get the day they name; it survives Airflow's serialization (registered by the plugin)."""

from __future__ import annotations

from datetime import timedelta

import pendulum
import pytest
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction

from include.mlops.replay import ReplayTimetable

UTC = "UTC"
START = pendulum.datetime(2013, 1, 1, tz=UTC)
END = pendulum.datetime(2013, 12, 31, 23, 59, tz=UTC)
SCHEDULER = TimeRestriction(earliest=START, latest=END, catchup=False)
BACKFILL = TimeRestriction(earliest=START, latest=END, catchup=True)


def day(m: int, d: int):
    return pendulum.datetime(2013, m, d, tz=UTC)


def test_clock_starts_at_the_first_missing_day_now_and_moves_one_day_per_interval():
    tt = ReplayTimetable(every_seconds=120, first_day="2013-08-02")
    before = pendulum.now(UTC).replace(second=0, microsecond=0)
    first = tt.next_dagrun_info_v2(last_dagrun_info=None, restriction=SCHEDULER)
    assert first.data_interval == DataInterval(day(8, 2), day(8, 3))
    assert first.logical_date == day(8, 2)
    assert before <= first.run_after <= pendulum.now(UTC)  # due at once
    second = tt.next_dagrun_info_v2(last_dagrun_info=first, restriction=SCHEDULER)
    assert second.data_interval == DataInterval(day(8, 3), day(8, 4))
    assert second.run_after == first.run_after + timedelta(seconds=120)
    third = tt.next_dagrun_info_v2(last_dagrun_info=second, restriction=SCHEDULER)
    assert third.logical_date == day(8, 4)
    assert third.run_after - first.run_after == timedelta(seconds=240)


def test_clock_continues_after_the_last_scheduled_run_even_past_the_first_day():
    tt = ReplayTimetable(every_seconds=60, first_day="2013-08-02")
    now = pendulum.now(UTC)
    last = DagRunInfo(run_after=now, data_interval=DataInterval(day(8, 9), day(8, 10)))
    nxt = tt.next_dagrun_info_v2(last_dagrun_info=last, restriction=SCHEDULER)
    assert nxt.logical_date == day(8, 10)
    # ... and a later first day (days ingested by hand since) wins over the last scheduled one
    ahead = ReplayTimetable(every_seconds=60, first_day="2013-09-01")
    assert ahead.next_dagrun_info_v2(last_dagrun_info=last, restriction=SCHEDULER).logical_date == day(9, 1)


def test_clock_without_a_first_day_or_an_earlier_run_waits():
    """A DAG parsed with the clock on but no MLOPS_REPLAY_FROM (e.g. by make demo in a shell that exported the
    clock) must not start the replay at the dataset's first day: make up says where it starts."""
    assert ReplayTimetable(every_seconds=60).next_dagrun_info_v2(last_dagrun_info=None, restriction=SCHEDULER) is None


def test_clock_stops_after_the_last_day_of_the_dataset():
    tt = ReplayTimetable(every_seconds=60)
    last = DagRunInfo(run_after=pendulum.now(UTC), data_interval=DataInterval(day(12, 31), day(12, 31) + timedelta(1)))
    assert tt.next_dagrun_info_v2(last_dagrun_info=last, restriction=SCHEDULER) is None


def test_clock_off_behaves_as_a_daily_data_interval_schedule():
    tt = ReplayTimetable()
    # a past year with catchup off: nothing runs by itself (as a real-time daily schedule would)
    assert tt.next_dagrun_info_v2(last_dagrun_info=None, restriction=SCHEDULER) is None
    # a backfill (always catchup): every day in order, each run after its day is over
    first = tt.next_dagrun_info_v2(last_dagrun_info=None, restriction=BACKFILL)
    assert first == DagRunInfo.interval(day(1, 1), day(1, 2))
    assert tt.next_dagrun_info_v2(last_dagrun_info=first, restriction=BACKFILL) == DagRunInfo.interval(
        day(1, 2), day(1, 3)
    )


def test_a_backfill_ignores_the_clock():
    tt = ReplayTimetable(every_seconds=120, first_day="2013-08-02")
    assert tt.next_dagrun_info_v2(last_dagrun_info=None, restriction=BACKFILL) == DagRunInfo.interval(
        day(1, 1), day(1, 2)
    )


def test_manual_runs_cover_the_day_they_name():
    tt = ReplayTimetable(every_seconds=120)
    assert tt.infer_manual_data_interval(run_after=pendulum.datetime(2013, 8, 1, 15, 30, tz=UTC)) == DataInterval(
        day(8, 1), day(8, 2)
    )


def test_for_spec_reads_the_clock_from_the_environment(monkeypatch):
    monkeypatch.setenv("MLOPS_REPLAY_EVERY", "90")
    monkeypatch.setenv("MLOPS_REPLAY_FROM", '{"flights": "2013-08-02", "pizzas": "2015-06-01"}')
    assert ReplayTimetable.for_spec("flights").serialize() == {
        "every_seconds": 90,
        "first_day": "2013-08-02",
        "lag_days": 0,
    }
    monitor = ReplayTimetable.for_spec("flights", lag_days=1)
    assert monitor.first_day == "2013-08-01"
    assert ReplayTimetable.for_spec("other").first_day is None
    monkeypatch.delenv("MLOPS_REPLAY_EVERY")
    assert ReplayTimetable.for_spec("flights").every_seconds == 0


def test_negative_settings_are_refused():
    with pytest.raises(ValueError, match="every_seconds"):
        ReplayTimetable(every_seconds=-1)


def test_the_dag_serializes_and_deserializes_with_the_timetable(monkeypatch):
    """Airflow only serializes a custom timetable a plugin registers: plugins/mlops_timetables.py does."""
    from airflow.serialization.serialized_objects import DagSerialization

    from dags import ingest
    from include.mlops.config import load_spec

    monkeypatch.setenv("MLOPS_REPLAY_EVERY", "120")
    monkeypatch.setenv("MLOPS_REPLAY_FROM", '{"flights": "2013-08-02"}')
    dag = ingest.build(load_spec("flights"))
    restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert isinstance(restored.timetable, ReplayTimetable)
    assert restored.timetable.serialize() == {"every_seconds": 120, "first_day": "2013-08-02", "lag_days": 0}
    info = restored.next_dagrun_info(last_automated_run_info=None)
    assert info.logical_date == day(8, 2)
