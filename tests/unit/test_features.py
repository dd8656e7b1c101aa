"""Features: the label rule, the spec as the contract, point-in-time delay rates, versioned feature tables."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from include.mlops import features as F
from include.mlops.config import FeatureSpec
from include.mlops.storage import Lake

DTYPES = {"int": "int64", "float": "float64", "category": "object"}
PRIOR = 20.0  # the flights spec smooths its delay rates with 20 pseudo flights


def days(nyc: dict, first: str, last: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Flights and weather of the days [first, last] (real data)."""
    f, w = nyc["flights"], nyc["weather"]
    keep_f = (f["flight_date"] >= first) & (f["flight_date"] <= last)
    keep_w = (w["flight_date"] >= first) & (w["flight_date"] <= last)
    return f[keep_f].reset_index(drop=True), w[keep_w].reset_index(drop=True)


def with_feature(spec, feature: FeatureSpec):
    return spec.model_copy(update={"features": [*spec.features, feature]})


def write_days(lake: Lake, nyc: dict, first: str, last: str) -> None:
    flights, weather = days(nyc, first, last)
    for d, fd in flights.groupby("flight_date"):
        wd = weather[weather["flight_date"] == d]
        tables = {"flights": fd.reset_index(drop=True), "weather": wd.reset_index(drop=True)}
        lake.write_partition("validated", "flights", f"date={d}", tables, source="test")


@pytest.fixture
def lake(tmp_path, nyc) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    write_days(lake, nyc, "2013-01-01", "2013-01-12")
    ref = {k: nyc[k] for k in ("airlines", "airports", "planes")}
    lake.write_partition("reference", "flights", "snapshot=current", ref, source="test")
    return lake


# -- label ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dep_time", "arr_delay", "expected"),
    [
        (600.0, 16.0, 1.0),  # late
        (600.0, 15.0, 0.0),  # exactly the threshold is on time (arr_delay > 15)
        (600.0, -7.0, 0.0),  # early
        (np.nan, np.nan, np.nan),  # cancelled -> exclude
        (600.0, np.nan, 1.0),  # departed, no arrival delay: diverted -> positive
    ],
    ids=["late", "threshold", "early", "cancelled", "diverted"],
)
def test_label_follows_the_spec_rules(spec, dep_time, arr_delay, expected):
    y = F.label(spec, pd.DataFrame({"dep_time": [dep_time], "arr_delay": [arr_delay]}))
    assert y.name == "delayed"
    np.testing.assert_equal(y.iloc[0], expected)


@pytest.mark.parametrize(
    ("cancelled", "diverted", "expected"),
    [("positive", "exclude", [1.0, np.nan]), ("negative", "negative", [0.0, 0.0])],
)
def test_label_rules_are_configurable(spec, cancelled, diverted, expected):
    rules = [
        spec.label.rules[0].model_copy(update={"then": cancelled}),
        spec.label.rules[1].model_copy(update={"then": diverted}),
    ]
    s = spec.model_copy(update={"label": spec.label.model_copy(update={"rules": rules})})
    y = F.label(s, pd.DataFrame({"dep_time": [np.nan, 600.0], "arr_delay": [np.nan, np.nan]}))
    np.testing.assert_equal(y.to_numpy(), expected)


def test_label_without_its_columns_raises(spec):
    with pytest.raises(F.FeatureError, match="arr_delay"):
        F.label(spec, pd.DataFrame({"dep_time": [600.0]}))


# -- build_features ------------------------------------------------------------------------------------
def test_feature_table_has_exactly_the_spec_columns_and_dtypes(spec, nyc):
    flights, weather = days(nyc, "2013-01-01", "2013-01-03")
    df = F.build_features(spec, {"flights": flights, "weather": weather, "planes": nyc["planes"]})
    assert list(df.columns) == [*dict.fromkeys([*spec.entity_keys, *spec.feature_names]), "delayed"]
    for f in spec.features:
        assert str(df[f.name].dtype) == DTYPES[f.dtype], f.name
    assert len(df) == len(flights)
    assert (df["flight"].to_numpy() == flights["flight"].to_numpy()).all()  # one row per flight, input order
    assert df["delayed"].isna().sum() == flights["dep_time"].isna().sum()  # cancellations excluded


def test_weather_and_plane_age_are_joined_on_the_departure_hour(spec, nyc):
    flights, weather = days(nyc, "2013-01-01", "2013-01-02")
    df = F.build_features(spec, {"flights": flights, "weather": weather, "planes": nyc["planes"]})
    i = int(np.flatnonzero((flights["tailnum"] == "N14228").to_numpy())[0])
    row, fl = df.iloc[i], flights.iloc[i]
    w = weather[(weather["origin"] == fl["origin"]) & (weather["time_hour"] == fl["time_hour"])].iloc[0]
    for col in ("temp", "humid", "wind_speed", "precip", "visib", "pressure"):
        np.testing.assert_equal(row[col], w[col])
    assert row["plane_age"] == 2013 - 1999
    unknown = flights["tailnum"].isna() | ~flights["tailnum"].isin(nyc["planes"]["tailnum"])
    assert df.loc[unknown.to_numpy(), "plane_age"].isna().all()


def test_delay_rates_equal_a_brute_force_28_day_window(spec, nyc):
    flights, weather = days(nyc, "2013-01-01", "2013-02-15")
    df = F.build_features(spec, {"flights": flights, "weather": weather, "planes": nyc["planes"]})
    f = flights.assign(y=F.label(spec, flights), d=pd.to_datetime(flights["flight_date"]))
    for i in np.random.default_rng(0).choice(np.flatnonzero(f["d"] >= "2013-01-20"), 20, replace=False):
        r = f.iloc[i]
        win = f[(f["d"] >= r["d"] - pd.Timedelta(days=28)) & (f["d"] < r["d"]) & f["y"].notna()]
        prior = win["y"].mean()
        for name, mask in {
            "route_delay_rate": (win["origin"] == r["origin"]) & (win["dest"] == r["dest"]),
            "carrier_delay_rate": win["carrier"] == r["carrier"],
            "origin_delay_rate": win["origin"] == r["origin"],
        }.items():
            sub = win.loc[mask, "y"]
            expected = (sub.sum() + PRIOR * prior) / (len(sub) + PRIOR)
            assert df[name].iloc[i] == pytest.approx(expected), (name, r["flight_date"])


def test_rates_use_history_and_are_nan_without_any(spec, nyc):
    flights, weather = days(nyc, "2013-01-10", "2013-01-10")
    history, _ = days(nyc, "2013-01-01", "2013-01-09")
    without = F.build_features(spec, {"flights": flights, "weather": weather, "planes": nyc["planes"]})
    with_history = F.build_features(spec, {"flights": flights, "weather": weather, "planes": nyc["planes"]}, history)
    assert without["carrier_delay_rate"].isna().all()
    for name in ("route_delay_rate", "carrier_delay_rate", "origin_delay_rate"):
        assert without[name].isna().all()
        assert with_history[name].notna().all()


def test_features_of_a_day_do_not_see_labels_of_that_day_or_later(spec, nyc):
    flights, weather = days(nyc, "2013-01-01", "2013-01-20")
    clean = F.build_features(spec, {"flights": flights, "weather": weather, "planes": nyc["planes"]})
    poisoned_flights = flights.copy()
    later = (poisoned_flights["flight_date"] >= "2013-01-15").to_numpy()
    # Every flight from day D on "departed" and arrived 500 minutes late.
    poisoned_flights.loc[later, "arr_delay"] = 500.0
    poisoned_flights.loc[later, "dep_time"] = 900.0
    poisoned = F.build_features(spec, {"flights": poisoned_flights, "weather": weather, "planes": nyc["planes"]})

    day_d = (flights["flight_date"] == "2013-01-15").to_numpy()
    cols = [c for c in clean.columns if c != "delayed"]
    pd.testing.assert_frame_equal(clean.loc[day_d, cols], poisoned.loc[day_d, cols])
    # The poison is real: the day after sees day D's labels in its rates.
    day_after = (flights["flight_date"] == "2013-01-16").to_numpy()
    after_clean, after_poisoned = (
        clean.loc[day_after, "carrier_delay_rate"],
        poisoned.loc[day_after, "carrier_delay_rate"],
    )
    assert (after_poisoned >= after_clean).all()
    assert after_poisoned.mean() > after_clean.mean() + 0.01


def test_history_on_or_after_the_window_is_ignored(spec, nyc):
    flights, weather = days(nyc, "2013-01-10", "2013-01-12")
    history, _ = days(nyc, "2013-01-01", "2013-01-12")
    late = (history["flight_date"] >= "2013-01-10").to_numpy()
    history.loc[late, "arr_delay"] = 500.0
    a = F.build_features(spec, {"flights": flights, "weather": weather, "planes": nyc["planes"]}, history)
    b = F.build_features(spec, {"flights": flights, "weather": weather, "planes": nyc["planes"]}, history[~late])
    pd.testing.assert_frame_equal(a, b)


def test_a_feature_the_module_cannot_compute_is_refused(spec, nyc):
    flights, weather = days(nyc, "2013-01-01", "2013-01-01")
    bogus = FeatureSpec(name="gate_number", dtype="int", description="not in the data")
    with pytest.raises(F.FeatureError, match="gate_number"):
        F.build_features(
            spec.model_copy(update={"features": [*spec.features, bogus]}),
            {"flights": flights, "weather": weather, "planes": nyc["planes"]},
        )
    leak = FeatureSpec(name="arr_delay", dtype="float", description="the label")
    with pytest.raises(F.FeatureError, match="label"):
        F.build_features(
            spec.model_copy(update={"features": [*spec.features, leak]}),
            {"flights": flights, "weather": weather, "planes": nyc["planes"]},
        )


def test_a_spec_feature_that_is_a_weather_column_is_joined(spec, nyc):
    flights, weather = days(nyc, "2013-01-01", "2013-01-01")
    dewp = FeatureSpec(name="dewp", dtype="float", description="dew point", column="weather.dewp")
    df = F.build_features(
        spec.model_copy(update={"features": [*spec.features, dewp]}),
        {"flights": flights, "weather": weather, "planes": nyc["planes"]},
    )
    assert df["dewp"].notna().mean() > 0.9


def test_full_year_builds_in_seconds(spec, nyc):
    t0 = time.perf_counter()
    df = F.build_features(spec, {"flights": nyc["flights"], "weather": nyc["weather"], "planes": nyc["planes"]})
    assert len(df) == len(nyc["flights"]) == 336_776
    assert time.perf_counter() - t0 < 15


# -- materialised, versioned feature tables ------------------------------------------------------------
def test_materialize_writes_a_versioned_table_and_reuses_it(spec, lake):
    first = F.materialize_features(spec, lake, "2013-01-08", "2013-01-12", run_id="r1")
    assert not first.reused
    assert first.input_partitions == 12  # 5 window days + the 7 history days that exist
    assert lake.partitions("features", "flights") == [first.partition]
    df = F.read_feature_table(spec, lake, first.version)
    assert len(df) == first.rows
    assert sorted(df["flight_date"].unique()) == [f"2013-01-{d:02d}" for d in range(8, 13)]
    assert df.attrs["feature_version"] == first.version
    assert df["carrier_delay_rate"].notna().all()  # history before the window was read

    again = F.materialize_features(spec, lake, "2013-01-08", "2013-01-12")
    assert again.reused
    assert again.version == first.version
    assert again.rows == first.rows


@pytest.mark.parametrize("changed_day", ["2013-01-10", "2013-01-03", "2013-01-12"], ids=["window", "history", "last"])
def test_version_changes_when_an_input_partition_changes(spec, lake, nyc, changed_day):
    before = F.materialize_features(spec, lake, "2013-01-08", "2013-01-12")
    flights, weather = days(nyc, changed_day, changed_day)
    flights.loc[0, "arr_delay"] = 999.0
    tables = {"flights": flights, "weather": weather}
    lake.write_partition("validated", "flights", f"date={changed_day}", tables, source="test")
    after = F.materialize_features(spec, lake, "2013-01-08", "2013-01-12")
    assert after.version != before.version
    assert not after.reused


def test_version_ignores_partitions_outside_the_window_and_its_history(spec, lake, nyc):
    before = F.materialize_features(spec, lake, "2013-01-03", "2013-01-05")
    write_days(lake, nyc, "2013-01-13", "2013-01-14")
    after = F.materialize_features(spec, lake, "2013-01-03", "2013-01-05")
    assert after.version == before.version
    assert after.reused


def test_materialize_reports_missing_days_and_refuses_an_empty_window(spec, lake):
    lake.delete_partition("validated", "flights", "date=2013-01-10")
    r = F.materialize_features(spec, lake, "2013-01-08", "2013-01-12")
    assert r.missing_dates == ["2013-01-10"]
    with pytest.raises(F.FeatureError, match="no validated"):
        F.materialize_features(spec, lake, "2013-03-01", "2013-03-05")


def test_materialize_needs_the_reference_tables(spec, lake):
    lake.delete_partition("reference", "flights", "snapshot=current")
    with pytest.raises(F.FeatureError, match="reference"):
        F.materialize_features(spec, lake, "2013-01-08", "2013-01-12")
