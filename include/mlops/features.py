"""Features: the label rule and every feature of the spec, computed by one dataset-neutral engine.

The spec's ``features`` list is the contract: :func:`build_features` returns exactly those columns (plus the
entity keys and the label), with the declared dtypes, and training, scoring, monitoring and serving all call it,
so a feature cannot mean one thing at training time and another at scoring time. The engine knows no dataset:
each feature is declared in the spec as one of these kinds (config.FeatureSpec):

- ``column`` — a column of the primary table passed through, or ``<join>.<column>`` of a declared join;
- ``calendar`` — hour, minute, weekday, is_weekend, day, month, year, day_of_year or week of a date/datetime
  column (datetimes read in the spec's ``time.timezone``);
- ``expr`` — arithmetic over columns and joined columns (``year - plane.year``), parsed, never ``eval``-ed;
- ``window`` — a point-in-time aggregate (rate of positive labels, mean, sum or count) per ``by`` group over the
  ``days`` days strictly before the row's day, optionally smoothed towards the same days' overall value with
  ``prior`` pseudo rows; a row never sees its own day, so a label cannot leak into its own features;
- ``function`` — a function of the dataset's own ``module`` (TFX's ``preprocessing_fn`` seam), called as
  ``fn(primary, tables)`` with the typed primary rows and every table by name; it returns one value per row.
  Its module's source is part of the feature version.

Joins (``spec.joins``) match each primary row to one row of another source table (same days) or a reference
table, on exact keys, or as of a time (the latest row at or before it, per the keys).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from include.mlops.config import DatasetSpec, FeatureSpec, JoinSpec

if TYPE_CHECKING:
    from include.mlops.storage import Lake

# Bump when the computation of any feature kind changes: it is part of every feature-table version.
FEATURE_CODE_VERSION = "2"
FEATURES_TABLE = "features"


class FeatureError(ValueError):
    """Features that cannot be built: a spec the engine cannot compute, missing tables, columns or keys."""


# -- label -------------------------------------------------------------------------------------------
_RULE = {"exclude": np.nan, "positive": 1.0, "negative": 0.0}


def _in_set(values: pd.Series, allowed: list[Any]) -> np.ndarray:
    # Values compare as declared (numbers as numbers) and as text, so a YAML 1 matches a "1" read from CSV.
    return np.asarray(values.isin(allowed) | values.astype(str).isin([str(a) for a in allowed]))


def label(spec: DatasetSpec, frame: pd.DataFrame) -> pd.Series:
    """The binary label per row: 1.0 / 0.0, NaN where a rule says ``exclude`` or nothing decides."""
    rule = spec.label
    missing = [c for c in rule.columns if c not in frame.columns]
    if missing:
        raise FeatureError(f"label {rule.name!r} needs columns {missing}, not in {sorted(frame.columns)}")
    raw = frame[rule.column]
    if rule.threshold is not None:
        value = pd.to_numeric(raw, errors="coerce")
        out = np.where(value.isna(), np.nan, (value > rule.threshold).astype("float64"))
    else:
        pos = _in_set(raw, rule.positive_values or [])
        neg = _in_set(raw, rule.negative_values) if rule.negative_values is not None else raw.notna().to_numpy()
        out = np.where(pos, 1.0, np.where(neg, 0.0, np.nan))
    decided = np.zeros(len(frame), dtype=bool)
    for r in rule.rules:  # first match wins: later rules only see rows no earlier rule decided
        hit = (
            frame[r.if_null].isna().to_numpy() if r.if_null is not None else _in_set(frame[r.column], r.if_in[r.column])
        )
        hit &= ~decided
        out[hit] = _RULE[r.then]
        decided |= hit
    return pd.Series(out, index=frame.index, name=rule.name, dtype="float64")


def has_label(spec: DatasetSpec, frame: pd.DataFrame) -> bool:
    """Whether ``frame`` carries the label's own column (scoring frames of future rows may not)."""
    return spec.label.column in frame.columns


# -- feature table -----------------------------------------------------------------------------------
def feature_columns(spec: DatasetSpec, *, with_label: bool = True) -> list[str]:
    """Columns of the feature table, in order: entity keys, then the spec's features, then the label."""
    cols = list(dict.fromkeys([*spec.entity_keys, spec.time.column, *spec.feature_names]))
    return [*cols, spec.label.name] if with_label else cols


def needed_tables(spec: DatasetSpec) -> list[str]:
    """The tables a feature build reads: the primary table and every table a used join names."""
    used = _used_joins(spec)
    return list(dict.fromkeys([spec.source.primary_table, *(j.table for j in spec.joins if j.name in used)]))


def _used_joins(spec: DatasetSpec) -> set[str]:
    used = set()
    for f in spec.features:
        if f.kind == "column" and "." in f.source_column:
            used.add(f.source_column.split(".", 1)[0])
        elif f.expr is not None:
            used |= {n.split(".", 1)[0] for n in _expr_inputs(f.expr) if "." in n}
    return used


def build_features(
    spec: DatasetSpec, tables: Mapping[str, pd.DataFrame], history: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per primary row (input order): entity keys + exactly ``spec.feature_names`` (+ the label when
    the primary rows carry the label column).

    ``tables`` maps table names to frames: the primary table's rows to build features for, the other source
    tables of the same days and the reference tables (only those the joins use are needed). ``history`` holds
    primary rows of the days before; only it and the earlier days of the primary rows feed window features.
    History rows on or after the first primary day are ignored (the primary rows are their own history).
    """
    problems = spec.feature_problems()  # a spec changed in memory (model_copy) is checked again here
    if problems:
        raise FeatureError(f"spec {spec.name!r}: features cannot be computed: " + "; ".join(problems))
    primary_name = spec.source.primary_table
    if primary_name not in tables:
        raise FeatureError(f"no {primary_name!r} table given (the spec's primary table)")
    rows = tables[primary_name]
    if not (isinstance(rows.index, pd.RangeIndex) and rows.index.start == 0 and rows.index.step == 1):
        rows = rows.reset_index(drop=True)  # (a copy: skipped when the index already is 0..n-1)
    _require(rows, [*spec.entity_keys, spec.time.column], f"table {primary_name!r}")
    if rows.empty:  # a day with no rows (a closed shop): an empty table of the same columns and dtypes
        return _empty_table(spec, with_label=has_label(spec, rows))
    days = _to_days(rows[spec.time.column])
    ctx = _Context(spec, rows, tables, days)

    data: dict[str, Any] = {key: rows[key] for key in spec.entity_keys}
    # The time column holds the row's day (a datetime time column keeps its instant: it may be an entity key).
    data[spec.time.column] = (
        _day_text(days) if spec.primary_columns[spec.time.column] == "date" else rows[spec.time.column]
    )
    windows = [f for f in spec.features if f.window is not None]
    computed = _windows(spec, rows, days, history, windows) if windows else {}
    for f in spec.features:  # each intermediate is dropped once cast: at 10 M rows each is ~80 MB
        values = computed.pop(f.name) if f.name in computed else ctx.compute(f)
        data[f.name] = _cast(f.name, values, f.dtype)
    with_label = has_label(spec, rows)
    if with_label:
        data[spec.label.name] = label(spec, rows).to_numpy()
    # Columns set one by one, in the table's order: neither a consolidating copy of the whole table nor a
    # copy for a final column selection (together 2x the table's size at peak).
    out = pd.DataFrame(index=rows.index)
    for c in feature_columns(spec, with_label=with_label):
        out[c] = data.pop(c)
    return out


_EMPTY_DTYPES = {"int": "int64", "float": "float64", "category": object}


def _empty_table(spec: DatasetSpec, *, with_label: bool) -> pd.DataFrame:
    dtypes = {f.name: _EMPTY_DTYPES[f.dtype] for f in spec.features} | {spec.label.name: "float64"}
    return pd.DataFrame(
        {c: pd.Series(dtype=dtypes.get(c, object)) for c in feature_columns(spec, with_label=with_label)}
    )


def _require(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if missing:
        raise FeatureError(f"{where} lacks columns {missing} (has {sorted(frame.columns)})")


class _Context:
    """The rows of one build, their joins (computed once each) and the dataset module."""

    def __init__(self, spec: DatasetSpec, rows: pd.DataFrame, tables: Mapping[str, pd.DataFrame], days) -> None:
        self.spec, self.rows, self.tables, self.days = spec, rows, tables, days
        self.joined: dict[str, dict[str, np.ndarray]] = {}
        self.joins = {j.name: j for j in spec.joins}

    def column(self, name: str) -> Any:
        """A primary column, or ``join.column`` of a declared join."""
        if "." not in name:
            _require(self.rows, [name], f"table {self.spec.source.primary_table!r}")
            return self.rows[name]
        jname, col = name.split(".", 1)
        if jname not in self.joined:
            self.joined[jname] = _join(self.spec, self.joins[jname], self.rows, self.tables, self._join_cols(jname))
        return self.joined[jname][col]

    def _join_cols(self, jname: str) -> list[str]:
        cols = []
        for f in self.spec.features:
            names = [f.source_column] if f.kind == "column" else _expr_inputs(f.expr) if f.expr else []
            cols += [n.split(".", 1)[1] for n in names if n.startswith(jname + ".")]
        return list(dict.fromkeys(cols))

    def compute(self, f: FeatureSpec) -> Any:
        if f.kind == "column":
            return self.column(f.source_column)
        if f.calendar is not None:
            return _calendar(self.spec, self.rows[f.calendar.column], f.calendar.part, self.days)
        if f.expr is not None:
            return _Expr(self).eval(ast.parse(f.expr, mode="eval").body)
        return _call_function(self.spec, f, self.rows, self.tables)


# -- column kinds ------------------------------------------------------------------------------------
def _calendar(spec: DatasetSpec, values: pd.Series, part: str, days: pd.DatetimeIndex) -> Any:
    kind = spec.primary_columns.get(str(values.name))
    if values.name == spec.time.column and kind == "date":
        t = days
    elif kind == "date":
        t = _to_days(values)
    else:
        t = _local_instants(values, spec.time.timezone)
    if part == "weekday":
        return t.weekday
    if part == "is_weekend":
        return (t.weekday >= 5).astype("int64")
    if part == "day_of_year":
        return t.dayofyear
    if part == "week":
        return t.isocalendar().week.to_numpy().astype("float64")
    return getattr(t, part)  # hour, minute, day, month, year


def _key(values: pd.Series, kind: str | None) -> pd.Series:
    """Join keys on one clock and one type: datetimes as UTC instants, dates as ISO days, else as they are."""
    if kind == "datetime":
        return pd.Series(_to_instants(values), index=values.index)
    if kind == "date":
        return pd.Series(_day_text(_to_days(values, allow_null=True)), index=values.index)
    return values


def _join(
    spec: DatasetSpec, j: JoinSpec, rows: pd.DataFrame, tables: Mapping[str, pd.DataFrame], cols: list[str]
) -> dict[str, np.ndarray]:
    """Each wanted column of the join's table, one value per primary row (missing: NaN / None)."""
    if j.table not in tables:
        raise FeatureError(f"join {j.name!r}: table {j.table!r} was not given (validated day or reference snapshot)")
    right = tables[j.table]
    asof = next(iter((j.as_of or {}).items()), None)
    _require(right, [*j.keys.values(), *([asof[1]] if asof else []), *cols], f"join {j.name!r}: table {j.table!r}")
    right_kinds = spec.source.tables[j.table].columns if j.table in spec.source.tables else {}
    primary = spec.primary_columns
    left_keys, right_keys = {}, {}
    for i, (lc, rc) in enumerate(j.keys.items()):
        lk = _key(rows[lc], primary.get(lc))
        rk = _key(right[rc], right_kinds.get(rc, primary.get(lc)))
        if (lk.dtype == object) != (rk.dtype == object):  # text on one side, numbers on the other
            lk, rk = lk.astype(str).where(lk.notna(), None), rk.astype(str).where(rk.notna(), None)
        left_keys[f"k{i}"], right_keys[f"k{i}"] = lk.to_numpy(), rk.to_numpy()
    r = pd.DataFrame({**right_keys, "__row": np.arange(len(right))})
    if asof:
        r["__t"] = _to_instants(right[asof[1]])
    r = r.dropna()
    if asof:
        idx = _asof_rows(j, left_keys, _to_instants(rows[asof[0]]), r)
    elif len(left_keys) == 1:
        # One key: an index lookup (a merge costs ~3x more at 10 M rows).
        r = r.drop_duplicates("k0", keep="last")
        idx = pd.Index(r["k0"].to_numpy()).get_indexer(left_keys["k0"])
        idx = np.where(idx >= 0, r["__row"].to_numpy()[np.maximum(idx, 0)], -1)
    else:
        r = r.drop_duplicates(list(left_keys), keep="last")
        merged = pd.DataFrame(left_keys).merge(r, on=list(left_keys), how="left", validate="many_to_one")
        idx = merged["__row"].fillna(-1).to_numpy().astype("int64")
    return {c: _take(right[c].to_numpy(), idx) for c in cols}


def _asof_rows(j: JoinSpec, left_keys: dict[str, np.ndarray], left_t: np.ndarray, r: pd.DataFrame) -> np.ndarray:
    left = pd.DataFrame({**left_keys, "__t": left_t, "__pos": np.arange(len(left_t))})
    left = left[left["__t"].notna()].sort_values("__t", kind="stable")
    r = r.sort_values("__t", kind="stable")
    tolerance = pd.Timedelta(j.tolerance) if j.tolerance else None
    merged = pd.merge_asof(
        left, r, on="__t", by=list(left_keys), direction="backward", tolerance=tolerance, allow_exact_matches=True
    )
    idx = np.full(len(left_t), -1, dtype="int64")
    idx[merged["__pos"].to_numpy()] = merged["__row"].fillna(-1).to_numpy().astype("int64")
    return idx


def _take(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    missing = idx < 0
    out = values[np.maximum(idx, 0)] if len(values) else np.full(len(idx), None, dtype=object)
    if not missing.any():
        return out
    if out.dtype.kind in "iub":
        out = out.astype("float64")
    elif out.dtype.kind not in "fMm":
        out = out.astype(object)
    out[missing] = None if out.dtype == object else np.nan if out.dtype.kind == "f" else np.datetime64("NaT")
    return out


class _Expr:
    """Evaluates a feature expression's syntax tree (checked by config.expr_names) over whole columns."""

    _BIN: ClassVar[dict[type, Any]] = {
        ast.Add: np.add,
        ast.Sub: np.subtract,
        ast.Mult: np.multiply,
        ast.Div: np.true_divide,
        ast.FloorDiv: np.floor_divide,
        ast.Mod: np.mod,
        ast.Pow: np.power,
    }
    _CMP: ClassVar[dict[type, Any]] = {
        ast.Eq: np.equal,
        ast.NotEq: np.not_equal,
        ast.Lt: np.less,
        ast.LtE: np.less_equal,
        ast.Gt: np.greater,
        ast.GtE: np.greater_equal,
    }

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.ctx.column(node.id)
        if isinstance(node, ast.Attribute):
            return pd.Series(self.ctx.column(f"{node.value.id}.{node.attr}"), index=self.ctx.rows.index)
        if isinstance(node, ast.BinOp):
            a, b = self.eval(node.left), self.eval(node.right)
            return a // b if isinstance(node.op, ast.FloorDiv) else self._BIN[type(node.op)](a, b)
        if isinstance(node, ast.UnaryOp):
            v = self.eval(node.operand)
            return (
                -v
                if isinstance(node.op, ast.USub)
                else ~np.asarray(v, dtype=bool)
                if isinstance(node.op, ast.Not)
                else v
            )
        if isinstance(node, ast.Compare):
            out, left = None, self.eval(node.left)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self.eval(comp)
                part = self._CMP[type(op)](left, right)
                out, left = part if out is None else out & part, right
            return out
        if isinstance(node, ast.BoolOp):
            vals = [np.asarray(self.eval(v), dtype=bool) for v in node.values]
            return np.logical_and.reduce(vals) if isinstance(node.op, ast.And) else np.logical_or.reduce(vals)
        if isinstance(node, ast.Call):
            return self._call(node.func.id, [self.eval(a) for a in node.args])
        raise FeatureError(f"unsupported expression node {type(node).__name__}")

    def _call(self, name: str, args: list[Any]) -> Any:
        index = self.ctx.rows.index
        if name == "coalesce":
            out = pd.Series(args[0], index=index) if not isinstance(args[0], pd.Series) else args[0]
            for a in args[1:]:
                out = out.fillna(pd.Series(a, index=index) if not isinstance(a, pd.Series) else a)
            return out
        if name == "where":
            return np.where(np.asarray(args[0], dtype=bool), args[1], args[2])
        if name == "isnull":
            return pd.isna(pd.Series(args[0], index=index)).astype("int64")
        fn = {"minimum": np.fmin, "maximum": np.fmax, "floor": np.floor, "ceil": np.ceil, "round": np.round}.get(name)
        return (fn or getattr(np, name))(*args)


def _expr_inputs(text: str) -> list[str]:
    from include.mlops.config import expr_names

    return expr_names(text)[0]


def dataset_module(spec: DatasetSpec) -> Any:
    """The spec's own module (``module:``), imported on first use (never at DAG parse time)."""
    if not spec.module:
        raise FeatureError(f"spec {spec.name!r} names no module")
    try:
        return importlib.import_module(spec.module)
    except ImportError as exc:
        raise FeatureError(f"spec {spec.name!r}: module {spec.module!r} cannot be imported: {exc}") from exc


def _call_function(spec: DatasetSpec, f: FeatureSpec, rows: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> Any:
    fn = getattr(dataset_module(spec), str(f.function), None)
    if not callable(fn):
        raise FeatureError(f"feature {f.name!r}: {spec.module}.{f.function} is not a function")
    values = fn(rows, tables)
    n = len(values) if hasattr(values, "__len__") else -1
    if n != len(rows):
        raise FeatureError(f"feature {f.name!r}: {spec.module}.{f.function} returned {n} values for {len(rows)} rows")
    return values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)


# -- point-in-time windows -------------------------------------------------------------------------------
def _windows(
    spec: DatasetSpec,
    rows: pd.DataFrame,
    days: pd.DatetimeIndex,
    history: pd.DataFrame | None,
    feats: list[FeatureSpec],
) -> dict[str, np.ndarray]:
    """Every window feature: per group, the aggregate of the ``days`` days strictly before each row's day."""
    if history is not None and len(history):
        h_days = _to_days(history[spec.time.column])
        keep = np.asarray(h_days < days.min())
        h, h_days = history.loc[keep], h_days[keep]
    else:
        h, h_days = None, None
    out: dict[str, np.ndarray] = {}
    for of in dict.fromkeys(f.window.of for f in feats):
        group = [f for f in feats if f.window.of == of]
        needed = sorted({k for f in group for k in f.window.by})

        _require(rows, needed, f"table {spec.source.primary_table!r}")
        if h is not None:
            _require(h, needed, "history")
        # Each group column as integer codes shared by rows and history (strings hashed once per column).
        codes = {k: _codes(rows[k], None if h is None else h[k]) for k in needed}
        events = [
            pd.DataFrame({"day": days, **{k: c[0] for k, c in codes.items()}, "y": _window_values(spec, rows, of)})
        ]
        if h is not None:
            events.append(
                pd.DataFrame(
                    {"day": h_days, **{k: c[1] for k, c in codes.items()}, "y": _window_values(spec, h, of).to_numpy()}
                )
            )
        ev = pd.concat(events, ignore_index=True)
        ev = ev[ev["y"].notna()]
        start = min(ev["day"].min(), days.min()) if len(ev) else days.min()
        calendar = pd.date_range(start, days.max(), freq="D")
        row = np.asarray((days - calendar[0]).days)
        priors: dict[int, np.ndarray] = {}

        for f in group:
            w = f.window
            if w.prior and w.days not in priors:
                all_n, all_pos, _ = _rolling(ev, pd.Series("all", index=ev.index), calendar, w.days)
                with np.errstate(invalid="ignore", divide="ignore"):
                    priors[w.days] = np.where(all_n[:, 0] > 0, all_pos[:, 0] / np.maximum(all_n[:, 0], 1), np.nan)[row]
            key_ev, key_rows = _group_codes(ev, codes, w.by, len(rows))
            n, pos, columns = _rolling(ev, key_ev, calendar, w.days)
            col = columns.get_indexer(key_rows)
            seen = col >= 0
            n_f = np.where(seen, n[row, np.where(seen, col, 0)], 0.0) if len(columns) else np.zeros(len(rows))
            pos_f = np.where(seen, pos[row, np.where(seen, col, 0)], 0.0) if len(columns) else np.zeros(len(rows))
            if w.agg == "count":
                out[f.name] = n_f
            elif w.agg == "sum":
                out[f.name] = pos_f
            elif w.prior:
                out[f.name] = (pos_f + w.prior * priors[w.days]) / (n_f + w.prior)
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[f.name] = np.where(n_f > 0, pos_f / np.maximum(n_f, 1), np.nan)
    return out


def _window_values(spec: DatasetSpec, frame: pd.DataFrame, of: str) -> pd.Series:
    if of == "label":  # rows whose label is not known yet (a scoring frame) add nothing to later days' windows
        return label(spec, frame) if has_label(spec, frame) else pd.Series(np.nan, index=frame.index)
    return pd.to_numeric(frame[of], errors="coerce")


def _rolling(
    ev: pd.DataFrame, key: pd.Series, calendar: pd.DatetimeIndex, n_days: int
) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Daily counts and sums of ``ev.y`` per group, summed over the ``n_days`` days before each calendar day."""
    g = ev.groupby([ev["day"], key])["y"].agg(["count", "sum"])
    n = g["count"].unstack().reindex(calendar).fillna(0.0)
    pos = g["sum"].unstack().reindex(calendar).fillna(0.0)
    n = n.rolling(n_days, min_periods=1).sum().shift(1).fillna(0.0)
    pos = pos.rolling(n_days, min_periods=1).sum().shift(1).fillna(0.0)
    return n.to_numpy(), pos.to_numpy(), n.columns


def _codes(rows: pd.Series, history: pd.Series | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of one column's values (0 for null, 1.. per distinct value), for the rows and the history
    alike, and how many codes there are."""
    values = rows.to_numpy() if history is None else np.concatenate([rows.to_numpy(), history.to_numpy()])
    c, uniques = pd.factorize(values)
    c = c.astype("int64") + 1
    return c[: len(rows)], c[len(rows) :], len(uniques) + 1


def _group_codes(
    ev: pd.DataFrame, codes: dict[str, tuple[np.ndarray, np.ndarray, int]], by: list[str], n_rows: int
) -> tuple[pd.Series, np.ndarray]:
    """One integer per ``by`` combination, the same for the events and the rows (0 for all when ``by`` is empty):
    the columns' codes combined arithmetically. Integers, not "k1|k2" text: grouping 10 M rows by text hashes
    every string again (~2x slower)."""
    key_ev, key_rows = np.zeros(len(ev), dtype="int64"), np.zeros(n_rows, dtype="int64")
    for k in by:
        n = codes[k][2]
        key_ev, key_rows = key_ev * n + ev[k].to_numpy(), key_rows * n + codes[k][0]
    return pd.Series(key_ev, index=ev.index), key_rows


# -- dates and times -----------------------------------------------------------------------------------
def _to_days(values: pd.Series, *, allow_null: bool = False) -> pd.DatetimeIndex:
    """The calendar day of each value (ISO date or datetime text, or datetimes). Each distinct value is parsed
    once: a year of flights has 365 distinct values and 336k rows."""
    codes, uniques = pd.factorize(values)
    if (codes < 0).any() and not allow_null:
        raise FeatureError(f"time column {values.name!r} has {(codes < 0).sum()} null values")
    try:
        parsed = pd.to_datetime(pd.Index(uniques).astype(str).str.slice(0, 10), format="%Y-%m-%d")
    except ValueError as exc:
        raise FeatureError(f"column {values.name!r} holds values that are not dates: {exc}") from None
    out = parsed[np.maximum(codes, 0)]
    return out.where(codes >= 0) if allow_null else out


def _day_text(days: pd.DatetimeIndex) -> np.ndarray:
    """ISO day per row, one shared str per distinct day (strftime per row makes 10 M new strings at 30x)."""
    codes, uniques = pd.factorize(days)
    text = pd.Index(uniques).strftime("%Y-%m-%d").to_numpy(dtype=object)
    out = text[np.maximum(codes, 0)]
    out[codes < 0] = None
    return out


def _to_instants(values: pd.Series) -> np.ndarray:
    """UTC instants as naive ``datetime64[ns]`` (naive values are read as UTC), each distinct value parsed once.
    (Not tz-aware: numpy holds those as Timestamp objects, ~1 µs a row to make and to hash.)"""
    codes, uniques = pd.factorize(values)
    try:
        parsed = pd.to_datetime(pd.Index(uniques).astype(str), utc=True, format="ISO8601")
        parsed = parsed.tz_convert(None).as_unit("ns").to_numpy()
    except ValueError as exc:
        raise FeatureError(f"column {values.name!r} holds values that are not ISO 8601 instants: {exc}") from None
    out = parsed[np.maximum(codes, 0)] if len(parsed) else np.full(len(codes), np.datetime64("NaT"), "M8[ns]")
    out[codes < 0] = np.datetime64("NaT")
    return out


def _local_instants(values: pd.Series, tz: str) -> pd.DatetimeIndex:
    """Wall-clock times in ``tz``: aware values converted, naive values taken as already local."""
    codes, uniques = pd.factorize(values)
    text = pd.Index(uniques).astype(str)
    aware = np.asarray(text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True))
    try:
        parsed = pd.Series(pd.NaT, index=range(len(text)), dtype="datetime64[ns]")
        if aware.any():
            utc = pd.to_datetime(text[aware], format="ISO8601", utc=True)
            parsed[aware] = utc.tz_convert(tz).tz_localize(None).as_unit("ns")
        if (~aware).any():
            parsed[~aware] = pd.to_datetime(text[~aware], format="ISO8601").as_unit("ns")
        parsed = pd.DatetimeIndex(parsed)
    except (ValueError, TypeError) as exc:
        raise FeatureError(f"column {values.name!r} holds values that are not ISO 8601 times: {exc}") from None
    out = parsed[np.maximum(codes, 0)]
    return out.where(codes >= 0)


def _cast(name: str, values: Any, dtype: str) -> pd.Series:
    s = pd.Series(values) if not isinstance(values, pd.Series) else values.reset_index(drop=True)
    if dtype == "int":
        s = s if s.dtype.kind in "iub" else pd.to_numeric(s, errors="coerce")
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


def module_digest(spec: DatasetSpec) -> str | None:
    """sha256 of the source of the spec's own module (None without one): its code defines features too."""
    if not spec.module:
        return None
    return hashlib.sha256(inspect.getsource(dataset_module(spec)).encode()).hexdigest()[:16]


def feature_spec_hash(spec: DatasetSpec) -> str:
    """Hash of what defines the feature table: the feature part of the spec and the dataset module's code
    (not gates, search spaces, …)."""
    part = spec.model_dump(mode="json", include={"name", "time", "entity_keys", "label", "joins", "module", "features"})
    part["module_source"] = module_digest(spec)
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


def _as_date(d: date | str) -> date:
    return d if isinstance(d, date) else date.fromisoformat(str(d)[:10])


def _date_partitions(lake: Lake, spec: DatasetSpec, first: date, last: date) -> list[str]:
    lo, hi = f"date={first.isoformat()}", f"date={last.isoformat()}"
    return [p for p in lake.partitions("validated", spec.name) if p.startswith("date=") and lo <= p <= hi]


def validated_inputs(lake: Lake, spec: DatasetSpec, start: date | str, end: date | str) -> list[dict[str, Any]]:
    """The validated partitions the feature table of [start, end] reads (its history days included), each as
    ``{"partition", "sha256", "rows", "raw_sha256"}`` from its manifest, in date order."""
    start, end = _as_date(start), _as_date(end)
    out = []
    for p in _date_partitions(lake, spec, start - timedelta(days=spec.history_days), end):
        m = lake.manifest("validated", spec.name, p)
        if m is not None:
            out.append({"partition": p, "sha256": m.sha256, "rows": m.rows, "raw_sha256": m.extra.get("raw_sha256")})
    return out


def feature_inputs(spec: DatasetSpec, lake: Lake, version: str) -> dict[str, Any]:
    """The lineage of a materialised feature table: its window, the validated partitions it was built from (with
    their sha256 as they were when it was built) and the reference snapshot; LakeError if it does not exist."""
    from include.mlops.storage import LakeError

    partition = version if version.startswith("version=") else f"version={version}"
    m = lake.manifest("features", spec.name, partition)
    if m is None:
        raise LakeError(f"features/{spec.name}/{partition} does not exist (no manifest)")
    result = m.extra.get("result") or {}
    recorded = m.extra.get("input_manifests")
    if recorded is None:  # a table built before input hashes were recorded: what the lake holds now
        recorded = [i for i in validated_inputs(lake, spec, result["start"], result["end"]) if i["partition"] in
                    set(m.extra.get("inputs") or [])]  # fmt: skip
    return {
        "feature_version": partition.removeprefix("version="),
        "feature_uri": lake.uri(lake.partition_path("features", spec.name, partition)),
        "feature_sha256": m.sha256,
        "start": result.get("start"),
        "end": result.get("end"),
        "rows": m.rows,
        "partitions": recorded,
        "reference_sha256": m.extra.get("reference_sha256"),
        "feature_spec_hash": m.extra.get("feature_spec_hash"),
        "feature_code_version": m.extra.get("feature_code_version"),
    }


def feature_version(lake: Lake, spec: DatasetSpec, start: date | str, end: date | str) -> tuple[str, list[str]]:
    """The content version of the feature table of [start, end] and the input partitions it covers."""
    start, end = _as_date(start), _as_date(end)
    inputs = {i["partition"]: i["sha256"] for i in validated_inputs(lake, spec, start, end)}
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
    parts = _date_partitions(lake, spec, start - timedelta(days=spec.history_days), end)
    window = [p for p in parts if p >= f"date={start.isoformat()}"]
    if not window:
        raise FeatureError(f"no validated {spec.name} partitions between {start} and {end}")
    hist = [p for p in parts if p not in window]
    tables: dict[str, pd.DataFrame] = {}
    for name in needed_tables(spec):
        if name in spec.source.tables:
            tables[name] = _read_many(lake, spec.name, window, name)
        else:
            if lake.manifest("reference", spec.name, "snapshot=current") is None:
                raise FeatureError(
                    f"reference/{spec.name}/snapshot=current does not exist: ingest the reference tables"
                )
            tables[name] = lake.read_table("reference", spec.name, "snapshot=current", name)
    history = _read_many(lake, spec.name, hist, primary) if hist and spec.history_days else None
    return build_features(spec, tables, history)


def _read_many(lake: Lake, dataset: str, parts: list[str], table: str) -> pd.DataFrame:
    from concurrent.futures import ThreadPoolExecutor

    def read(p: str) -> pd.DataFrame:
        m = lake.manifest("validated", dataset, p)
        if m is not None and table not in m.files:
            raise FeatureError(f"partition validated/{dataset}/{p} has no table {table!r} (has {sorted(m.files)})")
        return lake.read_table("validated", dataset, p, table)

    # Partitions are small files; reading them in parallel hides per-file latency on object stores.
    with ThreadPoolExecutor(max_workers=8) as pool:
        frames = list(pool.map(read, parts))
    return pd.concat(frames, ignore_index=True)


def materialize_features(
    spec: DatasetSpec, lake: Lake, start: date | str, end: date | str, *, run_id: str | None = None
) -> FeatureTableResult:
    """Write the feature table of [start, end] to ``features/<dataset>/version=<hash>`` (reused if present).

    The version hashes the input partitions' content (the window and the days of history its windows read,
    and the reference snapshot), ``FEATURE_CODE_VERSION`` and the feature part of the spec: same inputs, same version.
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
    ref = lake.manifest("reference", spec.name, "snapshot=current")
    extra = {
        "result": result.as_dict(),
        "feature_code_version": FEATURE_CODE_VERSION,
        "feature_spec_hash": feature_spec_hash(spec),
        "inputs": inputs,
        "input_manifests": [i for i in validated_inputs(lake, spec, start, end) if i["partition"] in set(inputs)],
        "reference_sha256": ref.sha256 if ref else None,
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
