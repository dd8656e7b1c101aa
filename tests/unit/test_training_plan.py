"""plan_training: the window and whether a scheduled training run is due (cadence)."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from include.mlops.storage import Lake
from include.mlops.training import plan_training, retrain_request_reason


@pytest.fixture
def lake(tmp_path):
    lake = Lake(str(tmp_path))
    for i in range(30):  # Jan 1..30
        d = date(2013, 1, 1) + timedelta(days=i)
        lake.write_partition("validated", "flights", f"date={d}", {"flights": pd.DataFrame({"x": [i]})}, source="t")
    return lake


def test_window_ends_at_latest_validated_day(lake, spec):
    p = plan_training(spec, lake, window_days=20, force=True)
    assert (p["start"], p["end"], p["validated_days"], p["due"]) == ("2013-01-11", "2013-01-30", 20, True)


def test_explicit_window_end(lake, spec):
    p = plan_training(spec, lake, window_end="2013-01-20", window_days=15, force=True)
    assert (p["start"], p["end"]) == ("2013-01-06", "2013-01-20")


def test_too_few_days_is_not_due_even_when_forced(lake, spec):
    p = plan_training(spec, lake, window_end="2013-01-05", window_days=20, force=True)
    assert not p["due"]
    assert "need 15" in p["reason"]


@pytest.mark.parametrize(
    ("days_since", "due"),
    [(None, True), (7, True), (6, False), (1, False)],
)
def test_cadence(lake, spec, days_since, due):
    weekly = spec.model_copy(update={"training": spec.training.model_copy(update={"cadence_days": 7})})
    last_end = None if days_since is None else date(2013, 1, 30) - timedelta(days=days_since)
    p = plan_training(weekly, lake, window_days=20, last_end=last_end)
    assert p["due"] is due, p["reason"]


def test_forced_with_a_reason(lake, spec):
    p = plan_training(spec, lake, window_days=20, last_end=date(2013, 1, 29), force="retrain requested: brier_rise")
    assert (p["due"], p["reason"]) == (True, "retrain requested: brier_rise")


def test_empty_lake(tmp_path, spec):
    assert plan_training(spec, Lake(str(tmp_path)))["due"] is False


JUL25 = {"day": "2013-07-25", "triggers": ["brier_rise"]}


@pytest.mark.parametrize(
    ("requests", "last_end", "reason"),
    [
        ([JUL25], date(2013, 7, 25), None),  # the demo trained on it (window ends on the request's day)
        ([JUL25], date(2013, 8, 1), None),  # a later training covered it
        ([JUL25], date(2013, 7, 24), "retrain requested by the monitor on 2013-07-25: brier_rise"),
        ([JUL25], None, "retrain requested by the monitor on 2013-07-25: brier_rise"),  # no model yet
        (
            [{"day": "2013-08-09", "triggers": ["roc_auc_drop"]}, JUL25],
            date(2013, 8, 1),
            "retrain requested by the monitor on 2013-08-09: roc_auc_drop",
        ),
        ([None], date(2013, 8, 1), "retrain requested by the monitor: no trigger named"),  # nothing says answered
        ([], date(2013, 8, 1), None),
    ],
    ids=["served-by-its-training", "covered-later", "fresh", "never-trained", "fresh-among-stale", "no-day", "none"],
)
def test_stale_retrain_requests_do_not_train(requests, last_end, reason):
    assert retrain_request_reason(requests, last_end) == reason


def test_a_stale_request_falls_back_to_the_cadence(lake, spec):
    """The scheduler replays the monitor's Jul 25 request after the demo trained on it: not due."""
    last_end = date(2013, 1, 29)
    force = retrain_request_reason([{"day": "2013-01-29", "triggers": ["brier_rise"]}], last_end) or False
    p = plan_training(spec, lake, window_days=20, force=force, last_end=last_end)
    assert p["due"] is False, p["reason"]
    assert "cadence" in p["reason"]


def test_a_shadow_proposal_is_no_request_and_goes_stale_when_the_alias_moved():
    from include.mlops.training import fresh_retrain_request, shadow_proposal

    proposal = {"day": "2013-08-02", "shadow_version": "7", "window": ["2013-07-19", "2013-08-02"]}
    assert fresh_retrain_request([proposal], date(2013, 7, 25)) is None
    assert shadow_proposal([JUL25, proposal], "7") == proposal
    assert shadow_proposal([proposal], "8") is None  # a newer candidate shadows now: stale
    assert shadow_proposal([proposal], None) is None  # promoted or cleared since
    assert shadow_proposal([JUL25], "7") is None
