"""Validation with Great Expectations Core, the suite built from the dataset spec.

Severity decides what a failure does: a ``critical`` failure quarantines the whole batch (and the run
fails with a message naming each failed expectation and its counts); a ``warning`` failure quarantines
only the offending rows, each with its reasons, and the rest is validated. Schema checks (exact column
set, column types) come from the spec's declared columns and are always critical.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.config import DatasetSpec, ExpectationSpec, Severity
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
) -> list[tuple[str, dict[str, Any], str, str | None]]:
    """(expectation type, kwargs, severity, description) for one table: schema checks, then the spec's."""
    cols = spec.source.tables[table].columns
    out: list[tuple[str, dict[str, Any], str, str | None]] = [
        (
            "expect_table_columns_to_match_set",
            {"column_set": list(cols), "exact_match": True},
            "critical",
            "schema: exactly the declared columns",
        )
    ]
    for c, t in cols.items():
        out.append(
            (
                "expect_column_values_to_be_in_type_list",
                {"column": c, "type_list": TYPE_LISTS[t]},
                "critical",
                f"schema: {t}",
            )
        )
        if t in ISO_FORMATS:
            out.append(
                (
                    "expect_column_values_to_match_regex",
                    {"column": c, "regex": ISO_FORMATS[t]},
                    "critical",
                    f"schema: ISO 8601 {t}",
                )
            )
    out += [
        (e.type, expectation_kwargs(e, interval, reference), e.severity.value, e.description)
        for e in spec.validation.expectations
        if e.table == table
    ]
    return out


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


def _conform(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
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
                df[c] = utc.dt.strftime("%Y-%m-%d" if t == "date" else "%Y-%m-%dT%H:%M:%SZ").astype(object)
            elif col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) not in ("string", "empty"):
                # Only a column holding date objects needs a per-value conversion (text is left as it is).
                fmt = (lambda v: v.isoformat()) if t == "date" else (lambda v: v.strftime("%Y-%m-%dT%H:%M:%SZ"))
                df[c] = col.map(lambda v, f=fmt: f(v) if isinstance(v, dt.date) else v)
        elif t in ("str", "category") and isinstance(col.dtype, (pd.CategoricalDtype, pd.StringDtype)):
            df[c] = col.astype(object).where(col.notna(), None)
    return df


def run_suites(
    spec: DatasetSpec,
    tables: dict[str, pd.DataFrame],
    interval: tuple[date, date],
    reference: dict[str, pd.DataFrame],
    docs_dir: str | None = None,
) -> tuple[list[Outcome], dict[str, dict[int, list[str]]]]:
    """Validate tables with one GX checkpoint (one Data Docs build); return the outcomes and, per table and
    offending row, the reasons of the warning-level failures."""
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
    # One validation definition per table (each reads its own frame); results land in the context's store,
    # so a single Data Docs build afterwards renders them all (the detail pass as its own page).
    outcomes: list[Outcome] = []
    row_reasons: dict[str, dict[int, list[str]]] = {t: {} for t in tables}
    for table, df in tables.items():
        batch = source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe("batch")
        suite = suite_for(spec, table, interval, reference)
        expectations = [
            _expectation(type_, kwargs, {"severity": severity, "description": description})
            for type_, kwargs, severity, description in suite
        ]
        typed = _typed_text(df, spec.source.tables[table].columns)
        per_part: list[tuple[int, list[int], list[Outcome]]] = []
        for suffix, part, chosen in _parts(spec, suite, typed):
            exps = [expectations[i] for i in chosen]
            results = _run_suite(gx, ctx, batch, f"{spec.name}.{table}{suffix}", exps, part, FIRST_PASS)
            failed = [i for i, r in enumerate(results) if not r.success]
            if failed:
                name = f"{spec.name}.{table}{suffix}.failed"
                detail = _run_suite(gx, ctx, batch, name, [exps[i] for i in failed], part, DETAIL_PASS)
                for i, r in zip(failed, detail, strict=True):
                    results[i] = r
            part_outcomes: list[Outcome] = []
            _collect(results, table, part_outcomes, row_reasons[table])
            per_part.append((len(part), chosen, part_outcomes))
            del part, results
        outcomes += _merge_parts(len(expectations), per_part)
    if docs_dir:
        ctx.build_data_docs()
    return outcomes, row_reasons


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
    for i, (type_, kwargs, _, _) in enumerate(suite):
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
    suite = gx.ExpectationSuite(name=name)
    for e in expectations:
        suite.add_expectation(e.copy(update={"id": None}) if e.id else e)
    suite = ctx.suites.add(suite)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    vr = vd.run(batch_parameters={"dataframe": df}, result_format=result_format)
    by_id = {r.expectation_config.id: r for r in vr.results}
    return [by_id[e.id] for e in suite.expectations]


def _collect(results: list, table: str, outcomes: list[Outcome], row_reasons: dict[int, list[str]]) -> None:
    for r in results:
        cfg = r.expectation_config
        kw = cfg.kwargs
        target = kw.get("column") or ",".join(kw.get("column_list", [])) or "table"
        res = r.result or {}
        error = _exception_message(r.exception_info or {})
        o = Outcome(
            table=table,
            expectation=cfg.type,
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
        present[table] = _conform(tables[table], declared.columns)
        rows_in[table] = len(present[table])
    suite_outcomes, reasons_by_table = run_suites(spec, present, interval, reference, docs_dir)
    outcomes += suite_outcomes
    for table, df in present.items():
        row_reasons = reasons_by_table[table]
        mask = df.index.isin(list(row_reasons))
        q = df[mask].copy()
        q["_reasons"] = [json.dumps(sorted(set(row_reasons[i]))) for i in q.index]
        kept = df[~mask].reset_index(drop=True) if len(q) else df  # nothing quarantined: no copy of the batch
        valid[table] = _restore_ints(kept, spec.source.tables[table].columns)
        quarantined[table] = q.reset_index(drop=True)
    report = ValidationReport(spec.name, partition, outcomes, rows_in)
    if report.critical_failures:  # nothing of a rejected batch may be published, not even by another caller
        valid = {t: df.iloc[0:0] for t, df in valid.items()}
        report.rows_valid = {t: 0 for t in rows_in}
        report.rows_quarantined = dict(rows_in)
    else:
        report.rows_valid = {t: len(v) for t, v in valid.items()}
        report.rows_quarantined = {t: len(q) for t, q in quarantined.items() if len(q)}
    return SplitResult(report, valid, quarantined)


def _restore_ints(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Give declared int columns back their int dtype once the rows with nulls are quarantined (a null
    makes pandas read the column as float), so every validated partition has the same schema."""
    import numpy as np

    for c, t in columns.items():
        if t == "int" and c in df.columns and df[c].dtype == "float64" and df[c].notna().all():
            values = df[c].to_numpy()
            if np.array_equal(values, np.round(values)):
                df[c] = values.astype("int64")
    return df


def docs_tempdir() -> str:
    """A local folder to build one batch's Data Docs in before they are copied into the lake."""
    return tempfile.mkdtemp(prefix="gx-docs-")


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
