"""The GX suite built from the spec, one expectation kind at a time, on real 2013 rows corrupted on purpose.

Every test validates one real day (2013-01-15: 894 flights, 72 weather rows) through ``validate_batch`` and
asserts what an operator would check: the status, which expectation failed on which table and target, the
counts, which rows were quarantined with which reasons, and that the valid rows exclude them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date

import pandas as pd
import pytest

from include.mlops.config import ExpectationSpec, Severity
from include.mlops.validation import (
    SplitResult,
    ValidationFailed,
    ValidationReport,
    derived_suite,
    expectation_kwargs,
    published_suite,
    suite_for,
    validate_batch,
)

DAY = "2013-01-15"
INTERVAL = (date(2013, 1, 15), date(2013, 1, 16))
NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
UNIQUE = "expect_compound_columns_to_be_unique"
ROW_COUNT = "expect_table_row_count_to_be_between"
COLUMNS = "expect_table_columns_to_match_set"
TYPES = "expect_column_values_to_be_in_type_list"


def real_day(nyc: dict[str, pd.DataFrame], day: str) -> dict[str, pd.DataFrame]:
    return {t: nyc[t][nyc[t]["flight_date"] == day].reset_index(drop=True) for t in ("flights", "weather")}


def validate(spec, tables, reference, interval=INTERVAL) -> SplitResult:
    return validate_batch(spec, tables, interval, reference, partition=f"date={interval[0]}", docs_dir=None)


def failures(report: ValidationReport) -> list[tuple[str, str, str, str]]:
    """(table, expectation, target, severity) of every failed outcome, criticals first."""
    return [(o.table, o.expectation, o.target, o.severity) for o in report.critical_failures + report.warnings]


def suite_size(spec, table: str) -> int:
    """Outcomes one table yields: its suite on the table, its derived checks, its checks of published rows."""
    reference = {"airlines": pd.DataFrame({"carrier": ["UA"]})}
    suite, published = suite_for(spec, table, INTERVAL, reference), published_suite(spec, table, INTERVAL, reference)
    return len(suite) + len(derived_suite(spec, table)) + len(published)


def reasons(quarantined: pd.DataFrame) -> list[list[str]]:
    return [json.loads(r) for r in quarantined["_reasons"]]


def other(table: str) -> str:
    return "weather" if table == "flights" else "flights"


@pytest.fixture(scope="module")
def reference(nyc) -> dict[str, pd.DataFrame]:
    return {t: nyc[t] for t in ("airlines", "airports", "planes")}


@pytest.fixture(scope="module")
def clean_day(nyc) -> dict[str, pd.DataFrame]:
    tables = real_day(nyc, DAY)
    assert {t: len(df) for t, df in tables.items()} == {"flights": 894, "weather": 72}
    return tables


@pytest.fixture
def batch(clean_day) -> dict[str, pd.DataFrame]:
    """A fresh copy of the real day, for a test to corrupt."""
    return {t: df.copy() for t, df in clean_day.items()}


@pytest.fixture(scope="module")
def clean_result(spec, clean_day, reference) -> SplitResult:
    return validate(spec, {t: df.copy() for t, df in clean_day.items()}, reference)


@pytest.fixture(scope="module")
def feb12(spec, nyc, reference) -> tuple[dict[str, pd.DataFrame], SplitResult]:
    tables = real_day(nyc, "2013-02-12")
    return tables, validate(
        spec, {t: df.copy() for t, df in tables.items()}, reference, (date(2013, 2, 12), date(2013, 2, 13))
    )


# -- real days ---------------------------------------------------------------------------------------
def test_clean_real_day_passes(spec, clean_result, clean_day):
    r = clean_result.report
    assert r.status == "passed"
    assert failures(r) == []
    assert len(r.outcomes) == suite_size(spec, "flights") + suite_size(spec, "weather")
    assert all(o.success and o.error is None for o in r.outcomes)
    assert r.rows_in == r.rows_valid == {"flights": 894, "weather": 72}
    assert r.rows_quarantined == {}
    for t, df in clean_day.items():
        assert clean_result.quarantined[t].empty
        pd.testing.assert_frame_equal(clean_result.valid[t], df)


def test_real_wind_speed_outlier_day_quarantines_only_that_row(feb12):
    tables, split = feb12
    r = split.report
    assert r.status == "warning"
    assert failures(r) == [("weather", BETWEEN, "wind_speed", "warning")]
    assert (r.warnings[0].element_count, r.warnings[0].unexpected_count) == (len(tables["weather"]), 1)
    q = split.quarantined["weather"]
    assert len(q) == 1
    assert q.loc[0, "wind_speed"] == pytest.approx(1048.36, abs=0.01)
    assert (q.loc[0, "origin"], q.loc[0, "hour"]) == ("EWR", 3)
    assert reasons(q) == [["weather.expect_column_values_to_be_between(wind_speed)"]]
    assert len(split.valid["weather"]) == len(tables["weather"]) - 1
    assert split.valid["weather"]["wind_speed"].max() < 150
    pd.testing.assert_frame_equal(split.valid["flights"], tables["flights"])
    assert split.quarantined["flights"].empty
    assert r.rows_quarantined == {"weather": 1}


def test_warning_summary_and_dict(feb12):
    r = feb12[1].report
    lines = r.summary().splitlines()
    assert lines == [
        "flights date=2013-02-12: validation warning - quarantined rows {'weather': 1}",
        "  [warning] weather.expect_column_values_to_be_between(wind_speed): 1 of 72 rows unexpected",
    ]
    d = r.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert [(f["table"], f["expectation"], f["unexpected_count"]) for f in d["failed"]] == [("weather", BETWEEN, 1)]


# -- schema: always critical -------------------------------------------------------------------------
SCHEMA_CASES = {
    "missing-column": (lambda f: f.drop(columns="tailnum"), ["tailnum"]),
    "renamed-column": (lambda f: f.rename(columns={"carrier": "airline"}), ["carrier"]),
    "extra-column": (lambda f: f.assign(wifi=True), []),
}


@pytest.fixture(scope="module")
def schema_results(spec, clean_day, reference) -> dict[str, tuple[pd.DataFrame, SplitResult]]:
    """Each schema corruption validated once (the renamed column also serves the error-reporting test)."""
    out = {}
    for case, (corrupt, _) in SCHEMA_CASES.items():
        tables = {t: df.copy() for t, df in clean_day.items()}
        tables["flights"] = corrupt(tables["flights"])
        out[case] = tables["flights"], validate(spec, tables, reference)
    return out


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_column_set_mismatch_fails_the_batch(schema_results, case):
    flights, split = schema_results[case]
    r = split.report
    assert r.status == "failed"
    # The type check of a column that is gone cannot be evaluated, so it fails too (critical).
    critical = [(o.table, o.expectation, o.target) for o in r.critical_failures]
    assert critical == [("flights", COLUMNS, "table")] + [("flights", TYPES, c) for c in SCHEMA_CASES[case][1]]
    assert set(r.critical_failures[0].observed) == set(flights.columns)
    assert r.rows_valid == {"flights": 0, "weather": 0}
    assert r.rows_quarantined == r.rows_in == {"flights": 894, "weather": 72}
    assert "[critical] flights.expect_table_columns_to_match_set(table)" in r.summary()


def _far(f: pd.DataFrame) -> pd.DataFrame:
    f["distance"] = f["distance"].astype(object)
    f.loc[[3, 7], "distance"] = "far"
    return f


@pytest.mark.parametrize(
    ("corrupt", "column"),
    [
        pytest.param(_far, "distance", id="float-with-strings"),
        pytest.param(
            lambda f: f.assign(sched_dep_time=f["sched_dep_time"].map("{:04d}".format)),
            "sched_dep_time",
            id="int-as-text",
        ),
    ],
)
def test_wrong_column_type_fails_the_batch(spec, reference, batch, corrupt, column):
    batch["flights"] = corrupt(batch["flights"])
    r = validate(spec, batch, reference).report
    assert r.status == "failed"
    assert [(o.table, o.expectation, o.target) for o in r.critical_failures] == [("flights", TYPES, column)]
    # On an object column GX checks each value with isinstance() against numpy scalar types, and a Python
    # float is not a numpy float64: every row of the column counts as unexpected, not only the 'far' ones.
    assert r.critical_failures[0].unexpected_count == 894
    assert r.rows_valid == {"flights": 0, "weather": 0}


def test_alternative_dtype_listed_in_type_lists_is_accepted(spec, reference, batch):
    # A source that parses timestamps (SQLAlchemy on a DATETIME column) hands over datetime64[ns].
    batch["flights"]["time_hour"] = pd.to_datetime(batch["flights"]["time_hour"]).dt.tz_localize(None)
    assert str(batch["flights"]["time_hour"].dtype) == "datetime64[ns]"
    r = validate(spec, batch, reference).report
    assert r.status == "passed", r.summary()


def test_nullable_and_tz_aware_dtypes_listed_in_type_lists_are_accepted(spec, reference, batch):
    f = batch["flights"]
    f["flight"] = f["flight"].astype("Int64")
    f["dep_time"] = f["dep_time"].astype("Float64")
    f["time_hour"] = pd.to_datetime(f["time_hour"], utc=True)
    r = validate(spec, batch, reference).report
    assert r.status == "passed", r.summary()


# -- row-level expectations: warning, only the offending rows are quarantined ------------------------
@pytest.mark.parametrize(
    ("table", "column", "corrupt", "expectation"),
    [
        pytest.param("flights", "carrier", {5: None, 50: None, 500: None}, NOT_NULL, id="carrier-null"),
        pytest.param("flights", "distance", {1: 0.0, 2: -10.0}, BETWEEN, id="distance-zero-and-negative"),
        pytest.param("flights", "air_time", {4: 2000.0}, BETWEEN, id="air_time-2000"),
        pytest.param("weather", "wind_speed", {10: 1048.36}, BETWEEN, id="wind_speed-1048mph"),
        pytest.param("flights", "origin", {8: "XXX", 9: "XXX"}, IN_SET, id="origin-not-nyc"),
        pytest.param("flights", "carrier", {8: "ZZ", 9: "ZZ"}, IN_SET, id="carrier-not-in-airlines"),
    ],
)
def test_row_level_failure_quarantines_exactly_the_offending_rows(
    spec, reference, batch, table, column, corrupt, expectation
):
    df = batch[table]
    for i, v in corrupt.items():
        df.loc[i, column] = v
    split = validate(spec, batch, reference)
    r = split.report
    assert r.status == "warning"
    assert failures(r) == [(table, expectation, column, "warning")]
    assert (r.warnings[0].element_count, r.warnings[0].unexpected_count) == (len(df), len(corrupt))
    rows = sorted(corrupt)
    q = split.quarantined[table]
    pd.testing.assert_frame_equal(q.drop(columns="_reasons"), df.loc[rows].reset_index(drop=True))
    assert reasons(q) == [[f"{table}.{expectation}({column})"]] * len(rows)
    pd.testing.assert_frame_equal(split.valid[table], df.drop(index=rows).reset_index(drop=True))
    pd.testing.assert_frame_equal(split.valid[other(table)], batch[other(table)])
    assert split.quarantined[other(table)].empty
    assert r.rows_quarantined == {table: len(rows)}
    assert r.rows_valid == {table: len(df) - len(rows), other(table): len(batch[other(table)])}


def test_carrier_set_comes_from_the_airlines_reference(spec, reference, batch):
    # UA is a real carrier; drop it from the reference table and every UA flight of the day is quarantined.
    airlines = reference["airlines"]
    split = validate(spec, batch, dict(reference, airlines=airlines[airlines["carrier"] != "UA"]))
    n_ua = int((batch["flights"]["carrier"] == "UA").sum())
    assert n_ua > 50
    assert failures(split.report) == [("flights", IN_SET, "carrier", "warning")]
    assert split.report.warnings[0].unexpected_count == n_ua
    assert set(split.quarantined["flights"]["carrier"]) == {"UA"}
    assert len(split.quarantined["flights"]) == n_ua
    assert "UA" not in set(split.valid["flights"]["carrier"])


def test_missing_reference_table_is_an_error(spec, batch):
    with pytest.raises(KeyError, match=r"airlines\.carrier"):
        validate(spec, batch, {})


@pytest.mark.parametrize(
    ("table", "dupes", "key"),
    [
        pytest.param("flights", [10, 20], ["flight_date", "carrier", "flight", "origin"], id="flights"),
        pytest.param("weather", [5], ["origin", "time_hour"], id="weather"),
    ],
)
def test_duplicated_keys_quarantine_every_copy(spec, reference, batch, table, dupes, key):
    df = pd.concat([batch[table], batch[table].loc[dupes]], ignore_index=True)
    batch[table] = df
    split = validate(spec, batch, reference)
    r = split.report
    assert failures(r) == [(table, UNIQUE, ",".join(key), "warning")]
    # GX marks a row unexpected when its key occurs more than once (pandas duplicated(keep=False)): the
    # original AND its copy are both quarantined, since nothing says which of the two is right. The flight
    # (or weather hour) is therefore absent from the valid rows, not deduplicated.
    copies = list(range(len(df) - len(dupes), len(df)))
    assert r.warnings[0].unexpected_count == 2 * len(dupes)
    q = split.quarantined[table]
    pd.testing.assert_frame_equal(q.drop(columns="_reasons"), df.loc[dupes + copies].reset_index(drop=True))
    assert reasons(q) == [[f"{table}.{UNIQUE}({','.join(key)})"]] * len(q)
    valid = split.valid[table]
    assert len(valid) == len(df) - 2 * len(dupes)
    assert not valid.merge(df.loc[dupes, key], on=key).shape[0]
    assert not valid.duplicated(key).any()


# -- batch-level expectations ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("table", "rows", "severity"),
    [
        pytest.param("flights", 100, Severity.critical, id="flights-100-rows-critical"),
        pytest.param("weather", 20, Severity.warning, id="weather-20-rows-warning"),
    ],
)
def test_row_count_out_of_bounds(spec, reference, batch, table, rows, severity):
    batch[table] = batch[table].head(rows)
    split = validate(spec, batch, reference)
    r = split.report
    # judged on the input and again on the rows that would be published (here the same rows)
    assert failures(r) == [(table, ROW_COUNT, t, severity.value) for t in ("table", "published")]
    counts = [o for o in r.outcomes if o.table == table and o.expectation == ROW_COUNT]
    assert [(o.success, o.observed) for o in counts] == [(False, rows)] * 2
    if severity is Severity.critical:
        assert r.status == "failed"
        assert r.rows_valid == {"flights": 0, "weather": 0}
        assert r.rows_quarantined == r.rows_in == {table: rows, other(table): len(batch[other(table)])}
    else:
        # A table-level warning names no rows: the short day is kept whole, flagged in the report.
        assert r.status == "warning"
        assert r.rows_quarantined == {}
        assert r.rows_valid == {table: rows, other(table): len(batch[other(table)])}
        assert split.quarantined[table].empty


@pytest.mark.parametrize("table", ["flights", "weather"])
def test_rows_outside_the_interval_fail_the_whole_batch(spec, reference, batch, table):
    batch[table].loc[[0, 1, 2], "flight_date"] = "2013-01-20"
    r = validate(spec, batch, reference).report
    assert r.status == "failed"
    assert failures(r)[0] == (table, IN_SET, "flight_date", "critical")
    # the date no longer agrees with the row's date parts and time_hour either (warnings, same rows)
    assert failures(r)[1:] == [
        (table, "rule", "date_parts_match_flight_date", "warning"),
        (table, "rule", "time_hour_is_local_date_and_hour", "warning"),
    ]
    assert (r.critical_failures[0].element_count, r.critical_failures[0].unexpected_count) == (len(batch[table]), 3)
    assert r.rows_valid == {"flights": 0, "weather": 0}
    assert r.rows_quarantined == r.rows_in == {"flights": 894, "weather": 72}


def test_missing_table_fails_the_batch_and_the_other_is_still_checked(spec, reference, batch):
    del batch["weather"]
    r = validate(spec, batch, reference).report
    assert r.status == "failed"
    assert failures(r) == [("weather", "table_present", "table", "critical")]
    assert r.critical_failures[0].error == "table missing"
    flights = [o for o in r.outcomes if o.table == "flights"]
    assert len(flights) == suite_size(spec, "flights")
    assert all(o.success for o in flights)
    assert r.rows_in == {"flights": 894}
    assert r.rows_valid == {"flights": 0}


def test_failed_summary_names_every_failure_with_counts_and_dict_is_json(spec, reference, batch):
    f, w = batch["flights"], batch["weather"]
    f.loc[[0, 1, 2], "flight_date"] = "2013-01-20"
    f.loc[[5, 50, 500], "carrier"] = None
    f.loc[[8, 9], "origin"] = "XXX"
    w.loc[10, "wind_speed"] = 1048.36
    r = validate(spec, batch, reference).report
    assert r.summary().splitlines() == [
        "flights date=2013-01-15: validation failed - whole batch quarantined",
        "  [critical] flights.expect_column_values_to_be_in_set(flight_date): 3 of 894 rows unexpected",
        "  [warning] flights.expect_column_values_to_not_be_null(carrier): 3 of 894 rows unexpected",
        "  [warning] flights.expect_column_values_to_be_in_set(origin): 2 of 894 rows unexpected",
        "  [warning] flights.rule(date_parts_match_flight_date): 3 of 894 rows unexpected",
        "  [warning] flights.rule(time_hour_is_local_date_and_hour): 3 of 894 rows unexpected",
        "  [warning] weather.expect_column_values_to_be_between(wind_speed): 1 of 72 rows unexpected",
    ]
    assert str(ValidationFailed(r)) == r.summary()
    d = r.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["status"] == "failed"
    assert [(x["target"], x["severity"], x["unexpected_count"]) for x in d["failed"]] == [
        ("flight_date", "critical", 3),
        ("carrier", "warning", 3),
        ("origin", "warning", 2),
        ("date_parts_match_flight_date", "warning", 3),
        ("time_hour_is_local_date_and_hour", "warning", 3),
        ("wind_speed", "warning", 1),
    ]
    assert len(d["outcomes"]) == suite_size(spec, "flights") + suite_size(spec, "weather")


# -- the suite itself --------------------------------------------------------------------------------
def test_suite_resolves_interval_and_reference(spec, reference):
    suite = suite_for(spec, "flights", (date(2013, 1, 30), date(2013, 2, 2)), reference)
    assert suite[0][:3] == (
        COLUMNS,
        {"column_set": list(spec.source.tables["flights"].columns), "exact_match": True},
        "critical",
    )
    by_target = {(t, kw.get("column")): kw for t, kw, *_ in suite}
    assert by_target[(IN_SET, "flight_date")]["value_set"] == ["2013-01-30", "2013-01-31", "2013-02-01"]
    assert by_target[(IN_SET, "carrier")]["value_set"] == sorted(reference["airlines"]["carrier"])
    assert all(sev == "critical" for t, _, sev, *_ in suite if t in (COLUMNS, TYPES))


def test_interval_end_inclusive_is_resolved():
    e = ExpectationSpec(
        table="flights",
        type=BETWEEN,
        kwargs={"column": "flight_date", "min_value": "$interval_start", "max_value": "$interval_end_inclusive"},
        severity=Severity.critical,
    )
    kw = expectation_kwargs(e, (date(2013, 1, 15), date(2013, 1, 18)), {})
    assert (kw["min_value"], kw["max_value"]) == ("2013-01-15", "2013-01-17")


def test_null_in_int_key_column_quarantines_only_those_rows(spec, reference, batch):
    batch["flights"].loc[[3, 4], "flight"] = None
    r = validate(spec, batch, reference).report
    assert r.status == "warning", r.summary()
    assert r.rows_quarantined == {"flights": 2}


def test_valid_rows_get_the_declared_int_dtype_back_once_null_rows_are_quarantined(spec, reference, batch):
    batch["flights"].loc[[3, 4], "flight"] = None  # the column reads as float64, as from a CSV with blanks
    split = validate(spec, batch, reference)
    assert split.valid["flights"]["flight"].dtype == "int64"
    assert split.valid["flights"]["flight"].tolist() == batch["flights"]["flight"].drop([3, 4]).astype(int).tolist()


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [
        pytest.param("flights", "time_hour", "yesterday", id="flights-time_hour-text"),
        pytest.param("flights", "time_hour", "2013-01-15T1", id="flights-time_hour-cut-off"),
        pytest.param("weather", "time_hour", "15/01/2013 06:00", id="weather-time_hour-not-iso"),
        pytest.param("flights", "flight_date", "2013-1-15", id="flights-flight_date-not-iso"),
    ],
)
def test_date_and_datetime_text_must_be_iso(spec, reference, batch, table, column, value):
    batch[table].loc[[0, 1], column] = value
    r = validate(spec, batch, reference).report
    assert r.status == "failed"
    failed = next(o for o in r.critical_failures if o.expectation == "expect_column_values_to_match_regex")
    assert (failed.table, failed.target, failed.unexpected_count) == (table, column, 2)


def test_expectation_on_a_missing_column_reports_its_error(schema_results):
    r = schema_results["renamed-column"][1].report
    not_null = next(o for o in r.outcomes if o.expectation == NOT_NULL and o.target == "carrier")
    assert not not_null.success
    assert not_null.error, not_null.describe()


def same_verdicts(a: ValidationReport, b: ValidationReport) -> bool:
    """Same outcome per expectation; failed ones with the same counts (GX's BOOLEAN_ONLY pass reports counts
    of passing expectations only sometimes, so those are not compared)."""
    assert [(o.reason, o.success) for o in a.outcomes] == [(o.reason, o.success) for o in b.outcomes]
    assert [asdict(o) for o in a.critical_failures + a.warnings] == [
        asdict(o) for o in b.critical_failures + b.warnings
    ]
    return True


def test_large_batch_in_chunks_of_whole_days_gives_the_same_result(spec, nyc, reference):
    """A batch over ``validation.chunk_rows`` is validated in chunks of whole days: same outcomes, counts,
    valid and quarantined rows as one pass, with offending rows in several chunks (incl. a duplicated key and
    a row whose day is missing)."""
    interval = (date(2013, 1, 1), date(2013, 2, 1))
    tables = {t: nyc[t][nyc[t]["flight_date"] < "2013-02-01"].reset_index(drop=True) for t in ("flights", "weather")}
    f = tables["flights"].copy()
    f["carrier"] = f["carrier"].astype(object)
    f.loc[[5, 12_000, 25_000], "carrier"] = None  # early, middle and late in the month
    f.loc[[100, 20_000], "distance"] = 0.0
    f.loc[15_000, "flight_date"] = None  # no day: validated with the first chunk, fails the critical checks
    f = pd.concat([f, f.loc[[26_000]]], ignore_index=True)  # a duplicated key late in the month
    tables["flights"] = f
    small = spec.model_copy(update={"validation": spec.validation.model_copy(update={"chunk_rows": 10_000})})
    whole = validate(spec, tables, reference, interval)
    chunked = validate(small, tables, reference, interval)
    assert len(f) > 2 * small.validation.chunk_rows
    assert same_verdicts(chunked.report, whole.report)
    assert chunked.report.status == "failed"
    by_reason = {o.reason: o for o in chunked.report.outcomes}
    assert by_reason["flights.expect_column_values_to_not_be_null(carrier)"].unexpected_count == 3
    assert by_reason["flights.expect_column_values_to_be_between(distance)"].unexpected_count == 2
    assert (
        by_reason["flights.expect_compound_columns_to_be_unique(flight_date,carrier,flight,origin)"].unexpected_count
        == 2
    )

    # Without the bad day the batch passes with warnings: the quarantined rows must be the same rows.
    f.loc[15_000, "flight_date"] = tables["flights"].loc[15_001, "flight_date"]
    no_rowcount = [e for e in spec.validation.expectations if e.type != "expect_table_row_count_to_be_between"]
    month = spec.model_copy(update={"validation": spec.validation.model_copy(update={"expectations": no_rowcount})})
    month_small = month.model_copy(update={"validation": month.validation.model_copy(update={"chunk_rows": 10_000})})
    whole, chunked = validate(month, tables, reference, interval), validate(month_small, tables, reference, interval)
    assert chunked.report.status == whole.report.status == "warning"
    assert same_verdicts(chunked.report, whole.report)
    assert chunked.report.rows_quarantined == whole.report.rows_quarantined
    for t in ("flights", "weather"):
        pd.testing.assert_frame_equal(chunked.valid[t], whole.valid[t])
        pd.testing.assert_frame_equal(chunked.quarantined[t], whole.quarantined[t])
    assert len(chunked.quarantined["flights"]) == 3 + 2 + 2


# -- issue 21: nothing bad gets through -------------------------------------------------------------
def test_a_day_whose_rows_are_all_quarantined_is_rejected_not_published_empty(spec, reference, batch):
    batch["flights"]["origin"] = "XXX"  # every row fails a warning expectation
    split = validate(spec, batch, reference)
    r = split.report
    assert r.status == "failed"
    assert [(o.expectation, o.target) for o in r.critical_failures] == [
        (ROW_COUNT, "published"),
        ("published_rows", "published"),
    ]
    published = [o for o in r.critical_failures if o.expectation == ROW_COUNT]
    assert published[0].observed == 0
    assert "[critical] flights.expect_table_row_count_to_be_between(published): observed 0" in r.summary()
    assert r.rows_valid == {"flights": 0, "weather": 0}
    assert all(len(v) == 0 for v in split.valid.values())


def test_a_day_shrinking_below_the_floor_after_quarantine_is_rejected(spec, reference, batch):
    f = batch["flights"]
    f.loc[f.index[:650], "distance"] = 0.0  # 894 - 650 = 244 left, the floor is 300
    r = validate(spec, batch, reference).report
    assert r.status == "failed"
    assert [(o.expectation, o.target, o.observed) for o in r.critical_failures] == [(ROW_COUNT, "published", 244)]
    # the input count itself was fine: only the published rows are short
    assert next(o for o in r.outcomes if o.expectation == ROW_COUNT and o.target == "table").success


def test_a_second_dataset_without_a_row_count_gets_the_neutral_floor(spec, reference, batch):
    no_count = [e for e in spec.validation.expectations if e.type != ROW_COUNT]
    bare = spec.model_copy(update={"validation": spec.validation.model_copy(update={"expectations": no_count})})
    batch["flights"]["carrier"] = None
    r = validate(bare, batch, reference).report
    assert [(o.expectation, o.target) for o in r.critical_failures] == [("published_rows", "published")]


def test_quarantine_may_empty_no_table_but_a_table_that_came_empty_is_legal(spec, reference, batch):
    batch["weather"]["origin"] = "XXX"  # every weather row fails a warning: the day's weather is broken
    r = validate(spec, batch, reference).report
    assert [(o.table, o.expectation, o.target) for o in r.critical_failures] == [
        ("weather", "published_rows", "published")
    ]
    batch["weather"] = batch["weather"].iloc[:0]  # the source has no weather that day (2013-12-31)
    r = validate(spec, batch, reference).report
    assert r.status == "warning"  # the spec's weather row count is a warning
    assert r.rows_valid == {"flights": 894, "weather": 0}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        pytest.param("2013-01-15T25:00:00Z", "hour 25", id="hour-25"),
        pytest.param("2013-02-30T10:00:00Z", "February 30", id="feb-30"),
        pytest.param("2013-01-15T10:61:00Z", "minute 61", id="minute-61"),
        pytest.param("2013-01-15T10:00:00", "no offset where the spec says utc", id="naive"),
        pytest.param("2013-01-15T05:00:00-05:00", "a non-zero offset where the spec says utc", id="offset"),
    ],
)
def test_datetime_text_that_is_no_real_utc_instant_is_quarantined(spec, reference, batch, value, why):
    batch["flights"].loc[[3, 4], "time_hour"] = value
    split = validate(spec, batch, reference)
    assert split.report.status == "warning", why
    assert failures(split.report) == [("flights", "instant", "time_hour", "warning")]
    assert reasons(split.quarantined["flights"]) == [["flights.instant(time_hour)"]] * 2
    assert len(split.valid["flights"]) == 892


def test_a_local_time_written_as_utc_breaks_the_local_date_and_hour_rule(spec, reference, batch):
    f = batch["flights"]
    local = pd.to_datetime(f.loc[[5, 6], "time_hour"], utc=True).dt.tz_convert("America/New_York")
    f.loc[[5, 6], "time_hour"] = local.dt.strftime("%Y-%m-%dT%H:%M:%SZ")  # 5 hours early, still "UTC"
    split = validate(spec, batch, reference)
    assert failures(split.report) == [("flights", "rule", "time_hour_is_local_date_and_hour", "warning")]
    assert len(split.quarantined["flights"]) == 2


def test_invalid_calendar_date_is_quarantined_and_the_batch_fails_the_interval(spec, reference, batch):
    batch["flights"].loc[[1], "flight_date"] = "2013-02-30"
    r = validate(spec, batch, reference).report
    assert r.status == "failed"
    assert ("flights", "instant", "flight_date", "warning") in failures(r)


@pytest.mark.parametrize("mode", ["utc", "offset", "local", "any"])
def test_timezone_semantics_parse_the_declared_way(mode):
    from include.mlops.validation import parse_instants

    values = pd.Series(["2013-03-10T02:30:00", "2013-03-10T07:30:00Z", "2013-03-10T03:30:00-04:00", None])
    parsed = parse_instants(values, "datetime", mode, "America/New_York")
    as_text = [None if pd.isna(v) else v.strftime("%H:%M") for v in parsed]
    expected = {
        "utc": [None, "07:30", None, None],  # only the explicit zero offset
        "offset": [None, "07:30", "07:30", None],  # any explicit offset, converted to UTC
        "local": [None, None, None, None],  # 02:30 does not exist on the DST night; offsets are refused
        "any": [None, "07:30", "07:30", None],  # undeclared: an offset, or wall-clock time (02:30 is not one)
    }
    assert as_text == expected[mode]
    later = parse_instants(pd.Series(["2013-03-10T04:30:00"]), "datetime", "local", "America/New_York")
    assert later.iloc[0].isoformat() == "2013-03-10T08:30:00+00:00"


def test_undeclared_timezone_semantics_take_an_offset_or_wall_clock_time(spec, reference, batch):
    from include.mlops.validation import timezone_mode

    flights = spec.source.tables["flights"]
    bare = flights.model_copy(update={"constraints": {}})
    assert timezone_mode(flights, "time_hour") == "utc"  # declared
    assert timezone_mode(bare, "time_hour") == "any"
    # a second dataset that declares nothing keeps its naive wall-clock timestamps (no row quarantined)
    tables = dict(spec.source.tables, flights=bare)
    undeclared = spec.model_copy(update={"source": spec.source.model_copy(update={"tables": tables})})
    rules = [r for r in spec.validation.rules if "time_hour" not in r.names]
    undeclared = undeclared.model_copy(update={"validation": spec.validation.model_copy(update={"rules": rules})})
    local = pd.to_datetime(batch["flights"]["time_hour"], utc=True).dt.tz_convert("America/New_York")
    batch["flights"]["time_hour"] = local.dt.strftime("%Y-%m-%dT%H:%M:%S")
    split = validate(undeclared, batch, reference)
    assert split.report.status == "passed", split.report.summary()
    assert split.valid["flights"]["time_hour"].tolist() == batch["flights"]["time_hour"].tolist()


def test_null_and_fraction_in_int_columns_are_quarantined_and_ints_stay_int64(spec, reference, batch):
    f = batch["flights"]
    f["month"] = f["month"].astype("float64")
    f.loc[[2, 3], "month"] = None  # as a Parquet upload with missing values reads
    f.loc[[7], "month"] = 1.5
    split = validate(spec, batch, reference)
    assert failures(split.report) == [
        ("flights", NOT_NULL, "month", "warning"),
        ("flights", "integral", "month", "warning"),
        ("flights", "rule", "date_parts_match_flight_date", "warning"),  # 1.5 is not January either
    ]
    assert len(split.quarantined["flights"]) == 3
    assert split.valid["flights"].dtypes.to_dict() == batch["flights"].dtypes.to_dict() | {"month": "int64"}


def test_infinite_numbers_and_nul_characters_are_quarantined(spec, reference, batch):
    f, w = batch["flights"], batch["weather"]
    f.loc[[1], "dep_delay"] = float("inf")
    f.loc[[2], "distance"] = float("-inf")
    f.loc[[3], "tailnum"] = "N1\x0023"
    w.loc[[4], "temp"] = float("inf")
    split = validate(spec, batch, reference)
    found = failures(split.report)
    assert ("flights", "finite", "dep_delay", "warning") in found
    assert ("flights", "finite", "distance", "warning") in found
    assert ("flights", "no_nul", "tailnum", "warning") in found
    assert ("weather", "finite", "temp", "warning") in found
    assert split.report.rows_quarantined == {"flights": 3, "weather": 1}
    for table in ("flights", "weather"):
        numbers = split.valid[table].select_dtypes("number")
        assert numbers.apply(lambda c: c.isin([float("inf"), float("-inf")]).sum()).sum() == 0
    assert not split.valid["flights"]["tailnum"].dropna().str.contains("\x00").any()


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        pytest.param("carrier", " UA", {"pattern", IN_SET}, id="padded-carrier"),
        pytest.param("carrier", "ua", {"pattern", IN_SET}, id="lower-case-carrier"),
        pytest.param("dest", "xyz", {"pattern"}, id="lower-case-dest"),
        pytest.param("dest", "IAH ", {"pattern"}, id="padded-dest"),
        pytest.param("tailnum", "n14228", {"pattern"}, id="lower-case-tailnum"),
        pytest.param("origin", "ewr", {"pattern", IN_SET}, id="lower-case-origin"),
    ],
)
def test_codes_must_match_their_declared_pattern(spec, reference, batch, column, value, expected):
    batch["flights"].loc[[8, 9], column] = value
    split = validate(spec, batch, reference)
    assert {(o.expectation, o.target) for o in split.report.warnings} == {(e, column) for e in expected}
    assert len(split.quarantined["flights"]) == 2
    assert value not in set(split.valid["flights"][column])


def _minutes_above_59(f):
    f.loc[[10], "sched_arr_time"] = 1175
    return [10], ["sched_arr_time_is_a_clock_time", "arr_delay_matches_times"]  # 11:75 is no time at all


def _arrival_a_day_after_departure(f):
    f.loc[[11], "arr_delay"] = f.loc[11, "arr_delay"] + 1440  # arr_delay_matches_times still holds mod 1440
    return [11], ["arr_delay_near_dep_delay"]


def _arrival_on_a_cancelled_flight(f):
    cancelled = f.index[f["dep_time"].isna()][0]
    f.loc[cancelled, "arr_time"] = 1200.0
    return [cancelled], ["cancelled_has_no_arrival"]


def put(rows: list[int], column: str, value):
    def corrupt(f: pd.DataFrame) -> None:
        f.loc[rows, column] = value

    return corrupt


@pytest.mark.parametrize(
    ("corrupt", "rule"),
    [
        pytest.param(put([1, 2], "day", 16), "date_parts_match_flight_date", id="day-not-the-date"),
        pytest.param(put([3], "month", 2), "date_parts_match_flight_date", id="month-not-the-date"),
        pytest.param(put([4, 5], "hour", 23), "hour_minute_match_sched_dep_time", id="hour-not-sched"),
        pytest.param(put([6], "minute", 99), "hour_minute_match_sched_dep_time", id="minute-not-sched"),
        pytest.param(put([7], "dep_delay", 30.0), "dep_delay_matches_times", id="dep-delay-not-times"),
    ],
)
def test_cross_field_rules_quarantine_inconsistent_rows(spec, reference, batch, corrupt, rule):
    before = batch["flights"].copy()
    corrupt(batch["flights"])
    changed = (batch["flights"].fillna(-1) != before.fillna(-1)).any(axis=1).sum()
    split = validate(spec, batch, reference)
    assert ("flights", "rule", rule, "warning") in failures(split.report)
    q = split.quarantined["flights"]
    assert len(q) == changed > 0
    assert all(f"flights.rule({rule})" in r for r in reasons(q))


@pytest.mark.parametrize("make", [_minutes_above_59, _arrival_a_day_after_departure, _arrival_on_a_cancelled_flight])
def test_cross_field_rules_on_times_and_cancellations(spec, reference, batch, make):
    rows, rules = make(batch["flights"])
    split = validate(spec, batch, reference)
    assert failures(split.report) == [("flights", "rule", rule, "warning") for rule in rules]
    assert reasons(split.quarantined["flights"]) == [sorted(f"flights.rule({rule})" for rule in rules)] * len(rows)


def test_a_rule_that_cannot_run_rejects_the_batch_with_its_name(spec, reference, batch):
    from include.mlops.config import RuleSpec

    broken = RuleSpec(table="flights", name="needs_a_method", expr="distance.no_such_method() > 0")
    bad = spec.model_copy(
        update={"validation": spec.validation.model_copy(update={"rules": [*spec.validation.rules, broken]})}
    )
    r = validate(bad, batch, reference).report
    assert r.status == "failed"
    (o,) = r.critical_failures
    assert (o.expectation, o.target) == ("rule", "needs_a_method")
    assert "could not be evaluated" in o.error


def test_published_frames_have_exactly_the_declared_dtypes(spec, reference, batch):
    f = batch["flights"]
    f["distance"] = f["distance"].round().astype("int64")  # a float column that arrived as int
    f["time_hour"] = pd.to_datetime(f["time_hour"], utc=True).dt.tz_convert("America/New_York")  # typed, local
    split = validate(spec, batch, reference)
    assert split.report.status == "passed", split.report.summary()
    declared = {"int": "int64", "float": "float64"}
    for table in ("flights", "weather"):
        cols = spec.source.tables[table].columns
        assert list(split.valid[table].columns) == list(cols)
        assert {c: str(t) for c, t in split.valid[table].dtypes.items()} == {
            c: declared.get(t, "object") for c, t in cols.items()
        }
    assert split.valid["flights"]["time_hour"].tolist() == real_time_hours(batch)


def real_time_hours(batch) -> list[str]:
    return pd.to_datetime(batch["flights"]["time_hour"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()


def test_data_docs_index_is_headed_with_its_context(tmp_path):
    from include.mlops.validation import Outcome, ValidationReport, add_docs_context

    (tmp_path / "index.html").write_text("<html><head><title>Data documentation</title></head><body><p>gx</p></body>")
    bad = Outcome("flights", "expect_column_values_to_not_be_null", "<b>dest</b>", "warning", False, 900, 3)
    report = ValidationReport("flights", "date=2013-01-24", [bad], {"flights": 900, "weather": 72})
    report.rows_valid, report.rows_quarantined = {"flights": 897, "weather": 72}, {"flights": 3}
    add_docs_context(str(tmp_path), report)
    page = (tmp_path / "index.html").read_text()
    assert "<title>Data Docs: flights 2013-01-24</title>" in page
    header = page[page.index("<body>") : page.index("<p>gx</p>")]
    assert "Validation of flights 2013-01-24: warning" in header
    assert "<tr><td>flights</td><td>900</td><td>897</td><td>3</td></tr>" in header
    assert "3 of 900 rows unexpected" in header
    assert "<b>dest</b>" not in header  # escaped
    assert "/mlops/health/flights" in header
