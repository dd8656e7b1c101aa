"""Property (issue 21, class 3): whatever is done to a real day, anything published has exactly the declared
dtypes, reads back from the lake with them, and feature building does not crash on it.

Seeded random corruptions (1-4 per trial, of every kind the validation knows about) of real rows of 2013-01-15
go through ``validate_batch``; each trial that publishes is written to a lake, read back and featurised.
"""

from __future__ import annotations

import random
from datetime import date

import numpy as np
import pandas as pd
import pytest

from include.mlops.ingest import REFERENCE_PARTITION
from include.mlops.storage import Lake
from include.mlops.validation import validate_batch

INTERVAL = (date(2013, 1, 15), date(2013, 1, 16))
TRIALS = 16
DTYPES = {"int": "int64", "float": "float64"}


TEXT_VALUES = [None, "", " UA", "ua", "N1\x0023", "x" * 50, "2013-02-30", "2013-01-15T25:00:00Z", "2013-01-15T10:00"]


def corrupt(rng: random.Random, tables: dict[str, pd.DataFrame], spec) -> list[str]:
    """Apply 1-4 random corruptions in place; return what was done (for the failure message)."""
    done = []
    for _ in range(rng.randint(1, 4)):
        table = rng.choice(["flights", "flights", "weather"])
        df = tables[table]
        column, dtype = rng.choice(list(spec.source.tables[table].columns.items()))
        rows = rng.sample(range(len(df)), rng.randint(1, 5))
        if dtype in ("int", "float"):
            value = rng.choice([None, np.inf, -np.inf, 1.5, -1e12, 0, 99999])
            df[column] = df[column].astype("float64")
        else:
            value = rng.choice(TEXT_VALUES)
            df[column] = df[column].astype(object)
        df.loc[rows, column] = value
        done.append(f"{table}.{column}[{rows}] = {value!r}")
    return done


@pytest.fixture(scope="module")
def day(nyc, spec) -> dict[str, pd.DataFrame]:
    return {
        t: nyc[t][nyc[t]["flight_date"] == "2013-01-15"].reset_index(drop=True)[list(spec.source.tables[t].columns)]
        for t in ("flights", "weather")
    }


def test_anything_published_has_the_declared_dtypes_and_featurises(spec, nyc, day, tmp_path):
    from include.mlops import features

    reference = {t: nyc[t] for t in spec.source.reference}
    rng = random.Random(21)
    published = 0
    for trial in range(TRIALS):
        tables = {t: df.copy() for t, df in day.items()}
        done = corrupt(rng, tables, spec)
        split = validate_batch(spec, tables, INTERVAL, reference, partition="date=2013-01-15")
        if split.report.status == "failed":
            assert all(len(v) == 0 for v in split.valid.values()), done
            continue
        published += 1
        lake = Lake(str(tmp_path / f"lake{trial}"))
        lake.write_partition("validated", "flights", "date=2013-01-15", split.valid, source="test")
        lake.write_partition("reference", "flights", REFERENCE_PARTITION, reference, source="test")
        for table, declared in spec.source.tables.items():
            back = lake.read_table("validated", "flights", "date=2013-01-15", table)
            expected = {c: DTYPES.get(t, "object") for c, t in declared.columns.items()}
            assert {c: str(t) for c, t in back.dtypes.items()} == expected, done
            for c, t in declared.columns.items():
                if not declared.nullable(c):
                    assert back[c].notna().all(), (c, done)
                if t in ("int", "float"):
                    assert np.isfinite(back[c].dropna().to_numpy(dtype="float64")).all(), (c, done)
        table = features.features_for_dates(lake, spec, INTERVAL[0], INTERVAL[0])  # as training reads them
        assert len(table) == len(split.valid["flights"]), done
    assert published >= TRIALS // 3, "most trials should publish (only their bad rows quarantined)"
