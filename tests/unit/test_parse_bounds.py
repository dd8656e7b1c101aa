"""Bounded cost for any upload (issue 21, class 6): a CSV's header, line count and NUL bytes, a Parquet file's
footer (columns, rows, uncompressed size) are judged before pandas parses anything, each with a named reason;
and every task of every DAG has an ``execution_timeout`` from the spec."""

from __future__ import annotations

import io
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.mlops.sources import HEADER_BYTES, parse_upload


@pytest.fixture(scope="module")
def day(nyc, spec) -> pd.DataFrame:
    f = nyc["flights"]
    return f[f["flight_date"] == "2013-01-15"].reset_index(drop=True)[list(spec.source.tables["flights"].columns)]


@pytest.fixture(scope="module")
def columns(spec) -> dict[str, str]:
    return spec.source.tables["flights"].columns


def parse(data: bytes, fmt: str, columns, **limits):
    return parse_upload(fmt, data, columns, **limits)


def test_a_megabyte_without_a_line_break_is_refused_at_once(columns):
    data = b",".join(b"c%d" % i for i in range(150_000))  # ~1 MB of header: took 114 s to reject before
    assert len(data) > 2**20 - 200_000
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=rf"^header_too_long: no line break in the first {HEADER_BYTES:,} bytes"):
        parse(data, "csv", columns)
    assert time.perf_counter() - t0 < 1.0


def test_a_header_far_wider_than_declared_is_refused_unparsed(columns, day):
    wide = ",".join(list(columns) + [f"extra{i}" for i in range(200)])
    data = (wide + "\n" + ",".join(["1"] * (len(columns) + 200)) + "\n").encode()
    with pytest.raises(ValueError, match=r"^header_too_wide: the header has 220 fields, the spec declares 20"):
        parse(data, "csv", columns)


def test_one_extra_column_still_reaches_validation(columns, day):
    # a column or two too many is validation's to name (expect_table_columns_to_match_set), not the parser's
    df = parse(day.assign(gate="B12").to_csv(index=False).encode(), "csv", columns)
    assert list(df.columns) == [*columns, "gate"]


def test_a_wide_data_row_is_a_named_error_quickly(columns, day):
    text = day.to_csv(index=False)
    data = (text + ",".join(["9"] * 200_000) + "\n").encode()
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"^unreadable_file: "):
        parse(data, "csv", columns)
    assert time.perf_counter() - t0 < 5.0


def test_a_nul_byte_in_a_csv_is_refused_with_its_line(columns, day):
    text = day.to_csv(index=False)
    lines = text.splitlines(keepends=True)
    lines[3] = lines[3].replace(",N", ",N\x00", 1)
    with pytest.raises(ValueError, match=r"^nul_byte: a NUL byte at line 4$"):
        parse("".join(lines).encode(), "csv", columns)


def test_csv_rows_over_the_limit_are_refused(columns, day):
    with pytest.raises(ValueError, match=r"^too_many_rows: 894 rows, limit 500 \(source.max_file_rows\)"):
        parse(day.to_csv(index=False).encode(), "csv", columns, max_rows=500)
    assert len(parse(day.to_csv(index=False).encode(), "csv", columns, max_rows=894)) == 894


def test_declared_text_columns_of_a_csv_are_read_as_text(columns, day):
    codes = day.head(3).assign(carrier=["09", "9E", "00"], flight_date="2013-01-15")
    df = parse(codes.to_csv(index=False).encode(), "csv", columns)
    assert df["carrier"].tolist() == ["09", "9E", "00"]


def parquet(table: pa.Table, **kw) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", **kw)
    return buf.getvalue()


def test_parquet_rows_over_the_limit_are_refused_from_the_footer(columns, day):
    data = parquet(pa.Table.from_pandas(day, preserve_index=False))
    with pytest.raises(ValueError, match=r"^too_many_rows: 894 rows, limit 100"):
        parse(data, "parquet", columns, max_rows=100)


def test_a_small_parquet_holding_millions_of_rows_is_refused_unread(columns):
    # 3 M rows of one repeated value: a few kB compressed, 24 MB uncompressed
    column = pa.array([2013] * 3_000_000, type=pa.int64())
    data = parquet(pa.table({"year": column}), row_group_size=1_000_000)
    assert len(data) < 100_000
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"^too_large_uncompressed: .* MiB uncompressed, limit 1 MiB"):
        parse(data, "parquet", columns, max_uncompressed_mb=1)
    with pytest.raises(ValueError, match=r"^too_many_rows: 3,000,000 rows"):
        parse(data, "parquet", columns, max_rows=1_000_000)
    assert time.perf_counter() - t0 < 1.0


def test_a_parquet_with_thousands_of_columns_is_refused_from_the_footer(columns):
    data = parquet(pa.table({f"c{i}": pa.array([1]) for i in range(500)}))
    with pytest.raises(ValueError, match=r"^header_too_wide: 500 columns, the spec declares 20"):
        parse(data, "parquet", columns)


@pytest.mark.parametrize("approval", [False, True], ids=["shipped-specs", "with-approval"])
def test_every_task_of_every_dag_has_an_execution_timeout_from_the_spec(spec, approval, tmp_path):
    import yaml

    from include.mlops.config import SPEC_DIR, load_spec
    from tests.e2e.conftest import dagbag

    spec_dir = None
    if approval:  # the approve step (human in the loop) exists only when the spec asks for it
        raw = yaml.safe_load((SPEC_DIR / "flights.yaml").read_text())
        raw["gate"]["require_approval"] = True
        (tmp_path / "flights.yaml").write_text(yaml.safe_dump(raw))
        spec_dir = tmp_path
    bag = dagbag(spec_dir)
    assert bag.dags
    assert ("approve" in bag.dags["flights_train"].task_ids) == approval
    for dag_id, dag in bag.dags.items():
        dataset, kind = dag_id.rsplit("_", 1)
        expected = load_spec(dataset, spec_dir).timeouts.execution_timeout(kind)
        for task in dag.tasks:
            if hasattr(task, "response_timeout"):  # a human-in-the-loop wait (approve): not an execution
                assert task.execution_timeout is None, (dag_id, task.task_id)
                assert task.response_timeout is None, (dag_id, task.task_id)
                continue
            assert task.execution_timeout == expected, (dag_id, task.task_id)
    assert spec.timeouts.execution_timeout("ingest").total_seconds() == 3600
    assert spec.timeouts.execution_timeout("train").total_seconds() == 4 * 3600


def test_a_csv_with_a_byte_order_mark_keeps_its_first_column_name(columns, day):
    df = parse(b"\xef\xbb\xbf" + day.to_csv(index=False).encode(), "csv", columns)
    assert list(df.columns) == list(columns)
