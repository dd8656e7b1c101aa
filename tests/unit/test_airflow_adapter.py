"""The Airflow adapter: which days a run covers, and how the source connection becomes a SQLAlchemy URL."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest

from include.mlops.airflow_adapter import run_interval, source_url

UTC = UTC


def _ctx(run_type: str, logical: datetime | None, start: datetime | None, end: datetime | None) -> dict:
    return {
        "dag_run": SimpleNamespace(run_type=run_type, run_after=logical),
        "logical_date": logical,
        "data_interval_start": start,
        "data_interval_end": end,
    }


@pytest.mark.parametrize(
    ("ctx", "day", "expected"),
    [
        # a backfill / scheduled run of a data-interval timetable: its interval
        (
            _ctx(
                "backfill",
                datetime(2013, 1, 5, tzinfo=UTC),
                datetime(2013, 1, 5, tzinfo=UTC),
                datetime(2013, 1, 6, tzinfo=UTC),
            ),
            None,
            (date(2013, 1, 5), date(2013, 1, 6)),
        ),
        (
            _ctx(
                "scheduled",
                datetime(2013, 1, 5, tzinfo=UTC),
                datetime(2013, 1, 5, tzinfo=UTC),
                datetime(2013, 1, 6, tzinfo=UTC),
            ),
            None,
            (date(2013, 1, 5), date(2013, 1, 6)),
        ),
        # a manual run: the day of its logical date, not the interval ending there
        (
            _ctx(
                "manual",
                datetime(2013, 1, 5, tzinfo=UTC),
                datetime(2013, 1, 4, tzinfo=UTC),
                datetime(2013, 1, 5, tzinfo=UTC),
            ),
            None,
            (date(2013, 1, 5), date(2013, 1, 6)),
        ),
        # the date Param wins
        (
            _ctx("manual", datetime(2026, 11, 22, tzinfo=UTC), None, None),
            "2013-03-02",
            (date(2013, 3, 2), date(2013, 3, 3)),
        ),
        # a point interval (trigger timetable) still covers one day
        (
            _ctx(
                "scheduled",
                datetime(2013, 1, 5, tzinfo=UTC),
                datetime(2013, 1, 5, tzinfo=UTC),
                datetime(2013, 1, 5, tzinfo=UTC),
            ),
            None,
            (date(2013, 1, 5), date(2013, 1, 6)),
        ),
    ],
)
def test_run_interval(ctx, day, expected):
    assert run_interval(ctx, day) == expected


def test_a_manual_run_outside_the_time_range_covers_the_default_day():
    """The trigger form's default logical date is today: for a replayed year that day has no data, so a manual run
    without a ``date`` covers the day ``default`` names (the next day not yet ingested); inside the range, or
    with a ``date`` Param, the day given wins; a scheduled run keeps its data interval."""
    time_spec = SimpleNamespace(start=date(2013, 1, 1), end=date(2013, 12, 31))
    today = datetime(2026, 12, 4, 15, tzinfo=UTC)
    default = lambda: date(2013, 8, 2)  # noqa: E731
    assert run_interval(_ctx("manual", today, None, None), None, time_spec, default) == (
        date(2013, 8, 2),
        date(2013, 8, 3),
    )
    no_logical_date = _ctx("manual", None, None, None) | {
        "dag_run": SimpleNamespace(run_type="manual", run_after=today)
    }
    assert run_interval(no_logical_date, None, time_spec, default)[0] == date(2013, 8, 2)
    inside = datetime(2013, 3, 5, tzinfo=UTC)
    assert run_interval(_ctx("manual", inside, None, None), None, time_spec, default)[0] == date(2013, 3, 5)
    assert run_interval(_ctx("manual", today, None, None), "2013-02-01", time_spec, default)[0] == date(2013, 2, 1)
    nothing_left = lambda: None  # noqa: E731  (every day ingested: the logical day stays, and names itself)
    assert run_interval(_ctx("manual", today, None, None), None, time_spec, nothing_left)[0] == date(2026, 12, 4)
    sched = _ctx("scheduled", inside, inside, datetime(2013, 3, 6, tzinfo=UTC))
    assert run_interval(sched, None, time_spec, default) == (date(2013, 3, 5), date(2013, 3, 6))


def test_run_interval_rejects_a_bad_date_param():
    with pytest.raises(ValueError, match="Invalid isoformat"):
        run_interval(_ctx("manual", None, None, None), "13/01/2013")


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        ({"conn_type": "generic", "extra": {"sqlalchemy_url": "sqlite:////tmp/x.db"}}, "sqlite:////tmp/x.db"),
        (
            {"conn_type": "postgres", "host": "db", "port": 5433, "login": "u", "password": "p", "schema": "src"},
            "postgresql+psycopg2://u:p@db:5433/src",
        ),
        ({"conn_type": "sqlite", "host": "/data/source.db"}, "sqlite:////data/source.db"),
    ],
)
def test_source_url_from_connection(monkeypatch, conn, expected):
    monkeypatch.setenv("AIRFLOW_CONN_TEST_SOURCE", json.dumps(conn))
    assert source_url("test_source") == expected


def test_source_url_unknown_type_is_a_named_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_TEST_SOURCE", json.dumps({"conn_type": "ftp", "host": "x"}))
    with pytest.raises(ValueError, match=r"no extra\.sqlalchemy_url and is not postgres/sqlite"):
        source_url("test_source")


@pytest.mark.parametrize(
    ("kind", "name", "uri"),
    [
        ("validated", "validated/flights", "mlops://validated/flights"),
        ("predictions", "predictions/flights", "mlops://predictions/flights"),
        ("champion", "model/flights@champion", "mlops://model/flights/champion"),
        ("retrain", "retrain/flights", "mlops://retrain/flights"),
    ],
)
def test_assets_have_one_definition(kind, name, uri):
    from include.mlops.airflow_adapter import asset

    a = asset(kind, "flights")
    assert (a.name, a.uri) == (name, uri)


def test_dag_dates_span_the_dataset():
    from include.mlops.airflow_adapter import dag_dates
    from include.mlops.config import load_spec

    d = dag_dates(load_spec("flights").time)
    assert d["start_date"].isoformat() == "2013-01-01T00:00:00+00:00"
    assert d["end_date"].date().isoformat() == "2013-12-31"


def test_alert_without_a_connection_is_logged():
    from include.mlops.airflow_adapter import send_alert

    assert send_alert("[mlops] test", "body") == "log"


def test_alert_webhook_must_be_http(monkeypatch, tmp_path, caplog):
    """A webhook connection pointing at file:// (or any non-http scheme) is never opened: the alert is logged."""
    from include.mlops.airflow_adapter import send_alert

    target = tmp_path / "secret.txt"
    target.write_text("x")
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_ALERTS", json.dumps({"conn_type": "http", "host": f"file://{target}"}))
    assert send_alert("[mlops] test", "body") == "log"
    assert "must be http(s)" in caplog.text
