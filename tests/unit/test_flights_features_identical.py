"""The flights spec re-expressed in the declarative feature layer computes exactly what the hand-written
flights feature code computed before it (commit 85c8623): every column of a real month, bit for bit.

The fingerprints below were taken from that code's ``features_for_dates`` over March 2013 (with February as
history), on validated partitions written as the e2e fixtures write them. A column that moves by one ulp fails.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import pandas as pd

from include.mlops import features as F
from include.mlops.storage import Lake

ROWS = 28834
BEFORE = {
    "flight_date": ("object", "943c24719001df29"),
    "carrier": ("object", "b766ff57524859db"),
    "flight": ("int64", "2438ccdb6ac89720"),
    "origin": ("object", "b8441ef516b22a32"),
    "sched_dep_hour": ("int64", "b1456b3a83ed6076"),
    "weekday": ("int64", "d799518588bd3843"),
    "month": ("int64", "98a9286ac0eb7fdc"),
    "distance": ("float64", "4050dd8d2b2c0a0d"),
    "dest": ("object", "2a4f2aeb28e2f292"),
    "temp": ("float64", "1ddb75ffb67faf5d"),
    "humid": ("float64", "ed2d7c0df1459ab9"),
    "wind_speed": ("float64", "411db7f30fb9ca86"),
    "precip": ("float64", "97fbd657a62a992f"),
    "visib": ("float64", "803890dab78a235c"),
    "pressure": ("float64", "19e0dc7e44104b0c"),
    "plane_age": ("float64", "41b45394e74de115"),
    "route_delay_rate": ("float64", "ca2ca1a9fa966a60"),
    "carrier_delay_rate": ("float64", "2e0d77802fb5219d"),
    "origin_delay_rate": ("float64", "5a1caff46467adb1"),
    "delayed": ("float64", "ab4dfb588ca782f5"),
}


def fingerprint(col: pd.Series) -> tuple[str, str]:
    digest = hashlib.sha256(pd.util.hash_pandas_object(col, index=False).to_numpy().tobytes()).hexdigest()[:16]
    return str(col.dtype), digest


def test_flights_features_of_a_real_month_are_identical_to_the_hand_written_code(tmp_path, nyc, spec):
    lake = Lake(str(tmp_path / "lake"))
    day = date(2013, 2, 1)
    while day <= date(2013, 3, 31):
        tables = {}
        for t in ("flights", "weather"):
            rows = nyc[t][nyc[t]["flight_date"] == day.isoformat()].reset_index(drop=True)
            tables[t] = rows[list(spec.source.tables[t].columns)]
        lake.write_partition("validated", "flights", f"date={day}", tables, source="test")
        day += timedelta(days=1)
    ref = {k: nyc[k] for k in ("airlines", "airports", "planes")}
    lake.write_partition("reference", "flights", "snapshot=current", ref, source="test")

    df = F.features_for_dates(lake, spec, "2013-03-01", "2013-03-31")
    assert len(df) == ROWS
    assert list(df.columns) == list(BEFORE)
    assert {c: fingerprint(df[c]) for c in df.columns} == BEFORE
