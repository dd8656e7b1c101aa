"""Issue 21 through the ingest library path the DAG calls (extract_to_raw, validate_raw) on a scratch lake:
a day that would be published nearly empty is rejected and the earlier validated partition kept; a rejected
re-upload never removes the raw data that partition was validated from."""

from __future__ import annotations

import uuid
from datetime import date

import pytest

from include.mlops import ingest, validation
from include.mlops.storage import Lake

DAY, END = date(2013, 1, 15), date(2013, 1, 16)


@pytest.fixture
def validated_day(tmp_path, spec, source_db):
    """A scratch lake with 2013-01-15 extracted and validated from the source, as a scheduled run leaves it."""
    lake = Lake(str(tmp_path / "lake"))
    ingest.extract_to_raw(spec, lake, source_db, DAY, END, run_id="scheduled")
    assert ingest.validate_raw(spec, lake, DAY, END, run_id="scheduled", build_docs=False)["status"] == "passed"
    return lake


def upload(landing, name: str, data: bytes) -> str:
    path = landing / f"{uuid.uuid4().hex}-{name}"
    path.write_bytes(data)
    return str(path)


def reupload(spec, lake, source_db, uri: str):
    ingest.extract_to_raw(spec, lake, source_db, DAY, END, run_id="manual", source_uri=uri)
    return ingest.validate_raw(spec, lake, DAY, END, run_id="manual", build_docs=False)


def test_a_reupload_whose_rows_all_fail_a_warning_is_rejected_and_the_good_day_kept(
    spec, nyc, validated_day, source_db, landing
):
    lake = validated_day
    before = lake.manifest("validated", "flights", "date=2013-01-15")
    rows = nyc["flights"][nyc["flights"]["flight_date"] == "2013-01-15"][list(spec.source.tables["flights"].columns)]
    uri = upload(landing, "all-bad.csv", rows.assign(origin="XXX").to_csv(index=False).encode())
    with pytest.raises(validation.ValidationFailed, match=r"expect_table_row_count_to_be_between\(published\)"):
        reupload(spec, lake, source_db, uri)
    assert lake.manifest("validated", "flights", "date=2013-01-15") == before
    reasons = lake.read_blob("quarantine", "flights", "date=2013-01-15", "reasons.json").decode()
    assert "[critical] flights.published_rows(published)" in reasons


@pytest.mark.parametrize("bad", [b"", b"carrier\nUA\n", b"carrier\nU\x00A\n"])
def test_a_rejected_reupload_keeps_the_raw_behind_the_validated_partition(spec, validated_day, source_db, landing, bad):
    lake = validated_day
    validated = lake.manifest("validated", "flights", "date=2013-01-15")
    with pytest.raises((validation.ValidationFailed, ingest.InputRejected)):
        reupload(spec, lake, source_db, upload(landing, "bad.csv", bad))
    raw_now = lake.manifest("raw", "flights", "date=2013-01-15")
    assert raw_now.sha256 != validated.extra["raw_sha256"]  # the day's current raw is the rejected upload ...
    behind = lake.manifest_version("raw", "flights", "date=2013-01-15", validated.extra["raw_sha256"])
    assert behind is not None  # ... and the raw the validated partition came from is still there, whole
    assert behind.sha256 == validated.extra["raw_sha256"]
    for table in ("flights", "weather"):
        assert len(lake.read_version(behind, table)) == behind.files[table].rows > 0
    assert lake.manifest("validated", "flights", "date=2013-01-15") == validated
