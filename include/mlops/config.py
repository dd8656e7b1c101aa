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
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class SeedSpec(_Model):
    """Where ``make seed DATASET=<name>`` gets the source tables of the embedded default (a demo or test source;
    production sources are filled by their own systems). Exactly one of:

    - ``files``: ``{table: path}``, CSV or Parquet, relative to the repository or absolute;
    - ``package_files``: ``{table: "<package>:<path inside it>"}``, a data file a pip package ships;
    - ``loader``: ``"<module>:<function>"`` returning ``{table: DataFrame}`` (the dataset's own module).
    """

    files: dict[str, str] | None = None
    package_files: dict[str, str] | None = None
    loader: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SeedSpec:
        given = [k for k in ("files", "package_files", "loader") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"say exactly one of files, package_files or loader (got {given or 'none'})")
        if self.loader and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", self.loader):
            raise ValueError(f"loader {self.loader!r} must look like <module>:<function>")
        bad = [v for v in (self.package_files or {}).values() if ":" not in v]
        if bad:
            raise ValueError(f"package_files entries look like <package>:<path>, got {bad}")
        return self


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
    seed: SeedSpec | None = Field(default=None, description="how make seed fills the embedded source database")

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
    replay: bool = Field(
        default=False,
        description="a historical dataset: its ingest and monitor DAGs run on the replay clock (one data day per "
        "real interval under make up; include/mlops/replay.py) instead of the real-time daily schedule",
    )

    @model_validator(mode="after")
    def _check(self) -> TimeSpec:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


LabelValue = str | int | float | bool


class LabelRule(_Model):
    """A row rule checked before the label's threshold / value set: the first rule that matches decides."""

    if_null: str | None = Field(default=None, description="the rule matches rows where this column is null")
    if_in: dict[str, list[LabelValue]] | None = Field(
        default=None, description="{column: [values]}: the rule matches rows whose column holds one of the values"
    )
    then: Literal["exclude", "positive", "negative"]
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> LabelRule:
        if (self.if_null is None) == (self.if_in is None):
            raise ValueError("a label rule has exactly one condition: if_null: <column> or if_in: {<column>: [...]}")
        if self.if_in is not None and len(self.if_in) != 1:
            raise ValueError("if_in names exactly one column: {<column>: [values]}")
        return self

    @property
    def column(self) -> str:
        return self.if_null if self.if_null is not None else next(iter(self.if_in or {}))


class LabelSpec(_Model):
    """The binary label of a row, from one column of the primary table.

    Either ``threshold`` (positive when the column is greater) or ``positive_values`` (positive when the
    column is one of them; negative when it is one of ``negative_values``, or any other value when those are
    not given). ``rules`` are checked first, in order: the first match says exclude / positive / negative.
    A row that no rule and no value decides (e.g. a null column) is excluded from training and evaluation.
    """

    name: str
    column: str
    threshold: float | None = None
    positive_values: list[LabelValue] | None = None
    negative_values: list[LabelValue] | None = None
    rules: list[LabelRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> LabelSpec:
        if (self.threshold is None) == (self.positive_values is None):
            raise ValueError("say what a positive is: exactly one of threshold or positive_values")
        if self.negative_values is not None and self.positive_values is None:
            raise ValueError("negative_values goes with positive_values")
        if self.positive_values is not None and self.negative_values is not None:
            both = set(map(str, self.positive_values)) & set(map(str, self.negative_values))
            if both:
                raise ValueError(f"values {sorted(both)} are both positive and negative")
        return self

    @property
    def columns(self) -> list[str]:
        """Every column the label reads: its own and its rules'."""
        return list(dict.fromkeys([self.column, *(r.column for r in self.rules)]))


# -- features ----------------------------------------------------------------------------------------
CalendarPart = Literal["hour", "minute", "weekday", "is_weekend", "day", "month", "year", "day_of_year", "week"]
TIME_OF_DAY_PARTS = ("hour", "minute")


def _snake_case(v: str) -> str:
    if not _NAME.match(v):
        raise ValueError("names are lower_snake_case (letters, digits, _; a letter first)")
    return v


SnakeName = Annotated[str, AfterValidator(_snake_case)]


class JoinSpec(_Model):
    """Columns of another table for each primary row: rows matched on exact keys, optionally as of a time.

    ``table`` is a source table (its validated rows of the same days) or a reference table. Features read a
    joined column as ``<join name>.<column>``. With ``as_of``, the latest row of the table at or before the
    primary row's time (within ``tolerance``) is taken per the exact keys; without it, a key matches at most one
    row (duplicates keep the last).
    """

    name: SnakeName
    table: str
    keys: dict[str, str] = Field(min_length=1, description="primary column -> column of the joined table")
    as_of: dict[str, str] | None = Field(default=None, description="{primary time column: table time column}")
    tolerance: str | None = Field(default=None, description="as-of only: how old a match may be, e.g. '2h', '1d'")
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> JoinSpec:
        if self.as_of is not None and len(self.as_of) != 1:
            raise ValueError("as_of names exactly one pair {primary time column: table time column}")
        if self.tolerance is not None and self.as_of is None:
            raise ValueError("tolerance goes with as_of")
        return self


class CalendarSpec(_Model):
    column: str = Field(description="a date or datetime column of the primary table")
    part: CalendarPart


class WindowSpec(_Model):
    """A point-in-time aggregate over the ``days`` days strictly before each row's day, per ``by`` group."""

    of: str = Field(default="label", description="'label' or a numeric column of the primary table")
    agg: Literal["rate", "mean", "sum", "count"] = "rate"
    by: list[str] = Field(default_factory=list, description="group keys: primary columns (none: every row)")
    days: int = Field(gt=0, le=3660)
    prior: float = Field(
        default=0.0, ge=0, description="rate/mean: smoothing towards the same days' overall value, as pseudo rows"
    )

    @model_validator(mode="after")
    def _check(self) -> WindowSpec:
        if self.agg == "rate" and self.of != "label":
            raise ValueError("agg 'rate' is the share of positive labels: use of: label (or agg: mean)")
        if self.prior and self.agg in ("sum", "count"):
            raise ValueError(f"prior smooths a rate or mean, not a {self.agg}")
        return self


FEATURE_KINDS = ("column", "calendar", "expr", "window", "function")


class FeatureSpec(_Model):
    """One model input. How it is computed is exactly one of:

    - ``column``: a column of the primary table, or ``<join>.<column>`` of a declared join (passthrough);
    - ``calendar``: a part of a date/datetime column (hour, weekday, month, day_of_year …);
    - ``expr``: arithmetic over columns and joined columns (``year - plane.year``; features.EXPR_FUNCTIONS);
    - ``window``: a point-in-time aggregate over strictly earlier days;
    - ``function``: a function of the spec's ``module``, for what declarations cannot say.

    A feature that declares none of them is the primary column of the same name.
    """

    name: SnakeName
    dtype: Literal["int", "float", "category"]
    description: str = Field(min_length=3)
    column: str | None = None
    calendar: CalendarSpec | None = None
    expr: str | None = None
    window: WindowSpec | None = None
    function: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> FeatureSpec:
        kinds = [k for k in FEATURE_KINDS if getattr(self, k) is not None]
        if len(kinds) > 1:
            raise ValueError(f"declares {kinds}: say exactly one of {list(FEATURE_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        """column / calendar / expr / window / function (``column`` for a bare name)."""
        return next((k for k in FEATURE_KINDS if getattr(self, k) is not None), "column")

    @property
    def source_column(self) -> str:
        """The passthrough column (its own name when none is declared)."""
        return self.column or self.name


EXPR_FUNCTIONS = ("coalesce", "where", "abs", "floor", "ceil", "round", "log1p", "sqrt", "minimum", "maximum", "isnull")
_EXPR_NODES = (
    "Expression", "BinOp", "UnaryOp", "Compare", "BoolOp", "Name", "Attribute", "Constant", "Call", "Load",
    "Add", "Sub", "Mult", "Div", "FloorDiv", "Mod", "Pow", "USub", "UAdd", "Not", "And", "Or",
    "Eq", "NotEq", "Lt", "LtE", "Gt", "GtE",
)  # fmt: skip


def expr_names(text: str) -> tuple[list[str], list[str]]:
    """The column names a feature ``expr`` reads (``col`` or ``join.col``) and what is wrong with it: only
    arithmetic, comparisons, numbers and EXPR_FUNCTIONS are allowed (the text is never handed to eval)."""
    import ast

    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        return [], [f"not an expression: {exc.msg}"]
    names, errors = [], []
    for node in ast.walk(tree):
        kind = type(node).__name__
        if kind not in _EXPR_NODES:
            errors.append(f"{kind} is not allowed (arithmetic, comparisons and {', '.join(EXPR_FUNCTIONS)} only)")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in EXPR_FUNCTIONS or node.keywords:
                errors.append(f"calls only {', '.join(EXPR_FUNCTIONS)} with plain arguments")
        elif isinstance(node, ast.Attribute):
            if not isinstance(node.value, ast.Name):
                errors.append("a joined column is written <join>.<column>")
            else:
                names.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name):
            parents_call = any(isinstance(p, ast.Call) and p.func is node for p in ast.walk(tree))
            is_join = any(isinstance(p, ast.Attribute) and p.value is node for p in ast.walk(tree))
            if not parents_call and not is_join:
                names.append(node.id)
        elif isinstance(node, ast.Constant) and not isinstance(node.value, int | float | bool):
            errors.append(f"constant {node.value!r}: numbers only")
    return list(dict.fromkeys(names)), list(dict.fromkeys(errors))


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
    name: SnakeName
    expr: str
    when: str | None = None
    skip_nulls: bool = True
    severity: Severity = Severity.warning
    description: str | None = None

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
    """``execution_timeout`` of every task: per DAG kind (ingest, train, score, materialize, monitor, rollback),
    else default."""

    default_minutes: float = Field(default=240, gt=0, description="training and any DAG kind not listed")
    per_dag: dict[str, float] = Field(
        default_factory=lambda: {
            "ingest": 60,
            "score": 60,
            "materialize": 60,
            "reconcile": 60,
            "monitor": 60,
            "rollback": 15,
        },
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


class _Bootstrapped(_Model):
    """Settings of a section that judges a difference with a bootstrap interval: the gate (paired: challenger vs
    champion on the same rows; the upper end of the interval must be within a change threshold) and the monitor
    (a performance trigger fires only when its drop is beyond the limit and the interval is above zero)."""

    bootstrap_samples: int = Field(
        default=0, ge=0, le=10_000, description="bootstrap resamples (0: point values only, no interval)"
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="coverage of the bootstrap intervals")


class GateSpec(_Bootstrapped):
    min_roc_auc: float = Field(ge=0, le=1)
    max_brier: float = Field(ge=0, le=1)
    max_roc_auc_drop: float = Field(ge=0, le=1, description="allowed drop against the champion")
    max_brier_rise: float | None = Field(
        default=None, ge=0, le=1, description="allowed Brier rise against the champion (None: not checked)"
    )
    min_roc_auc_gain: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="to replace a champion, the challenger must be better by at least this ROC AUC (at the lower end "
        "of the paired interval); a candidate that is not becomes the shadow (None: not worse is enough)",
    )
    min_window_days: int | None = Field(
        default=None,
        gt=0,
        description="a champion is replaced only on at least this many days of rows out of time for both models; "
        "a candidate whose test split is shorter runs as the shadow until its window is long enough",
    )
    slice_columns: list[str] = Field(default_factory=list)
    min_slice_rows: int = Field(default=200, gt=0)
    max_slice_gap: float = Field(default=0.15, ge=0, le=1)
    max_latency_ms_per_1k: float = Field(default=500, gt=0)
    max_model_mb: float = Field(default=50, gt=0)
    forbidden_features: list[str] = Field(default_factory=list)
    require_approval: bool = False


class MonitoringSpec(_Bootstrapped):
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
    max_brier_skill_drop: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="trigger on the drop of the Brier skill score (1 - Brier / (rate * (1 - rate)), against the "
        "window's own positive rate) below the champion's at training; when set, brier_rise is recorded, not a trigger",
    )
    retrain_cooldown_days: int | None = Field(
        default=None,
        ge=0,
        description="debounce on promotions: after a request whose candidate was not promoted (the champion is the "
        "same), a persisting trigger may request again after this many days; retrain_debounce_days then counts "
        "from the first day a newly promoted champion was monitored. None: every request debounces the next",
    )

    shadow_window_days: int = Field(
        default=28,
        gt=0,
        description="the shadow and the champion are compared on the shadow's test split and the days since, at "
        "most this many days ending at the monitored day",
    )

    @model_validator(mode="after")
    def _cooldown_within_debounce(self) -> MonitoringSpec:
        if self.retrain_cooldown_days is not None and self.retrain_cooldown_days > self.retrain_debounce_days:
            raise ValueError(
                f"retrain_cooldown_days ({self.retrain_cooldown_days}) is the short wait after a rejection: it "
                f"cannot exceed retrain_debounce_days ({self.retrain_debounce_days})"
            )
        return self


class OnlineSpec(_Model):
    """What an online client sends (feature_store.py, README "Online features"): the entity keys and these
    ``request_fields``, columns of the primary table the client knows at request time. Every feature is looked
    up by the entity keys in the online store; a request field whose value differs from the one the stored
    features were computed with is refused (409), never scored with features of another input."""

    request_fields: list[str] = Field(default_factory=list, description="primary columns sent with the keys")


class DatasetSpec(_Model):
    """Everything that makes a dataset: where it comes from, what it must look like, how to model it."""

    name: str
    description: str
    owner: str = "mlops"
    known_limits: list[str] = Field(
        default_factory=list,
        description="what the model is known not to do well or must not be used for; shown on every model card",
    )
    source: SourceSpec
    time: TimeSpec
    entity_keys: list[str] = Field(min_length=1)
    label: LabelSpec
    module: str | None = Field(
        default=None,
        description="the dataset's own Python module (e.g. include.datasets.<name>) holding the functions that "
        "'function' features and a seed loader name; its source is part of the feature version",
    )
    joins: list[JoinSpec] = Field(default_factory=list)
    features: list[FeatureSpec] = Field(min_length=1)
    validation: ValidationSpec
    training: TrainingSpec
    gate: GateSpec
    monitoring: MonitoringSpec
    timeouts: TimeoutSpec = Field(default_factory=TimeoutSpec)
    online: OnlineSpec = Field(default_factory=OnlineSpec)

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
        problems += [
            f"label: {col!r} is not a column of the primary table" for col in self.label.columns if col not in primary
        ]
        names = [f.name for f in self.features]
        problems += [f"features: {n!r} is declared twice" for n in sorted({n for n in names if names.count(n) > 1})]
        problems += [
            f"gate.forbidden_features: {n!r} is also a declared feature"
            for n in self.gate.forbidden_features
            if n in names
        ]
        problems += self.feature_problems()
        secret = set(self.label.columns) | set(self.gate.forbidden_features)
        for c in self.online.request_fields:
            if c not in primary:
                problems.append(f"online.request_fields: {c!r} is not a column of the primary table")
            elif c in self.entity_keys or c in secret:
                problems.append(f"online.request_fields: {c!r} is an entity key, the label or a forbidden feature")
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

    def feature_problems(self) -> list[str]:
        """Every way the joins and features cannot be computed, each naming its field (the engine in
        features.py computes exactly what passes here)."""
        primary, table = self.primary_columns, self.source.primary_table
        problems: list[str] = []
        joins: dict[str, dict[str, str] | None] = {}
        for i, j in enumerate(self.joins):
            where = f"joins[{i}] ({j.name})"
            if j.name in joins:
                problems.append(f"{where}: join name declared twice")
            if j.table in self.source.tables:
                cols: dict[str, str] | None = self.source.tables[j.table].columns
            elif j.table in self.source.reference:
                cols = None  # a reference query's columns are known when it runs: checked at build time
            else:
                problems.append(f"{where}: table {j.table!r} is neither a source table nor a reference table")
                cols = None
            joins[j.name] = cols
            for left, right in [*j.keys.items(), *(j.as_of or {}).items()]:
                if left not in primary:
                    problems.append(f"{where}: key {left!r} is not a column of {table}")
                if cols is not None and right not in cols:
                    problems.append(f"{where}: key {right!r} is not a column of {j.table}")
            for left in j.as_of or {}:
                if primary.get(left, "date") not in ("date", "datetime"):
                    problems.append(f"{where}: as_of column {left!r} is {primary[left]}, not a date or datetime")
        label_cols = set(self.label.columns) | {self.label.name}
        forbidden = set(self.gate.forbidden_features)
        for i, f in enumerate(self.features):
            where = f"features[{i}] ({f.name})"
            if f.name in (self.label.name, self.label.column):
                problems.append(f"{where}: is the label: it cannot be a feature")
                continue
            if f.name in primary and not (f.kind == "column" and f.source_column == f.name):
                problems.append(
                    f"{where}: the name collides with column {f.name!r} of {table}: rename the feature "
                    "(a computed feature never replaces a source column)"
                )
            if f.kind == "column":
                src = f.source_column
                if "." in src:
                    jname, col = src.split(".", 1)
                    if jname not in joins:
                        problems.append(f"{where}: column {src!r} names no declared join ({sorted(joins) or 'none'})")
                    elif joins[jname] is not None and col not in joins[jname]:
                        problems.append(f"{where}: column {col!r} is not in the table of join {jname!r}")
                elif src not in primary:
                    how = "" if f.column else "; declare how it is computed: one of " + ", ".join(FEATURE_KINDS)
                    problems.append(f"{where}: {src!r} is not a column of {table}{how}")
            elif f.calendar is not None:
                c = f.calendar
                kind = primary.get(c.column)
                if kind is None:
                    problems.append(f"{where}: calendar column {c.column!r} is not a column of {table}")
                elif kind not in ("date", "datetime"):
                    problems.append(f"{where}: calendar column {c.column!r} is {kind}, not a date or datetime")
                elif c.part in TIME_OF_DAY_PARTS and kind != "datetime":
                    problems.append(
                        f"{where}: calendar part {c.part!r} needs a datetime column; {c.column!r} is a date"
                    )
            elif f.expr is not None:
                names, errors = expr_names(f.expr)
                problems += [f"{where}: expr: {e}" for e in errors]
                for n in names:
                    jname, _, col = n.partition(".")
                    if col and jname not in joins:
                        problems.append(f"{where}: expr reads {n!r} but names no declared join")
                    elif col and joins[jname] is not None and col not in joins[jname]:
                        problems.append(f"{where}: expr reads {n!r}: no column {col!r} in join {jname!r}")
                    elif not col and n not in primary:
                        problems.append(f"{where}: expr reads {n!r}, not a column of {table}")
            elif f.window is not None:
                w = f.window
                tkind = primary.get(self.time.column)
                if tkind not in ("date", "datetime"):
                    problems.append(
                        f"{where}: a window counts days of time.column {self.time.column!r}, which is {tkind}"
                    )
                problems += [f"{where}: window.by {k!r} is not a column of {table}" for k in w.by if k not in primary]
                if w.of != "label" and primary.get(w.of) not in ("int", "float", "bool"):
                    problems.append(f"{where}: window.of {w.of!r} is not a numeric column of {table} (or 'label')")
            elif f.function is not None and not self.module:
                problems.append(f"{where}: function {f.function!r} needs the spec's module: (e.g. include.datasets.x)")
            leaks = sorted(set(self.feature_inputs(f)) & (label_cols | forbidden))
            if leaks:
                problems.append(f"{where}: reads {leaks}: the label or a gate.forbidden_features column")
        return problems

    def feature_inputs(self, f: FeatureSpec) -> list[str]:
        """The columns a feature's declaration reads (``join.column`` for joined ones). A window's label is not
        among them: a window reads only labels of earlier days, never its own row's."""
        if f.kind == "column":
            return [f.source_column]
        if f.calendar is not None:
            return [f.calendar.column]
        if f.expr is not None:
            return expr_names(f.expr)[0]
        if f.window is not None:
            return [*f.window.by, *([] if f.window.of == "label" else [f.window.of])]
        return []  # a function of the dataset module: its code is the reviewer's to read

    @property
    def primary_columns(self) -> dict[str, str]:
        """Declared columns of the primary table: name -> logical dtype."""
        return self.source.tables[self.source.primary_table].columns

    @property
    def history_days(self) -> int:
        """Days before a window that its point-in-time features read (the longest window; 0 without one)."""
        return max((f.window.days for f in self.features if f.window), default=0)

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
    canon = json.dumps(spec.model_dump(mode="json", exclude={"description", "owner", "known_limits"}), sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]
