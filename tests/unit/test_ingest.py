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
