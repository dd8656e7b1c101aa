"""bench.policy's pure parts: degraded checks grouped into periods, spec settings overridden with validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bench import policy as P


def test_consecutive_degraded_checks_make_one_period():
    checks = [
        {"day": d, "degraded": bad}
        for d, bad in [("03-01", False), ("03-08", True), ("03-15", True), ("03-22", False), ("03-29", True)]
    ]
    assert P.periods(checks) == [["03-08", "03-15"], ["03-29"]]
    assert P.periods([{"day": "x", "degraded": False}]) == []


def test_override_changes_settings_and_validates_them(spec):
    weekly = P.override(spec, {"training": {"cadence_days": 7}, "gate": {"bootstrap_samples": 50}})
    assert (weekly.training.cadence_days, weekly.gate.bootstrap_samples) == (7, 50)
    assert spec.gate.bootstrap_samples != 50, "the spec itself is untouched"
    with pytest.raises(ValidationError, match="retrain_cooldown_days"):
        P.override(spec, {"monitoring": {"retrain_cooldown_days": 99}})


def test_check_days_are_weekly_after_the_first_serving_day():
    from datetime import date

    days = P.check_days(date(2013, 3, 1), date(2013, 3, 31))
    assert days == [date(2013, 3, 8), date(2013, 3, 15), date(2013, 3, 22), date(2013, 3, 29)]
