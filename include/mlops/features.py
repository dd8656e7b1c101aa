"""Features: the label rule and every feature of the spec, computed in one place.

The spec's ``features`` list is the contract: :func:`build_features` returns exactly those columns (plus the
entity keys and the label), with the declared dtypes, and training, scoring and monitoring all call it, so a
feature cannot mean one thing at training time and another at scoring time.

How a spec feature is resolved, in order:

- a derived feature of this module (``sched_dep_hour``, ``weekday``, ``plane_age``, ``*_delay_rate``);
- a column of the primary (flights) table, passed through (``month``, ``distance``, ``carrier`` …);
- a column of the weather table, joined on origin + departure hour (``temp``, ``visib`` …).

Delay rates are point-in-time: a flight on day D sees only labelled flights of days D-28 … D-1, never its
own day. They are smoothed towards the global delay rate of the same 28 days (``PRIOR_STRENGTH`` pseudo
flights), so a route with no recent flights gets the global rate and a route with few gets a shrunk rate;
with no labelled history at all the rate is NaN (the models impute or treat it as missing).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from include.mlops.config import DatasetSpec

if TYPE_CHECKING:
    from include.mlops.storage import Lake

# Bump when the computation of any feature changes: it is part of every feature-table version.
FEATURE_CODE_VERSION = "1"
HISTORY_DAYS = 28
PRIOR_STRENGTH = 20.0
FEATURES_TABLE = "features"

_RATE_KEYS: dict[str, tuple[str, ...]] = {
    "route_delay_rate": ("origin", "dest"),
    "carrier_delay_rate": ("carrier",),
    "origin_delay_rate": ("origin",),
}
_DERIVED = {"sched_dep_hour", "weekday", "plane_age", *_RATE_KEYS}
_WEATHER_KEYS = ("origin", "time_hour")


class FeatureError(ValueError):
    """Features that cannot be built: an undeclared/unknown feature, missing inputs or columns."""


# -- label -------------------------------------------------------------------------------------------
_RULE = {"exclude": np.nan, "positive": 1.0, "negative": 0.0}


def label(spec: DatasetSpec, flights: pd.DataFrame) -> pd.Series:
    """The binary label per row: 1.0/0.0, NaN where the spec's cancelled/diverted rule says ``exclude``."""
    rule = spec.label
    missing = [c for c in (rule.column, rule.cancelled_when_null) if c not in flights.columns]
    if missing:
        raise FeatureError(f"label {rule.name!r} needs columns {missing}, not in {sorted(flights.columns)}")
    value = pd.to_numeric(flights[rule.column], errors="coerce")
    cancelled = flights[rule.cancelled_when_null].isna()
    diverted = ~cancelled & value.isna()
    out = (value > rule.threshold).astype("float64")
    out[cancelled.to_numpy()] = _RULE[rule.cancelled]
    out[diverted.to_numpy()] = _RULE[rule.diverted]
    return out.rename(rule.name)


# -- feature table -----------------------------------------------------------------------------------
def feature_columns(spec: DatasetSpec, *, with_label: bool = True) -> list[str]:
    """Columns of the feature table, in order: entity keys, then the spec's features, then the label."""
    cols = list(dict.fromkeys([*spec.entity_keys, spec.time.column, *spec.feature_names]))
    return [*cols, spec.label.name] if with_label else cols


def check_features(spec: DatasetSpec, flights_columns: set[str], weather_columns: set[str]) -> None:
    """Raise FeatureError when a spec feature is neither derived here nor a column of flights or weather."""
    problems = []
    for f in spec.features:
        if f.name in (spec.label.column, spec.label.name):
            problems.append(f"{f.name!r} is the label: it cannot be a feature")
        elif f.name not in _DERIVED and f.name not in flights_columns and f.name not in weather_columns:
            problems.append(f"{f.name!r} is not derived in features.py nor a column of flights or weather")
    if problems:
        raise FeatureError("spec features cannot be computed: " + "; ".join(problems))


def build_features(
    spec: DatasetSpec,
    flights: pd.DataFrame,
    weather: pd.DataFrame,
    planes: pd.DataFrame,
    history: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per flight (input order): entity keys + exactly ``spec.feature_names`` (+ label if known).

    ``history`` holds flights (same schema) of the days before ``flights``; only it and the earlier days
    of ``flights`` feed the delay rates of a day. History rows on or after the first flight date are
    ignored, because ``flights`` itself is the history of its later days.
    """
    wanted = spec.feature_names
    check_features(spec, set(flights.columns), set(weather.columns) - set(_WEATHER_KEYS))
    time_col = spec.time.column
    if not (isinstance(flights.index, pd.RangeIndex) and flights.index.start == 0 and flights.index.step == 1):
        flights = flights.reset_index(drop=True)  # (a copy: skipped when the index already is 0..n-1)
    days = _to_days(flights[time_col])
    cols: dict[str, Any] = {}

    if "sched_dep_hour" in wanted:
        cols["sched_dep_hour"] = flights["hour"].fillna(flights["sched_dep_time"] // 100)
    if "weekday" in wanted:
        cols["weekday"] = days.weekday
    if "plane_age" in wanted:
        built = planes.drop_duplicates("tailnum", keep="last").set_index("tailnum")["year"]
        cols["plane_age"] = flights["year"] - flights["tailnum"].map(built).astype("float64")
    weather_wanted = [n for n in wanted if n not in _DERIVED and n not in flights.columns]
    if weather_wanted:
        cols.update(_join_weather(flights, weather, weather_wanted))
    rates_wanted = [n for n in wanted if n in _RATE_KEYS]
    if rates_wanted:
        cols.update(_delay_rates(spec, flights, days, history, rates_wanted))

    data: dict[str, Any] = {key: flights[key] for key in spec.entity_keys}
    data[time_col] = _day_text(days)
    dtypes = {f.name: f.dtype for f in spec.features}
    for name in wanted:  # each intermediate is dropped once cast: at 10 M rows each is ~80 MB
        data[name] = _cast(name, cols.pop(name) if name in cols else flights[name], dtypes[name])
    if spec.label.column in flights.columns:
        data[spec.label.name] = label(spec, flights).to_numpy()
    # Columns set one by one, in the table's order: neither a consolidating copy of the whole table nor a
    # copy for a final column selection (together 2x the table's size at peak).
    out = pd.DataFrame(index=flights.index)
    for c in feature_columns(spec, with_label=spec.label.column in flights.columns):
        out[c] = data.pop(c)
    return out


def _to_days(values: pd.Series) -> pd.DatetimeIndex:
    # Parse each distinct date once: a year of flights has 365 distinct values and 336k rows.
    codes, uniques = pd.factorize(values)
    if (codes < 0).any():
        raise FeatureError(f"time column {values.name!r} has {(codes < 0).sum()} null values")
    parsed = pd.to_datetime(pd.Index(uniques).astype(str).str.slice(0, 10), format="%Y-%m-%d")
    return parsed[codes]


def _day_text(days: pd.DatetimeIndex) -> np.ndarray:
    """ISO day per row, one shared str per distinct day (strftime per row makes 10 M new strings at 30x)."""
    codes, uniques = pd.factorize(days)
    return pd.Index(uniques).strftime("%Y-%m-%d").to_numpy(dtype=object)[codes]


def _to_hours(values: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(values)
    parsed = pd.to_datetime(pd.Index(uniques).astype(str), utc=True, format="ISO8601").to_numpy()
    out = parsed[codes]
    out[codes < 0] = np.datetime64("NaT")
    return out


def _join_weather(flights: pd.DataFrame, weather: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    # The flight's time_hour is its scheduled departure hour (UTC), the same clock the stations report on.
    missing = [c for c in (*_WEATHER_KEYS, *names) if c not in weather.columns]
    if missing:
        raise FeatureError(f"weather table lacks columns {missing}")
    w = pd.DataFrame({"origin": weather["origin"].to_numpy(), "th": _to_hours(weather["time_hour"])})
    for n in names:
        w[n] = pd.to_numeric(weather[n], errors="coerce").to_numpy()
    w = w.drop_duplicates(["origin", "th"], keep="last")
    left = pd.DataFrame({"origin": flights["origin"].to_numpy(), "th": _to_hours(flights["time_hour"])})
    joined = left.merge(w, on=["origin", "th"], how="left", validate="many_to_one")
    return {n: joined[n].to_numpy() for n in names}


def _delay_rates(
    spec: DatasetSpec,
    flights: pd.DataFrame,
    days: pd.DatetimeIndex,
    history: pd.DataFrame | None,
    names: list[str],
) -> dict[str, np.ndarray]:
    needed = sorted({k for n in names for k in _RATE_KEYS[n]})
    events = [pd.DataFrame({"day": days, **{k: flights[k].to_numpy() for k in needed}, "y": label(spec, flights)})]
    if history is not None and len(history):
        h_days = _to_days(history[spec.time.column])
        keep = np.asarray(h_days < days.min())
        h = history.loc[keep]
        events.append(
            pd.DataFrame({"day": h_days[keep], **{k: h[k].to_numpy() for k in needed}, "y": label(spec, h).to_numpy()})
        )
    ev = pd.concat(events, ignore_index=True)
    ev = ev[ev["y"].notna()]
    start = min(ev["day"].min(), days.min()) if len(ev) else days.min()
    calendar = pd.date_range(start, days.max(), freq="D")
    row = np.asarray((days - calendar[0]).days)

    def window(group: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.Index]:
        # Daily labelled counts and positives per group, summed over the HISTORY_DAYS days before each day.
        g = ev.groupby([ev["day"], group])["y"].agg(["count", "sum"])
        n = g["count"].unstack().reindex(calendar).fillna(0.0)
        pos = g["sum"].unstack().reindex(calendar).fillna(0.0)
        roll = {"min_periods": 1}
        n = n.rolling(HISTORY_DAYS, **roll).sum().shift(1).fillna(0.0)
        pos = pos.rolling(HISTORY_DAYS, **roll).sum().shift(1).fillna(0.0)
        return n.to_numpy(), pos.to_numpy(), n.columns

    all_n, all_pos, _ = window(pd.Series("all", index=ev.index))
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = np.where(all_n[:, 0] > 0, all_pos[:, 0] / np.maximum(all_n[:, 0], 1), np.nan)[row]

    out = {}
    for name in names:
        keys = _RATE_KEYS[name]
        group = _group_key(ev, keys)
        n, pos, columns = window(group)
        col = columns.get_indexer(_group_key(flights, keys))
        seen = col >= 0
        n_f = np.where(seen, n[row, np.where(seen, col, 0)], 0.0)
        pos_f = np.where(seen, pos[row, np.where(seen, col, 0)], 0.0)
        out[name] = (pos_f + PRIOR_STRENGTH * prior) / (n_f + PRIOR_STRENGTH)
    return out


def _group_key(df: pd.DataFrame, keys: tuple[str, ...]) -> pd.Series:
    """``"<k1>|<k2>|..."`` per row, as text. Built once per distinct combination and shared by its rows: a
    concatenation per row makes a new string per row (10 M flights: ~0.6 GB per key, twice per rate)."""
    sub = df[list(keys)]
    codes = sub.groupby(list(keys), sort=False, dropna=False).ngroup().to_numpy()
    firsts = sub.drop_duplicates()  # the combinations in order of first appearance, as ngroup numbers them
    labels = firsts[keys[0]].astype(str).to_numpy()
    for k in keys[1:]:
        labels = labels + "|" + firsts[k].astype(str).to_numpy()
    return pd.Series(labels[codes], index=df.index)


def _cast(name: str, values: Any, dtype: str) -> pd.Series:
    s = pd.Series(values) if not isinstance(values, pd.Series) else values.reset_index(drop=True)
    if dtype == "int":
        if s.isna().any():
            raise FeatureError(f"int feature {name!r} has {int(s.isna().sum())} missing values")
        return s.astype("int64")
    if dtype == "float":
        return pd.to_numeric(s, errors="coerce").astype("float64")
    # Categories are stored as plain strings: stable across partitions, Parquet and MLflow signatures.
    return s.astype(str).where(s.notna(), None).astype(object)


# -- the materialised feature table --------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureTableResult:
    """A feature-table version in the lake (``features/<dataset>/version=<hash>``)."""

    dataset: str
    version: str
    partition: str
    uri: str
    start: str
    end: str
    rows: int
    labelled_rows: int
    positive_rate: float | None
    input_partitions: int
    missing_dates: list[str] = field(default_factory=list)
    reused: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A plain dict for XCom."""
        return asdict(self)


def feature_spec_hash(spec: DatasetSpec) -> str:
    """Hash of the parts of the spec that define the feature table (not gates, search spaces, …)."""
    part = spec.model_dump(mode="json", include={"name", "time", "entity_keys", "label", "features"})
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


def _as_date(d: date | str) -> date:
    return d if isinstance(d, date) else date.fromisoformat(str(d)[:10])


def _date_partitions(lake: Lake, spec: DatasetSpec, first: date, last: date) -> list[str]:
    lo, hi = f"date={first.isoformat()}", f"date={last.isoformat()}"
    return [p for p in lake.partitions("validated", spec.name) if p.startswith("date=") and lo <= p <= hi]


def feature_version(lake: Lake, spec: DatasetSpec, start: date | str, end: date | str) -> tuple[str, list[str]]:
    """The content version of the feature table of [start, end] and the input partitions it covers."""
    start, end = _as_date(start), _as_date(end)
    parts = _date_partitions(lake, spec, start - timedelta(days=HISTORY_DAYS), end)
    inputs = {}
    for p in parts:
        m = lake.manifest("validated", spec.name, p)
        if m is not None:
            inputs[p] = m.sha256
    ref = lake.manifest("reference", spec.name, "snapshot=current")
    payload = {
        "code": FEATURE_CODE_VERSION,
        "spec": feature_spec_hash(spec),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "inputs": inputs,
        "reference": ref.sha256 if ref else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20], sorted(inputs)


def features_for_dates(lake: Lake, spec: DatasetSpec, start: date | str, end: date | str) -> pd.DataFrame:
    """Build (without writing) the features of the validated days in [start, end], history included."""
    start, end = _as_date(start), _as_date(end)
    primary = spec.source.primary_table
    parts = _date_partitions(lake, spec, start - timedelta(days=HISTORY_DAYS), end)
    window = [p for p in parts if p >= f"date={start.isoformat()}"]
    if not window:
        raise FeatureError(f"no validated {spec.name} partitions between {start} and {end}")
    hist = [p for p in parts if p not in window]
    flights = _read_many(lake, spec.name, window, primary)
    weather = _read_many(lake, spec.name, window, "weather")
    history = _read_many(lake, spec.name, hist, primary) if hist else None
    if lake.manifest("reference", spec.name, "snapshot=current") is None:
        raise FeatureError(f"reference/{spec.name}/snapshot=current does not exist: ingest the reference tables")
    planes = lake.read_table("reference", spec.name, "snapshot=current", "planes")
    return build_features(spec, flights, weather, planes, history)


def _read_many(lake: Lake, dataset: str, parts: list[str], table: str) -> pd.DataFrame:
    from concurrent.futures import ThreadPoolExecutor

    # Partitions are small files; reading them in parallel hides per-file latency on object stores.
    with ThreadPoolExecutor(max_workers=8) as pool:
        frames = list(pool.map(lambda p: lake.read_table("validated", dataset, p, table), parts))
    return pd.concat(frames, ignore_index=True)


def materialize_features(
    spec: DatasetSpec, lake: Lake, start: date | str, end: date | str, *, run_id: str | None = None
) -> FeatureTableResult:
    """Write the feature table of [start, end] to ``features/<dataset>/version=<hash>`` (reused if present).

    The version hashes the input partitions' content (the window and its 28 days of history, and the
    reference snapshot), ``FEATURE_CODE_VERSION`` and the feature part of the spec: same inputs, same version.
    """
    t0 = time.perf_counter()
    start, end = _as_date(start), _as_date(end)
    if end < start:
        raise FeatureError(f"end {end} is before start {start}")
    version, inputs = feature_version(lake, spec, start, end)
    partition = f"version={version}"
    uri = lake.uri(lake.partition_path("features", spec.name, partition))
    existing = lake.manifest("features", spec.name, partition)
    if existing is not None:
        seconds = round(time.perf_counter() - t0, 3)
        return FeatureTableResult(**{**existing.extra["result"], "uri": uri, "reused": True, "seconds": seconds})

    df = features_for_dates(lake, spec, start, end)
    window_days = {(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)}
    y = df[spec.label.name] if spec.label.name in df.columns else pd.Series(dtype="float64")
    result = FeatureTableResult(
        dataset=spec.name,
        version=version,
        partition=partition,
        uri=uri,
        start=start.isoformat(),
        end=end.isoformat(),
        rows=len(df),
        labelled_rows=int(y.notna().sum()),
        positive_rate=round(float(y.mean()), 6) if y.notna().any() else None,
        input_partitions=len(inputs),
        missing_dates=sorted(window_days - set(df[spec.time.column].unique())),
    )
    extra = {
        "result": result.as_dict(),
        "feature_code_version": FEATURE_CODE_VERSION,
        "feature_spec_hash": feature_spec_hash(spec),
        "inputs": inputs,
        "features": spec.feature_names,
        "label": spec.label.name,
    }
    lake.write_partition(
        "features",
        spec.name,
        partition,
        {FEATURES_TABLE: df},
        source="features.materialize_features",
        run_id=run_id,
        extra=extra,
    )
    return FeatureTableResult(**{**result.as_dict(), "seconds": round(time.perf_counter() - t0, 3)})


def read_feature_table(spec: DatasetSpec, lake: Lake, version: str) -> pd.DataFrame:
    """A materialised feature table; ``df.attrs`` carries its version and URI for lineage."""
    partition = version if version.startswith("version=") else f"version={version}"
    df = lake.read_table("features", spec.name, partition, FEATURES_TABLE)
    df.attrs["feature_version"] = partition.removeprefix("version=")
    df.attrs["feature_uri"] = lake.uri(lake.partition_path("features", spec.name, partition))
    return df
