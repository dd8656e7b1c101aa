"""Dataset specs: one YAML file per dataset under include/config/, loaded into typed models.

An invalid spec raises :class:`SpecError` with one message naming the file, each bad field and the
problem. Loading is cheap (PyYAML + pydantic only) because DAG files call it at parse time.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from datetime import date, timedelta
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SPEC_DIR = Path(__file__).resolve().parents[1] / "config"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

DType = Literal["int", "float", "str", "date", "datetime", "bool", "category"]


class SpecError(ValueError):
    """A dataset spec that cannot be loaded; the message names the file, the field and the problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Severity(StrEnum):
    critical = "critical"  # the whole batch is quarantined and the run fails
    warning = "warning"  # only the offending rows are quarantined; the rest proceeds


class ColumnRules(_Model):
    """What a column's values must be beyond their dtype (all optional; defaults are safe for any dataset).

    ``nullable``: may the column hold nulls? Default: no for ``int`` (a validated int column is int64, which
    has no null) and for the table's ``time_column``, yes otherwise. A null in a non-nullable column
    quarantines the row.
    ``pattern``: a regex every non-null text value must match in full (codes: case, padding, length).
    ``timezone`` (datetime columns): how text is read. ``utc``: an explicit zero offset (``Z`` / ``+00:00``)
    is required; ``offset``: any explicit offset is required; ``local``: no offset allowed, the text is
    wall-clock time in the spec's ``time.timezone`` (a time that does not exist there is invalid). Undeclared:
    either an explicit offset or wall-clock time in ``time.timezone``.
    """

    nullable: bool | None = None
    pattern: str | None = None
    timezone: Literal["utc", "offset", "local"] | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"pattern {v!r} is not a valid regex: {exc}") from None
        return v


class TableSpec(_Model):
    """One source table extracted per interval: its query and its declared schema."""

    query: str = Field(description="SQL with :start and :end bind parameters (ISO dates, end exclusive)")
    columns: dict[str, DType] = Field(min_length=1, description="column -> logical dtype")
    time_column: str = Field(description="date column bounding the interval")
    constraints: dict[str, ColumnRules] = Field(
        default_factory=dict, description="column -> nullability / pattern / timezone (optional per column)"
    )

    @model_validator(mode="after")
    def _check(self) -> TableSpec:
        if ":start" not in self.query or ":end" not in self.query:
            raise ValueError("query must be bounded by the interval: use both :start and :end")
        if self.time_column not in self.columns:
            raise ValueError(f"time_column {self.time_column!r} is not one of the table's columns")
        problems = []
        for c, r in self.constraints.items():
            t = self.columns.get(c)
            if t is None:
                problems.append(f"constraints: {c!r} is not one of the table's columns")
            elif r.nullable and (t == "int" or c == self.time_column):
                problems.append(f"constraints: {c!r} cannot be nullable (an int column or the time column)")
            elif r.pattern is not None and t not in ("str", "category"):
                problems.append(f"constraints: pattern on {c!r} needs a str/category column, not {t}")
            elif r.timezone is not None and t != "datetime":
                problems.append(f"constraints: timezone on {c!r} needs a datetime column, not {t}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def nullable(self, column: str) -> bool:
        """Whether ``column`` may hold nulls (declared, else: not for int, yes for any other dtype)."""
        declared = self.constraints.get(column)
        if declared is not None and declared.nullable is not None:
            return declared.nullable
        return self.columns[column] != "int" and column != self.time_column

    def rules(self, column: str) -> ColumnRules:
        return self.constraints.get(column) or ColumnRules()


class SourceSpec(_Model):
    connection_id: str = Field(description="Airflow connection of the source database")
    primary_table: str = Field(description="the entity table: one row per prediction")
    tables: dict[str, TableSpec] = Field(min_length=1)
    reference: dict[str, str] = Field(default_factory=dict, description="static tables: name -> SQL")
    file_formats: list[Literal["csv", "parquet"]] = ["csv", "parquet"]
    max_file_mb: float = Field(default=200, gt=0, description="manual-ingest files larger than this (MiB) are refused")
    max_file_rows: int = Field(
        default=5_000_000, gt=0, description="a manual-ingest file with more rows is rejected (Parquet: before reading)"
    )
    max_uncompressed_mb: float = Field(
        default=2048, gt=0, description="a Parquet upload whose footer declares more uncompressed data is rejected"
    )

    @model_validator(mode="after")
    def _check(self) -> SourceSpec:
        if self.primary_table not in self.tables:
            raise ValueError(f"primary_table {self.primary_table!r} is not in tables {sorted(self.tables)}")
        return self


class TimeSpec(_Model):
    column: str = Field(description="the primary table's date column")
    grain: Literal["day"] = "day"
    start: date
    end: date = Field(description="last day of the source's time range (inclusive)")
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _check(self) -> TimeSpec:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class LabelSpec(_Model):
    """Binary label: ``column > threshold``, with explicit rules for rows the column cannot decide."""

    name: str
    column: str
    threshold: float
    cancelled_when_null: str = Field(description="a row with this column null is a cancellation")
    cancelled: Literal["exclude", "positive", "negative"]
    diverted: Literal["exclude", "positive", "negative"] = Field(
        description="rule for rows that happened (cancelled_when_null set) but have no label column value"
    )


class FeatureSpec(_Model):
    name: str
    dtype: Literal["int", "float", "category"]
    description: str = Field(min_length=3)
    computed: str = Field(min_length=3, description="how the value is computed, for people")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("feature names are lower_snake_case")
        return v


SUPPORTED_EXPECTATIONS = {
    "expect_table_columns_to_match_set": (),
    "expect_column_values_to_be_of_type": ("column",),
    "expect_column_values_to_not_be_null": ("column",),
    "expect_column_values_to_be_between": ("column",),
    "expect_column_values_to_be_in_set": ("column",),
    "expect_compound_columns_to_be_unique": ("column_list",),
    "expect_table_row_count_to_be_between": (),
}


class ExpectationSpec(_Model):
    """A GX Core expectation (its snake_case name and kwargs) plus our severity.

    ``value_set_from: <reference_table>.<column>`` fills ``value_set`` from a reference table at run time;
    ``min_value`` / ``max_value`` may be ``$interval_start`` / ``$interval_end_inclusive``.
    """

    table: str
    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Severity
    value_set_from: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ExpectationSpec:
        if self.type not in SUPPORTED_EXPECTATIONS:
            raise ValueError(f"unsupported expectation {self.type!r}; supported: {sorted(SUPPORTED_EXPECTATIONS)}")
        missing = [k for k in SUPPORTED_EXPECTATIONS[self.type] if k not in self.kwargs]
        if missing:
            raise ValueError(f"{self.type} needs kwargs {missing}")
        if self.value_set_from and self.value_set_from.count(".") != 1:
            raise ValueError("value_set_from must look like <reference_table>.<column>")
        return self


class RuleSpec(_Model):
    """A cross-column rule: a pandas expression over one table's columns that must be True for every row.

    Date columns are datetime64 in the expression and datetime columns UTC instants (``@timezone`` is the
    spec's ``time.timezone``), so ``time_hour.dt.tz_convert(@timezone).dt.hour == hour`` works. With ``when``,
    only rows where that expression is True are checked. With ``skip_nulls`` (default), a row with a null in
    any column the expressions name is not checked. A failing row is quarantined (``warning``) or fails the
    batch (``critical``) with the reason ``<table>.rule(<name>)``.
    """

    table: str
    name: str
    expr: str
    when: str | None = None
    skip_nulls: bool = True
    severity: Severity = Severity.warning
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("rule names are lower_snake_case")
        return v

    @field_validator("expr", "when")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ast.parse(v.replace("@", ""), mode="eval")
            except SyntaxError as exc:
                raise ValueError(f"expression {v!r} does not parse: {exc.msg}") from None
        return v

    @property
    def names(self) -> list[str]:
        """Every bare name the expressions use (the columns they read; ``@`` locals excluded)."""
        out: list[str] = []
        for text in (self.expr, self.when):
            if text:
                tree = ast.parse(re.sub(r"@\w+", "0", text), mode="eval")
                called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}  # abs(...) etc.
                for node in ast.walk(tree):
                    if isinstance(node, ast.Name) and id(node) not in called and node.id not in out:
                        out.append(node.id)
        return out


class DefaultChecks(_Model):
    """Dataset-neutral checks every table gets from its declared columns, with their severities."""

    not_null: Severity = Field(default=Severity.warning, description="a null in a non-nullable column")
    finite: Severity = Field(default=Severity.warning, description="inf / -inf in a numeric column")
    integral: Severity = Field(default=Severity.warning, description="a fraction in an int column")
    no_nul: Severity = Field(default=Severity.warning, description="a NUL character in a text column")
    pattern: Severity = Field(default=Severity.warning, description="a text value not matching its pattern")
    instant: Severity = Field(
        default=Severity.warning,
        description="ISO text that is no real calendar date / instant, or lacks the declared timezone semantics",
    )
    min_published_rows: int = Field(
        default=1,
        ge=0,
        description="every table must keep at least this many rows after quarantine (if it had as many)",
    )


class ValidationSpec(_Model):
    expectations: list[ExpectationSpec] = Field(min_length=1)
    rules: list[RuleSpec] = Field(default_factory=list, description="cross-column rules (see RuleSpec)")
    defaults: DefaultChecks = Field(default_factory=DefaultChecks)
    chunk_rows: int = Field(
        default=1_000_000,
        ge=10_000,
        description="a table with more rows is validated in chunks of whole days (bounded memory; same result)",
    )


class TimeoutSpec(_Model):
    """``execution_timeout`` of every task: per DAG kind (ingest, train, score, monitor, rollback), else default."""

    default_minutes: float = Field(default=240, gt=0, description="training and any DAG kind not listed")
    per_dag: dict[str, float] = Field(
        default_factory=lambda: {"ingest": 60, "score": 60, "monitor": 60, "rollback": 15},
        description="DAG kind -> minutes (a day's ingest takes seconds; a hung parse or source is cut off)",
    )

    def execution_timeout(self, kind: str) -> timedelta:
        """The ``execution_timeout`` of every task of the ``<ds>_<kind>`` DAG."""
        return timedelta(minutes=self.per_dag.get(kind, self.default_minutes))


class CandidateSpec(_Model):
    name: str
    estimator: Literal["logistic_regression", "hist_gradient_boosting"]
    params: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, list[Any]] = Field(default_factory=dict)


class TrainingSpec(_Model):
    window_days: int = Field(gt=0, description="days of validated data a training run uses")
    validation_days: int = Field(gt=0)
    test_days: int = Field(gt=0)
    cadence_days: int = Field(gt=0, description="train again after this many new validated days")
    search_iterations: int = Field(default=4, ge=1)
    seed: int = 42
    candidates: list[CandidateSpec] = Field(min_length=1)
    reference_sample_rows: int = Field(default=5000, gt=0)
    max_fit_rows: int = Field(
        default=2_000_000,
        ge=10_000,
        description="candidates are fitted on a seeded random sample of at most this many training rows "
        "(validation, test, threshold and gate always use every row)",
    )

    @model_validator(mode="after")
    def _check(self) -> TrainingSpec:
        if self.validation_days + self.test_days >= self.window_days:
            raise ValueError("validation_days + test_days must leave training days inside window_days")
        return self


class GateSpec(_Model):
    min_roc_auc: float = Field(ge=0, le=1)
    max_brier: float = Field(ge=0, le=1)
    max_roc_auc_drop: float = Field(ge=0, le=1, description="allowed drop against the champion")
    max_brier_rise: float | None = Field(
        default=None, ge=0, le=1, description="allowed Brier rise against the champion (None: not checked)"
    )
    slice_columns: list[str] = Field(default_factory=list)
    min_slice_rows: int = Field(default=200, gt=0)
    max_slice_gap: float = Field(default=0.15, ge=0, le=1)
    max_latency_ms_per_1k: float = Field(default=500, gt=0)
    max_model_mb: float = Field(default=50, gt=0)
    forbidden_features: list[str] = Field(default_factory=list)
    require_approval: bool = False


class MonitoringSpec(_Model):
    window_days: int = Field(gt=0)
    max_drift_share: float = Field(ge=0, le=1)
    max_prediction_drift: float = Field(ge=0, description="e.g. Wasserstein distance of scores")
    max_roc_auc_drop: float = Field(ge=0, le=1)
    max_brier_rise: float = Field(ge=0, le=1)
    retrain_debounce_days: int = Field(ge=0)
    max_weighted_drift: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="retrain when materially drifted columns hold more than this share of the champion's importance",
    )
    material_numeric_drift: float = Field(
        default=1.0, gt=0, description="normed Wasserstein distance (reference std) of a materially drifted number"
    )
    material_categorical_drift: float = Field(
        default=0.1, gt=0, le=1, description="Jensen-Shannon distance of a materially drifted category"
    )
    min_labelled_rows: int = Field(
        default=1000, gt=0, description="fewer labelled rows in the window: ROC AUC / Brier checks are skipped"
    )
    max_drift_rows: int = Field(
        default=50_000,
        ge=1000,
        description="the Evidently drift report compares at most this many rows of the window (a seeded random "
        "sample) with the reference; quality and prediction drift always use every row",
    )


class DatasetSpec(_Model):
    """Everything that makes a dataset: where it comes from, what it must look like, how to model it."""

    name: str
    description: str
    owner: str = "mlops"
    source: SourceSpec
    time: TimeSpec
    entity_keys: list[str] = Field(min_length=1)
    label: LabelSpec
    features: list[FeatureSpec] = Field(min_length=1)
    validation: ValidationSpec
    training: TrainingSpec
    gate: GateSpec
    monitoring: MonitoringSpec
    timeouts: TimeoutSpec = Field(default_factory=TimeoutSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("dataset names are lower_snake_case (they become DAG ids and lake folders)")
        return v

    @model_validator(mode="after")
    def _cross_check(self) -> DatasetSpec:
        primary = self.source.tables[self.source.primary_table].columns
        problems = []
        if self.time.column not in primary:
            problems.append(f"time.column {self.time.column!r} is not a column of {self.source.primary_table}")
        problems += [
            f"entity_keys: {k!r} is not a column of the primary table" for k in self.entity_keys if k not in primary
        ]
        for col in (self.label.column, self.label.cancelled_when_null):
            if col not in primary:
                problems.append(f"label: {col!r} is not a column of the primary table")
        names = [f.name for f in self.features]
        problems += [f"features: {n!r} is declared twice" for n in sorted({n for n in names if names.count(n) > 1})]
        problems += [
            f"gate.forbidden_features: {n!r} is also a declared feature"
            for n in self.gate.forbidden_features
            if n in names
        ]
        for i, e in enumerate(self.validation.expectations):
            where = f"validation.expectations[{i}] ({e.type})"
            if e.table not in self.source.tables:
                problems.append(f"{where}: table {e.table!r} is not a source table")
                continue
            cols = self.source.tables[e.table].columns
            named = [e.kwargs["column"]] if "column" in e.kwargs else list(e.kwargs.get("column_list", []))
            problems += [f"{where}: column {c!r} is not in table {e.table!r}" for c in named if c not in cols]
            if e.value_set_from and e.value_set_from.split(".")[0] not in self.source.reference:
                problems.append(f"{where}: value_set_from names unknown reference table {e.value_set_from!r}")
        rule_names = [(r.table, r.name) for r in self.validation.rules]
        for i, r in enumerate(self.validation.rules):
            where = f"validation.rules[{i}] ({r.name})"
            if r.table not in self.source.tables:
                problems.append(f"{where}: table {r.table!r} is not a source table")
                continue
            cols = self.source.tables[r.table].columns
            problems += [f"{where}: {n!r} is not a column of table {r.table!r}" for n in r.names if n not in cols]
            if rule_names.count((r.table, r.name)) > 1:
                problems.append(f"{where}: rule name declared twice for table {r.table!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.dtype == "category"]

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.dtype != "category"]


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid dataset spec ({err.error_count()} problem(s))"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_spec_file(path: str | os.PathLike[str]) -> DatasetSpec:
    """Load and validate one spec file; raise SpecError naming the file, field and problem."""
    path = Path(path)
    try:
        # libyaml's C loader: the pure-Python one took ~0.1 s per DAG file parse for this spec
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # nosec B506 - a SafeLoader
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec must be a YAML mapping, got {type(raw).__name__}")
    if raw.get("name") not in (None, path.stem):
        raise SpecError(f"{path}: name: {raw.get('name')!r} must equal the file name {path.stem!r}")
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_errors(path, exc)) from None


def spec_dir() -> Path:
    return Path(os.environ.get("MLOPS_SPEC_DIR", SPEC_DIR))


def spec_paths(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every dataset spec file, sorted; files starting with '_' are ignored (templates, fixtures)."""
    d = Path(directory) if directory else spec_dir()
    return sorted(p for p in d.glob("*.yaml") if not p.name.startswith("_"))


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int) -> DatasetSpec:
    return load_spec_file(path)


def load_spec(name: str, directory: str | os.PathLike[str] | None = None) -> DatasetSpec:
    """The spec of dataset ``name`` (cached per file modification time)."""
    path = (Path(directory) if directory else spec_dir()) / f"{name}.yaml"
    if not path.exists():
        raise SpecError(f"{path}: no spec for dataset {name!r}")
    return _load_cached(str(path), path.stat().st_mtime_ns)


def spec_hash(spec: DatasetSpec) -> str:
    """Stable hash of the spec's content (not its formatting): tags runs and feature versions."""
    canon = json.dumps(spec.model_dump(mode="json", exclude={"description", "owner"}), sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]
