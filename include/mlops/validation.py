"""Validation with Great Expectations Core, the suite built from the dataset spec.

Severity decides what a failure does: a ``critical`` failure quarantines the whole batch (and the run
fails with a message naming each failed expectation and its counts); a ``warning`` failure quarantines
only the offending rows, each with its reasons, and the rest is validated. Schema checks (exact column
set, column types, ISO text) come from the spec's declared columns and are always critical.

Every table also gets dataset-neutral checks from its declared columns (severities in
``validation.defaults``): no null in a non-nullable column, no inf, no fraction in an int column, no NUL
character, codes matching their declared pattern, date / datetime text that is a real calendar instant with
the declared timezone semantics. The spec's cross-column ``validation.rules`` are evaluated with pandas into
one boolean column each and checked by GX like any column. Table-level expectations (row count) are judged
again on the rows that would be published, and the published frame has exactly the declared dtypes, so
quarantine can never publish an emptied or mistyped partition.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from include.mlops.config import DatasetSpec, ExpectationSpec, RuleSpec, Severity, TableSpec
from include.mlops.sources import interval_dates

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# dtypes GX accepts for each logical dtype of the spec, after _conform has normalised the representation.
# On object columns GX checks the type of every value, so text columns are checked as "str". An int column
# with nulls is float64 in pandas: that is accepted, and the warning-level not-null checks quarantine the rows.
# A text column whose values are all str reaches GX as pandas' string dtype (see _typed_text), hence
# "StringDtype" next to "str".
TYPE_LISTS: dict[str, list[str]] = {
    "int": ["int64", "int32", "int16", "int8", "float64"],
    "float": ["float64", "float32", "int64", "int32"],
    "str": ["str", "StringDtype"],
    "category": ["str", "StringDtype"],
    "date": ["str", "StringDtype"],
    "datetime": ["str", "StringDtype"],
    "bool": ["bool"],
}
TEXT_TYPES = ("str", "category", "date", "datetime")


# The text form every date / datetime column must have after _conform (ISO 8601, as the sources and _conform
# write them): a type check alone lets any text through ("yesterday" in time_hour broke the weather join).
ISO_FORMATS: dict[str, str] = {
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "datetime": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?$",
}

# Anchored in full: GX (pandas) searches a regex anywhere in the value.
UTC_OFFSET = r"^(?:Z|[+-]00:?00)$"
FLOAT_MAX = 1.7976931348623157e308  # inf is outside [-max, max]; NaN is a null (the not-null checks see it)
NUL = r"\x00"  # the regex escape, not the character
# The derived frame GX checks for row-level conditions pandas computes (instants, integral, rules): one
# boolean column per check, True = the row passes, None = not checked (null or ``when`` false).
PASS = [True]

# Two passes keep GX cheap on big batches: every expectation first answers pass/fail only (no per-row result
# lists), then only the expectations that failed run again for their counts and offending row indexes.
FIRST_PASS = {"result_format": "BOOLEAN_ONLY"}
# partial_unexpected_count 0 is a security setting too: above 0, GX Data Docs render unexpected values raw as HTML
# (a source value would run as script in the report). Keep it 0; docs/security.md.
DETAIL_PASS = {"result_format": "COMPLETE", "partial_unexpected_count": 0}


class ValidationFailed(RuntimeError):
    """A batch failed a critical expectation; the message names each failure and its counts."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.summary())


@dataclass(frozen=True)
class Outcome:
    """The result of one expectation on one table."""

    table: str
    expectation: str
    target: str  # column(s) or "table"
    severity: str
    success: bool
    element_count: int | None
    unexpected_count: int | None
    observed: Any = None
    error: str | None = None
    description: str | None = None

    @property
    def reason(self) -> str:
        return f"{self.table}.{self.expectation}({self.target})"

    def describe(self) -> str:
        if self.error:
            detail = f"could not be evaluated: {self.error}"
        elif self.unexpected_count is not None:
            detail = f"{self.unexpected_count} of {self.element_count} rows unexpected"
        else:
            detail = f"observed {self.observed!r}"
        return f"[{self.severity}] {self.reason}: {detail}"


@dataclass
class ValidationReport:
    """Everything decided about one batch: outcomes, row counts per zone, the verdict."""

    dataset: str
    partition: str
    outcomes: list[Outcome]
    rows_in: dict[str, int]
    rows_valid: dict[str, int] = field(default_factory=dict)
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    docs_uri: str | None = None

    @property
    def critical_failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == Severity.critical.value]

    @property
    def warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == Severity.warning.value]

    @property
    def status(self) -> str:
        """``failed`` (batch quarantined), ``warning`` (some rows quarantined or table warnings) or ``passed``."""
        if self.critical_failures:
            return "failed"
        return "warning" if self.warnings else "passed"

    def summary(self) -> str:
        head = f"{self.dataset} {self.partition}: validation {self.status}"
        if self.status == "failed":
            head += " - whole batch quarantined"
        elif self.rows_quarantined:
            head += f" - quarantined rows {self.rows_quarantined}"
        lines = [head] + [f"  {o.describe()}" for o in self.critical_failures + self.warnings]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "partition": self.partition,
            "status": self.status,
            "rows_in": self.rows_in,
            "rows_valid": self.rows_valid,
            "rows_quarantined": self.rows_quarantined,
            "docs_uri": self.docs_uri,
            "failed": [asdict(o) for o in self.critical_failures + self.warnings],
            "outcomes": [asdict(o) for o in self.outcomes],
        }


# -- the suite ---------------------------------------------------------------------------------------
class SuiteEntry(NamedTuple):
    """One GX expectation of a table's suite. ``check`` names a dataset-neutral or derived check (the outcome
    is reported as ``<table>.<check>(<target>)``); None for a plain spec / schema expectation."""

    type: str
    kwargs: dict[str, Any]
    severity: str
    description: str | None
    check: str | None = None
    target: str | None = None


def expectation_kwargs(
    e: ExpectationSpec, interval: tuple[date, date], reference: dict[str, pd.DataFrame]
) -> dict[str, Any]:
    """The GX kwargs of a spec expectation, with ``$interval_*`` and ``value_set_from`` resolved."""
    kw = dict(e.kwargs)
    for k, v in list(kw.items()):
        if v == "$interval_dates":
            kw[k] = interval_dates(*interval)
        elif v == "$interval_start":
            kw[k] = interval[0].isoformat()
        elif v == "$interval_end_inclusive":
            kw[k] = (interval[1] - timedelta(days=1)).isoformat()
    if e.value_set_from:
        table, column = e.value_set_from.split(".")
        if table not in reference or column not in reference[table].columns:
            raise KeyError(f"value_set_from {e.value_set_from!r}: reference table/column not loaded")
        kw["value_set"] = sorted(reference[table][column].dropna().astype(str).unique().tolist())
    return kw


def suite_for(
    spec: DatasetSpec, table: str, interval: tuple[date, date], reference: dict[str, pd.DataFrame]
) -> list[SuiteEntry]:
    """The expectations GX runs on the table itself: schema checks, the dataset-neutral column checks, then
    the spec's expectations (see :func:`derived_suite` for the checks GX runs on derived columns)."""
    declared = spec.source.tables[table]
    d = spec.validation.defaults
    out = [
        SuiteEntry(
            "expect_table_columns_to_match_set",
            {"column_set": list(declared.columns), "exact_match": True},
            "critical",
            "schema: exactly the declared columns",
        )
    ]
    for c, t in declared.columns.items():
        out.append(
            SuiteEntry(
                "expect_column_values_to_be_in_type_list",
                {"column": c, "type_list": TYPE_LISTS[t]},
                "critical",
                f"schema: {t}",
            )
        )
        if t in ISO_FORMATS:
            out.append(
                SuiteEntry(
                    "expect_column_values_to_match_regex",
                    {"column": c, "regex": ISO_FORMATS[t]},
                    "critical",
                    f"schema: ISO 8601 {t}",
                )
            )
    for c, t in declared.columns.items():
        if not declared.nullable(c):
            out.append(
                SuiteEntry("expect_column_values_to_not_be_null", {"column": c}, d.not_null.value, "not nullable")
            )
        if t in ("int", "float"):
            out.append(
                SuiteEntry(
                    "expect_column_values_to_be_between",
                    {"column": c, "min_value": -FLOAT_MAX, "max_value": FLOAT_MAX},
                    d.finite.value,
                    "finite: no inf",
                    "finite",
                    c,
                )
            )
    out += [
        SuiteEntry(e.type, expectation_kwargs(e, interval, reference), e.severity.value, e.description)
        for e in spec.validation.expectations
        if e.table == table
    ]
    return out


def derived_suite(spec: DatasetSpec, table: str) -> list[SuiteEntry]:
    """Checks GX runs on the table's derived frame (:func:`derive_checks`): no NUL in a text column, codes
    matching their pattern, every date / datetime column a real instant, every int column integral, every
    cross-column rule of the spec. (Regexes run once per distinct value there: GX's own regex expectations
    run Python's re on every row, 1.6 s of a year's 3 s.)"""
    declared = spec.source.tables[table]
    d = spec.validation.defaults
    out = []
    for c, t in declared.columns.items():
        if t in TEXT_TYPES:
            out.append(_derived("no_nul", c, d.no_nul.value, "no NUL character"))
        pattern = declared.rules(c).pattern
        if pattern:
            out.append(_derived("pattern", c, d.pattern.value, f"matches {pattern} in full"))
        if t in ("date", "datetime"):
            tz = timezone_mode(declared, c)
            what = "real calendar date" if t == "date" else f"real instant, timezone {tz}"
            out.append(_derived("instant", c, d.instant.value, what))
        elif t == "int":
            out.append(_derived("integral", c, d.integral.value, "whole numbers"))
    for r in spec.validation.rules:
        if r.table == table:
            out.append(_derived("rule", r.name, r.severity.value, r.description or r.expr))
    return out


def _derived(check: str, target: str, severity: str, description: str) -> SuiteEntry:
    kwargs = {"column": f"{check}__{target}", "value_set": PASS}
    return SuiteEntry("expect_column_values_to_be_in_set", kwargs, severity, description, check, target)


@lru_cache(maxsize=1)
def _gx():
    # GX is heavy (~5 s to import): import once per process, quietly.
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("great_expectations", "great_expectations._docs_decorators"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.render.view.view import DefaultJinjaView

    # GX builds a new Jinja environment for every rendered page, so each Data Docs build recompiles every
    # template (~2 s a batch). Share compiled templates across environments: same output, no recompiles.
    cache = _MemoryBytecodeCache()
    original_init = DefaultJinjaView.__init__

    def init_with_shared_cache(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.env.bytecode_cache = cache

    DefaultJinjaView.__init__ = init_with_shared_cache

    # GX fingerprints every in-memory batch under 1 GB (pandas' shallow size) with an md5 over
    # hash_pandas_object of every row and column: one full pass and a 64-bit hash per cell, for each
    # validation run (we run two per table). Measured on 3.4 M flights: ~1.5 s and +1 GB peak RSS per run. The
    # fingerprint only labels the batch in GX's results; a partition is identified by the sha256 in its
    # manifest. GX itself skips it above the threshold, so 0 means "never".
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0
    return gx


class _MemoryBytecodeCache:
    """A process-wide in-memory jinja2 bytecode cache (keyed by template name and source checksum)."""

    def __new__(cls):
        from jinja2 import BytecodeCache

        class _Cache(BytecodeCache):
            def __init__(self) -> None:
                self._code: dict[str, bytes] = {}

            def load_bytecode(self, bucket) -> None:
                if bucket.key in self._code:
                    bucket.bytecode_from_string(self._code[bucket.key])

            def dump_bytecode(self, bucket) -> None:
                self._code[bucket.key] = bucket.bytecode_to_string()

        return _Cache()


def _expectation(type_: str, kwargs: dict[str, Any], meta: dict[str, Any]):
    gx = _gx()
    cls_name = "".join(p.capitalize() for p in type_.split("_"))
    cls = getattr(gx.expectations, cls_name)
    return cls(**kwargs, meta=meta)


def _conform(df: pd.DataFrame, columns: dict[str, str], wall_clock: frozenset[str] = frozenset()) -> pd.DataFrame:
    """Normalise representations without changing values, so one type check fits every source: nullable
    and extension dtypes (Int64, Float64, string, category) to numpy/object, dates and timestamps to ISO text
    (a Postgres DATE arrives as datetime.date), all-null numeric columns to float64 (a day without wind gusts
    reads as object). Garbage stays garbage: a text value in a numeric column is left for GX to reject."""
    import datetime as dt

    import pandas as pd

    # Shallow: a column replaced below is replaced in this frame only; the caller's frame and its data are
    # never written to, and an untouched column costs nothing (a copy of a 10 M-row batch is gigabytes).
    if isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1:
        df = df.copy(deep=False)
    else:
        df = df.reset_index(drop=True)
    for c, t in columns.items():
        if c not in df.columns:
            continue
        col = df[c]
        if t in ("int", "float"):
            if col.dtype == object and col.isna().all():
                df[c] = pd.Series(float("nan"), index=df.index, dtype="float64")
            elif isinstance(col.dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_numeric_dtype(col.dtype):
                df[c] = col.astype("float64") if col.isna().any() or t == "float" else col.astype("int64")
        elif t in ("date", "datetime"):
            if pd.api.types.is_datetime64_any_dtype(col.dtype):
                utc = col.dt.tz_convert("UTC") if col.dt.tz is not None else col
                # a naive timestamp is wall-clock time where the column's semantics say so, else UTC
                fmt = "%Y-%m-%dT%H:%M:%S" if col.dt.tz is None and c in wall_clock else "%Y-%m-%dT%H:%M:%SZ"
                df[c] = utc.dt.strftime("%Y-%m-%d" if t == "date" else fmt).astype(object)
            elif col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) not in ("string", "empty"):
                # Only a column holding date objects needs a per-value conversion (text is left as it is).
                fmt = (lambda v: v.isoformat()) if t == "date" else (lambda v: v.strftime("%Y-%m-%dT%H:%M:%SZ"))
                df[c] = col.map(lambda v, f=fmt: f(v) if isinstance(v, dt.date) else v)
        elif t in ("str", "category") and isinstance(col.dtype, (pd.CategoricalDtype, pd.StringDtype)):
            df[c] = col.astype(object).where(col.notna(), None)
    return df


# -- derived checks: instants, integral ints, cross-column rules ----------------------------------------
@dataclass
class Derived:
    """One table's derived frame (one column per derived check, plus the day column for chunking) and the
    parsed instants: ``instants[c]`` is a UTC datetime64 (date columns: naive day) per row, NaT if invalid."""

    frame: pd.DataFrame
    instants: dict[str, pd.Series]
    errors: list[Outcome]


def timezone_mode(declared: TableSpec, column: str) -> str:
    """How a datetime column's text is read: as declared (``utc``, ``offset``, ``local``); undeclared, ``any``:
    an explicit offset, or none for wall-clock time in the spec's ``time.timezone``."""
    return declared.rules(column).timezone or "any"


def parse_instants(values: pd.Series, dtype: str, tz_mode: str, timezone: str) -> pd.Series:
    """Date / datetime text as real instants: ``date`` -> naive datetime64 day, ``datetime`` -> UTC datetime64.

    NaT for a null and for text that is no real calendar value (Feb 30, hour 25) or breaks the timezone
    semantics: ``utc`` needs an explicit zero offset, ``offset`` any explicit offset, ``local`` none (the
    wall-clock time in ``timezone``; a time skipped by a DST change is invalid), ``any`` either. Parsed once
    per distinct value (a day has a few dozen)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = pd.Series(uniques, dtype=object).astype(str)
    if dtype == "date":
        ok = text.str.fullmatch(ISO_FORMATS["date"].strip("^$"))
        parsed = pd.to_datetime(text.where(ok), format="%Y-%m-%d", errors="coerce")
    else:
        ok = text.str.fullmatch(ISO_FORMATS["datetime"].strip("^$"))
        offset = text.str.extract(r"(Z|[+-]\d{2}:?\d{2})$", expand=False)
        if tz_mode == "utc":
            ok &= offset.fillna("").str.fullmatch(UTC_OFFSET.strip("^$"))
        elif tz_mode == "offset":
            ok &= offset.notna()
        elif tz_mode == "local":
            ok &= offset.isna()
        aware = pd.to_datetime(text.where(ok & offset.notna()), format="ISO8601", utc=True, errors="coerce")
        naive = pd.to_datetime(text.where(ok & offset.isna()), format="ISO8601", errors="coerce")
        local = naive.dt.tz_localize(timezone, ambiguous=True, nonexistent="NaT").dt.tz_convert("UTC")
        parsed = aware.where(offset.notna(), local)
    if len(parsed) == 0:
        return pd.Series(pd.NaT, index=values.index, dtype=parsed.dtype)
    return parsed.iloc[np.maximum(codes, 0)].set_axis(values.index).where(codes >= 0)


def derive_checks(spec: DatasetSpec, table: str, df: pd.DataFrame) -> Derived:
    """The derived frame of one table: True / False / None per row for every check of :func:`derived_suite`.

    A rule that cannot be evaluated (a column of the wrong type, a bad expression) is an error outcome
    (critical): the batch is rejected with the rule named, never published unchecked."""
    import numpy as np
    import pandas as pd

    declared = spec.source.tables[table]
    columns: dict[str, Any] = {}
    if spec.time.column in df.columns:
        columns[spec.time.column] = df[spec.time.column].to_numpy()
    instants: dict[str, pd.Series] = {}
    errors: list[Outcome] = []

    def put(name: str, passed: np.ndarray, checked: np.ndarray) -> None:
        # pandas' nullable boolean: GX's null filter and isin are vectorised on it (an object column is not)
        columns[name] = pd.arrays.BooleanArray(np.asarray(passed, dtype=bool), ~np.asarray(checked, dtype=bool))

    for c, t in declared.columns.items():
        if c not in df.columns:
            continue
        col = df[c]
        present = col.notna().to_numpy()
        if t in TEXT_TYPES:
            pattern = declared.rules(c).pattern
            regexes = {"no_nul": (NUL, False)} | ({"pattern": (f"^(?:{pattern})\\Z", True)} if pattern else {})
            for check, (regex, want) in regexes.items():
                put(f"{check}__{c}", _matches(col, regex) == want, present)
        if t in ("date", "datetime"):
            tz = timezone_mode(declared, c)
            try:
                parsed = parse_instants(col, t, tz, spec.time.timezone)
            except (TypeError, ValueError):  # not text at all: the type check names it
                parsed = pd.Series(pd.NaT, index=df.index)
            instants[c] = parsed
            put(f"instant__{c}", parsed.notna().to_numpy(), present)
        elif t == "int":
            values = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64")
            finite = np.isfinite(values)
            whole = np.zeros(len(df), dtype=bool)
            whole[finite] = values[finite] == np.round(values[finite])
            # non-numbers are the type check's; inf is the finite check's: only finite numbers are judged here
            put(f"integral__{c}", whole, present & finite)
    for r in spec.validation.rules:
        if r.table != table:
            continue
        if not all(n in df.columns and _has_declared_kind(df[n], declared.columns[n]) for n in r.names):
            # a column missing or of the wrong type: the schema checks (critical) name it; the rule is not judged
            put(f"rule__{r.name}", np.zeros(len(df), dtype=bool), np.zeros(len(df), dtype=bool))
            continue
        try:
            passed, checked = evaluate_rule(r, df, instants, spec.time.timezone)
        except Exception as exc:  # a rule that cannot run is reported by name, the batch rejected
            msg = f"rule {r.name!r} could not be evaluated: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
            errors.append(Outcome(table, "rule", r.name, "critical", False, None, None, error=msg, description=r.expr))
            passed = checked = np.zeros(len(df), dtype=bool)
        put(f"rule__{r.name}", passed, checked)
    return Derived(pd.DataFrame(columns, index=df.index), instants, errors)


def _matches(values: pd.Series, regex: str) -> Any:
    """Per row: does the value's text contain a match of ``regex`` (Python ``re.search``, as GX's regex
    expectations)? Searched once per distinct value."""
    import numpy as np
    import pandas as pd

    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
    except TypeError:  # unhashable values (lists): garbage the type check names; judge them as text, row by row
        codes, uniques = np.arange(len(values)), values.astype(str).to_numpy()
    found = pd.Series(uniques, dtype=object).astype(str).str.contains(regex, regex=True).to_numpy(dtype=bool)
    return found[np.maximum(codes, 0)] if len(found) else np.zeros(len(values), dtype=bool)


def _has_declared_kind(col: pd.Series, dtype: str) -> bool:
    import pandas as pd

    if dtype in ("int", "float"):
        return pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)
    return pd.api.types.is_bool_dtype(col.dtype) if dtype == "bool" else True


def evaluate_rule(rule: RuleSpec, df: pd.DataFrame, instants: dict[str, pd.Series], timezone: str) -> tuple[Any, Any]:
    """(passed, checked) boolean arrays of one rule over ``df``. Columns of the expressions come typed:
    parsed instants for date / datetime columns, the frame's values otherwise."""
    import numpy as np
    import pandas as pd

    names = rule.names
    env = pd.DataFrame({n: instants[n] if n in instants else df[n] for n in names}, index=df.index)
    checked = np.ones(len(df), dtype=bool)
    if rule.skip_nulls and names:
        checked &= ~env.isna().any(axis=1).to_numpy()
    local = {"timezone": timezone}

    def run(expr: str, frame: pd.DataFrame) -> np.ndarray:
        value = frame.eval(expr, engine="python", local_dict=local) if len(frame) else []
        values = np.asarray(value) if np.ndim(value) else np.full(len(frame), bool(value))
        if values.dtype != bool and not pd.Series(values).isin([True, False]).all():
            raise TypeError(f"{expr!r} does not give True/False per row")
        return values.astype(bool)

    if rule.when:
        checked &= run(rule.when, env)
    passed = np.zeros(len(df), dtype=bool)
    passed[checked] = run(rule.expr, env[checked])  # rows not checked are never evaluated (nulls, NaT)
    return passed, checked


def run_suites(
    spec: DatasetSpec,
    tables: dict[str, pd.DataFrame],
    interval: tuple[date, date],
    reference: dict[str, pd.DataFrame],
    docs_dir: str | None = None,
    derived: dict[str, Derived] | None = None,
) -> tuple[list[Outcome], dict[str, dict[int, list[str]]]]:
    """Validate tables (and their derived frames) in one GX context (one Data Docs build); return the outcomes
    and, per table and offending row, the reasons of the warning-level failures."""
    gx = _gx()
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
    if docs_dir:
        ctx.add_data_docs_site(
            "lake",
            {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    source = ctx.data_sources.add_pandas(name=spec.name)
    # One validation definition per frame (each reads its own); results land in the context's store, so a
    # single Data Docs build afterwards renders them all (the detail pass as its own page).
    outcomes: list[Outcome] = []
    row_reasons: dict[str, dict[int, list[str]]] = {t: {} for t in tables}
    derived = derived or {}
    for table, df in tables.items():
        suite = suite_for(spec, table, interval, reference)
        typed = _typed_text(df, spec.source.tables[table].columns)
        outcomes += _run_unproven(gx, ctx, source, spec, table, table, suite, typed, df, row_reasons[table])
        if table in derived:
            checks = derived_suite(spec, table)
            frame = derived[table].frame
            outcomes += _run_unproven(
                gx, ctx, source, spec, table, f"{table}_checks", checks, frame, df, row_reasons[table]
            )
            outcomes += derived[table].errors
    # Table-level rules (row count) judged again on the rows that would be published: a day whose rows are
    # quarantined down below the floor is rejected, not published nearly empty. A row count needs no GX run.
    for table, df in tables.items():
        kept = len(df) - len(row_reasons[table])
        for e in published_suite(spec, table, interval, reference, len(df)):
            low, high = e.kwargs.get("min_value"), e.kwargs.get("max_value")
            ok = (low is None or kept >= low) and (high is None or kept <= high)
            o = Outcome(table, e.check or e.type, "published", e.severity, ok, None, None, kept, None, e.description)
            outcomes.append(o)
    if docs_dir:
        ctx.build_data_docs()
    return outcomes, row_reasons


def published_suite(
    spec: DatasetSpec,
    table: str,
    interval: tuple[date, date],
    reference: dict[str, pd.DataFrame],
    rows_in: int | None = None,
) -> list[SuiteEntry]:
    """Table-level expectations of the table's suite, re-judged on the rows that would be published, plus the
    dataset-neutral floor (``validation.defaults.min_published_rows``): quarantine may not take a table below
    it, though a table that arrived with fewer rows (``rows_in``: a day with no weather) is judged as it came."""
    out = [
        e._replace(target="published")
        for e in suite_for(spec, table, interval, reference)
        if e.type.startswith("expect_table_") and e.type != "expect_table_columns_to_match_set"
    ]
    floor = spec.validation.defaults.min_published_rows
    if floor:
        floor = floor if rows_in is None else min(floor, rows_in)
        out.append(
            SuiteEntry(
                "expect_table_row_count_to_be_between",
                {"min_value": floor},
                "critical",
                f"at least {floor} row(s) left to publish after quarantine",
                "published_rows",
                "published",
            )
        )
    return out


# Checks an int64 column passes by its dtype alone (no null, no inf, no fraction): recorded as passed without a
# GX run (a clean day has a dozen such columns; a column that arrives as float, e.g. with nulls, is checked).
PROVEN_BY_INT = ("expect_column_values_to_not_be_null", "finite", "integral")


def _run_unproven(
    gx, ctx, source, spec: DatasetSpec, table: str, asset: str, suite: list[SuiteEntry], frame, df, row_reasons
) -> list[Outcome]:
    """:func:`_run_frame` on the entries of ``suite`` that the dtypes of ``df`` (the table) do not prove."""
    import pandas as pd

    def proven(e: SuiteEntry) -> bool:
        column = e.target or e.kwargs.get("column")
        return (
            (e.check or e.type) in PROVEN_BY_INT
            and column in df.columns
            and pd.api.types.is_integer_dtype(df[column].dtype)
        )

    skip = [proven(e) for e in suite]
    todo = [e for e, p in zip(suite, skip, strict=True) if not p]
    ran = iter(_run_frame(gx, ctx, source, spec, table, asset, todo, frame, row_reasons))
    out = []
    for e, p in zip(suite, skip, strict=True):
        if p:
            target = e.target or e.kwargs["column"]
            out.append(
                Outcome(table, e.check or e.type, target, e.severity, True, len(df), 0, None, None, e.description)
            )
        else:
            out.append(next(ran))
    return out


def _run_frame(
    gx, ctx, source, spec: DatasetSpec, table: str, asset: str, suite: list[SuiteEntry], df: pd.DataFrame, row_reasons
) -> list[Outcome]:
    """Run one suite on one frame (in chunks of whole days when large); one outcome per expectation, and the
    reasons of each offending row of a warning-level failure added to ``row_reasons``."""
    batch = source.add_dataframe_asset(name=asset).add_batch_definition_whole_dataframe("batch")
    expectations = [
        _expectation(
            e.type,
            e.kwargs,
            {"severity": e.severity, "description": e.description, "check": e.check, "target": e.target},
        )
        for e in suite
    ]
    per_part: list[tuple[int, list[int], list[Outcome]]] = []
    for suffix, part, chosen in _parts(spec, suite, df):
        exps = [expectations[i] for i in chosen]
        results = _run_suite(gx, ctx, batch, f"{spec.name}.{asset}{suffix}", exps, part, FIRST_PASS)
        failed = [i for i, r in enumerate(results) if not r.success]
        if failed:
            name = f"{spec.name}.{asset}{suffix}.failed"
            detail = _run_suite(gx, ctx, batch, name, [exps[i] for i in failed], part, DETAIL_PASS)
            for i, r in zip(failed, detail, strict=True):
                results[i] = r
        part_outcomes: list[Outcome] = []
        _collect(results, table, part_outcomes, row_reasons)
        per_part.append((len(part), chosen, part_outcomes))
        del part, results
    return _merge_parts(len(expectations), per_part)


def _parts(spec: DatasetSpec, suite: list, df: pd.DataFrame) -> list[tuple[str, pd.DataFrame, list[int]]]:
    """How one table is validated: ``(name suffix, frame, indexes of the suite's expectations)`` per GX run.

    A table of at most ``validation.chunk_rows`` rows is one run. A larger one (a backfill or a bulk load) is
    validated in chunks of whole days of ``time.column``, so GX's per-expectation work (several hundred bytes
    a row) is bounded by the chunk, not the batch: row-level expectations and uniqueness over keys that
    include the day column run per chunk (their counts and offending rows add up exactly); table-level
    expectations (columns, row count) run once on the whole frame. A table with any other expectation (an
    aggregate such as a mean) is validated whole. Chunks keep the frame's row labels, so the offending rows
    GX reports are rows of ``df``."""
    import numpy as np
    import pandas as pd

    everything = list(range(len(suite)))
    day, limit = spec.time.column, spec.validation.chunk_rows
    if len(df) <= limit or day not in df.columns:
        return [("", df, everything)]
    whole, chunked = [], []
    for i, (type_, kwargs, *_) in enumerate(suite):
        if type_.startswith("expect_table_"):
            whole.append(i)
        elif type_.startswith("expect_column_values_to_") or (
            type_ == "expect_compound_columns_to_be_unique" and day in kwargs.get("column_list", [])
        ):
            chunked.append(i)
        else:
            return [("", df, everything)]
    codes, _ = pd.factorize(df[day], sort=True)  # missing days: code -1, validated with the first chunk
    sizes = np.bincount(codes[codes >= 0])
    chunk_of_day = (np.cumsum(sizes) - sizes) // limit  # whole days; a chunk starts where a day crosses a limit
    row_chunk = np.where(codes >= 0, chunk_of_day[np.maximum(codes, 0)], 0)
    parts = [(".table", df, whole)] if whole else []
    for k in np.unique(row_chunk):
        parts.append((f".part{int(k) + 1}", df[row_chunk == k], chunked))
    return parts


def _merge_parts(n: int, per_part: list[tuple[int, list[int], list[Outcome]]]) -> list[Outcome]:
    """One outcome per expectation (in suite order) from the outcomes of the runs that evaluated it. A chunk
    that passed was checked with BOOLEAN_ONLY (no counts): its rows count as elements, none unexpected."""
    import dataclasses

    found: list[list[tuple[int, Outcome]]] = [[] for _ in range(n)]
    for rows, chosen, part_outcomes in per_part:
        for i, o in zip(chosen, part_outcomes, strict=True):
            found[i].append((rows, o))
    merged = []
    for parts in found:
        first = parts[0][1]
        if len(parts) == 1:
            merged.append(first)
            continue
        failed = not all(o.success for _, o in parts)
        # Counts matter only when it failed; a chunk that passed then had none unexpected.
        os_ = [
            dataclasses.replace(o, element_count=r, unexpected_count=0) if failed and o.element_count is None else o
            for r, o in parts
        ]

        def total(key: str, os_: list[Outcome] = os_) -> int | None:
            values = [getattr(o, key) for o in os_]
            return None if any(v is None for v in values) else sum(values)

        errors = list(dict.fromkeys(o.error for o in os_ if o.error))
        merged.append(
            dataclasses.replace(
                first,
                success=not failed,
                element_count=total("element_count"),
                unexpected_count=total("unexpected_count"),
                observed=next((o.observed for o in os_ if o.observed is not None), None),
                error="; ".join(errors) or None,
            )
        )
    return merged


def _typed_text(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """The frame GX validates: text columns whose values are all str as pandas' string dtype.

    On an object column GX's type check calls isinstance() on every value in Python (most of a year's
    validation time). pandas' C type inference decides the same rule ("every non-null value is a str") for a
    whole column at once; such a column is handed to GX with the string dtype, whose type check GX then reads
    from the dtype. A column holding anything else stays object, so GX checks it value by value and counts the
    offenders. Same rows, same index: row indexes GX reports apply to ``df``; ``df`` itself is not changed."""
    import pandas as pd

    text = [
        c
        for c, t in columns.items()
        if t in TEXT_TYPES
        and c in df.columns
        and df[c].dtype == object
        and pd.api.types.infer_dtype(df[c], skipna=True) == "string"
    ]
    if not text:
        return df
    out = df.copy(deep=False)
    for c in text:
        out[c] = df[c].astype("string")
    return out


def _run_suite(gx, ctx, batch, name: str, expectations: list, df: pd.DataFrame, result_format: dict) -> list:
    """Run expectations on one frame; their results in the order given."""
    # All at once: add_expectation compares each new expectation with every one before it (quadratic).
    fresh = [e.copy(update={"id": None}) if e.id else e for e in expectations]
    suite = ctx.suites.add(gx.ExpectationSuite(name=name, expectations=fresh))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    vr = vd.run(batch_parameters={"dataframe": df}, result_format=result_format)
    by_id = {r.expectation_config.id: r for r in vr.results}
    return [by_id[e.id] for e in suite.expectations]


def _collect(results: list, table: str, outcomes: list[Outcome], row_reasons: dict[int, list[str]]) -> None:
    for r in results:
        cfg = r.expectation_config
        kw = cfg.kwargs
        target = cfg.meta.get("target") or kw.get("column") or ",".join(kw.get("column_list", [])) or "table"
        res = r.result or {}
        error = _exception_message(r.exception_info or {})
        o = Outcome(
            table=table,
            expectation=cfg.meta.get("check") or cfg.type,
            target=target,
            severity=cfg.meta.get("severity", "critical"),
            success=bool(r.success),
            element_count=res.get("element_count"),
            unexpected_count=res.get("unexpected_count"),
            observed=_jsonable(res.get("observed_value")),
            error=error,
            description=cfg.meta.get("description"),
        )
        outcomes.append(o)
        if not o.success and o.severity == "warning":
            for i in res.get("unexpected_index_list") or []:
                row_reasons.setdefault(int(i), []).append(o.reason)


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX 1.x reports an expectation's own exception flat, and a failing metric's keyed by the metric id."""
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    messages = [v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return "; ".join(m for m in messages if m) or None


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


@dataclass
class SplitResult:
    report: ValidationReport
    valid: dict[str, pd.DataFrame]
    quarantined: dict[str, pd.DataFrame]


def validate_batch(
    spec: DatasetSpec,
    tables: dict[str, pd.DataFrame],
    interval: tuple[date, date],
    reference: dict[str, pd.DataFrame],
    *,
    partition: str,
    docs_dir: str | None = None,
) -> SplitResult:
    """Validate every table of a batch and split rows into valid and quarantined (with ``_reasons``)."""
    outcomes: list[Outcome] = []
    valid: dict[str, pd.DataFrame] = {}
    quarantined: dict[str, pd.DataFrame] = {}
    rows_in = {}
    present = {}
    for table, declared in spec.source.tables.items():
        if table not in tables:
            missing = Outcome(table, "table_present", "table", "critical", False, None, None, error="table missing")
            outcomes.append(missing)
            continue
        wall_clock = frozenset(c for c in declared.columns if timezone_mode(declared, c) in ("local", "any"))
        present[table] = _conform(tables[table], declared.columns, wall_clock)
        rows_in[table] = len(present[table])
    derived = {t: derive_checks(spec, t, df) for t, df in present.items()}
    suite_outcomes, reasons_by_table = run_suites(spec, present, interval, reference, docs_dir, derived)
    outcomes += suite_outcomes
    kept: dict[str, pd.DataFrame] = {}
    for table, df in present.items():
        row_reasons = reasons_by_table[table]
        mask = df.index.isin(list(row_reasons))
        q = df[mask].copy()
        q["_reasons"] = [json.dumps(sorted(set(row_reasons[i]))) for i in q.index]
        kept[table] = df[~mask] if len(q) else df  # nothing quarantined: no copy of the batch
        quarantined[table] = q.reset_index(drop=True)
    if not any(o.severity == "critical" and not o.success for o in outcomes):
        for table, df in kept.items():
            try:
                valid[table] = published_frame(df, spec.source.tables[table], derived[table].instants)
            except (TypeError, ValueError) as exc:  # a gap in the checks above: refuse, never publish mistyped
                error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
                outcomes.append(Outcome(table, "published_schema", "table", "critical", False, None, None, error=error))
    report = ValidationReport(spec.name, partition, outcomes, rows_in)
    if report.critical_failures:  # nothing of a rejected batch may be published, not even by another caller
        valid = {t: df.iloc[0:0] for t, df in kept.items()}
        report.rows_valid = {t: 0 for t in rows_in}
        report.rows_quarantined = dict(rows_in)
    else:
        report.rows_valid = {t: len(v) for t, v in valid.items()}
        report.rows_quarantined = {t: len(q) for t, q in quarantined.items() if len(q)}
    return SplitResult(report, valid, quarantined)


PUBLISHED_DTYPES = {"int": "int64", "float": "float64", "bool": "bool"}  # every other dtype: object (str)


def published_frame(df: pd.DataFrame, declared: TableSpec, instants: dict[str, pd.Series]) -> pd.DataFrame:
    """The rows to publish with exactly the declared schema: the declared columns in declared order, int as
    int64, float as float64, text (str, category, date, datetime: ISO text checked to be a real instant with
    the declared timezone semantics) as str or None. Raises if a value cannot take its dtype (the checks
    before this quarantine such rows, so that would be a gap in them, and the batch is rejected)."""
    import pandas as pd

    out = {}
    for c, t in declared.columns.items():
        col = df[c]
        if t in PUBLISHED_DTYPES:
            out[c] = col if col.dtype == PUBLISHED_DTYPES[t] else col.astype(PUBLISHED_DTYPES[t])
            if t == "int" and col.dtype != "int64" and not (out[c].to_numpy() == col.to_numpy()).all():
                raise ValueError(f"int column {c!r} holds values that are not whole numbers")
        else:
            out[c] = col if col.dtype == object else col.astype(object).where(col.notna(), None)
        if t not in PUBLISHED_DTYPES and out[c].isna().any() and not declared.nullable(c):
            raise ValueError(f"column {c!r} is not nullable but a null is left")
    return pd.DataFrame(out, index=df.index).reset_index(drop=True)


def docs_tempdir() -> str:
    """A local folder to build one batch's Data Docs in before they are copied into the lake."""
    return tempfile.mkdtemp(prefix="gx-docs-")


def add_docs_context(local_dir: str, report: ValidationReport) -> None:
    """Head the Data Docs index (``index.html`` in ``local_dir``) with what it is about: dataset, day, verdict,
    rows in / valid / quarantined per table, the failed expectations, and a link to Model health (a new tab: the
    docs are served sandboxed). Every value is escaped."""
    import html as h

    index = Path(local_dir) / "index.html"
    if not index.exists():
        return
    rows = "".join(
        f"<tr><td>{h.escape(t)}</td><td>{n}</td><td>{report.rows_valid.get(t, 0)}</td>"
        f"<td>{report.rows_quarantined.get(t, 0)}</td></tr>"
        for t, n in report.rows_in.items()
    )
    failed = "".join(f"<li>{h.escape(o.describe())}</li>" for o in report.critical_failures + report.warnings)
    day = report.partition.removeprefix("date=")
    header = (
        '<div id="mlops-context" style="font-family:system-ui,sans-serif;margin:1rem 1.5rem;padding:.8rem 1rem;'
        'border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa;color:#1f2328">'
        f"<h1 style='font-size:1.3rem;margin:0 0 .4rem'>Validation of {h.escape(report.dataset)} {h.escape(day)}: "
        f"{h.escape(report.status)}</h1>"
        "<table style='border-collapse:collapse'><tr><th>table</th><th>rows in</th><th>valid</th>"
        f"<th>quarantined</th></tr>{rows}</table>"
        + (f"<ul>{failed}</ul>" if failed else "<p>every expectation passed</p>")
        + f"<p><a href='/mlops/health/{h.escape(report.dataset)}' target='_blank' rel='noopener'>Model health</a>"
        " · the GX pages below load their styles from a CDN and look plain without internet</p></div>"
    )
    text = index.read_text(encoding="utf-8")
    at = text.find("<body>")
    text = text[: at + 6] + header + text[at + 6 :] if at >= 0 else header + text
    title = f"<title>Data Docs: {h.escape(report.dataset)} {h.escape(day)}</title>"
    index.write_text(re.sub(r"<title>.*?</title>", title, text, count=1, flags=re.S), encoding="utf-8")


def upload_dir(lake, local_dir: str, rel: str) -> str:
    """Copy a local folder (e.g. Data Docs) to ``rel`` in the lake; return the URI of its index.html."""
    base = Path(local_dir)
    index_uri = ""
    for p in sorted(base.rglob("*")):
        if p.is_file():
            uri = lake.write_bytes(f"{rel}/{p.relative_to(base).as_posix()}", p.read_bytes())
            if p.relative_to(base).as_posix() == "index.html":
                index_uri = uri
    return index_uri
