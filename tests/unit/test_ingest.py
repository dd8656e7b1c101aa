"""Ingestion guards that need no Airflow: a refused upload is refused before the source is touched."""

from __future__ import annotations

from datetime import date

import pytest

from include.mlops import ingest
from include.mlops.sources import InputRefused
from include.mlops.storage import Lake


def test_refused_upload_reads_no_source_and_writes_nothing(spec, tmp_path, test_root):
    lake = Lake(str(tmp_path / "lake"))
    outside = test_root / "not-in-landing.csv"
    outside.write_text("flight_date\n2013-01-15\n")
    # an unreachable source: the refusal must come first, so this URL is never opened
    unreachable = f"sqlite:///{tmp_path}/missing-dir/none.db"
    with pytest.raises(InputRefused, match=r"^path_not_allowed: "):
        ingest.extract_to_raw(spec, lake, unreachable, date(2013, 1, 15), date(2013, 1, 16), source_uri=str(outside))
    assert not (tmp_path / "lake").exists()
    assert not (tmp_path / "missing-dir").exists()


def test_next_day_is_the_day_after_the_latest_ingested_one(spec, tmp_path):
    """Where the replay clock starts (`python -m include.mlops replay-from`) and what a manual ingest without a day
    covers: the spec's first day on an empty lake, else the day after the latest validated or quarantined day
    (a quarantined day was ingested too: its raw rows are kept), None once the time range is done."""
    import pandas as pd

    lake = Lake(str(tmp_path / "lake"))
    assert ingest.next_day(spec, lake) == spec.time.start
    one = {"t": pd.DataFrame({"a": [1]})}
    lake.write_partition("validated", spec.name, "date=2013-03-01", one, source="test")
    lake.write_partition("validated", spec.name, "date=2013-03-03", one, source="test")
    assert ingest.ingested_days(spec, lake) == [date(2013, 3, 1), date(2013, 3, 3)]
    assert ingest.next_day(spec, lake) == date(2013, 3, 4)
    lake.write_partition("quarantine", spec.name, "date=2013-03-04", one, source="test")
    assert ingest.next_day(spec, lake) == date(2013, 3, 5)
    lake.write_partition("validated", spec.name, f"date={spec.time.end}", one, source="test")
    assert ingest.next_day(spec, lake) is None
