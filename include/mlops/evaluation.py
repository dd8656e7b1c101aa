"""Evaluation: the gate as a pure function over metrics, and the thin step that gathers those metrics.

The gate (TFX Evaluator style) combines value thresholds (``min_roc_auc``, ``max_brier``: never keeping a
champion that is worse on the same rows), change thresholds against the champion (``max_roc_auc_drop``,
``max_brier_rise``: skipped, not failed, when there is no champion; judged at the upper end of a paired bootstrap
interval when ``gate.bootstrap_samples`` is set), superiority (``min_roc_auc_gain``: a champion is replaced only by a
challenger shown better on the same rows; one that is not may run as the shadow), a slice-gap check per slice
column and policy checks
(signature, forbidden features, size, latency). :func:`evaluate_gate` does no I/O: it turns two
:class:`ModelEvidence` into a :class:`GateReport` that names every check with its value, interval, threshold and
verdict; :mod:`include.mlops.gate_report` renders it. :func:`collect_evidence` scores a model on a
window, and :func:`evaluate_challenger` wires window → evidence → gate → report files and MLflow tags.

Challenger and champion are always scored on the SAME rows (:func:`evaluation_window`), by the same code, so
their metrics and latencies are comparable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from include.mlops.config import DatasetSpec
from include.mlops.training import binary_metrics, default_tracking_uri, limited_threads

if TYPE_CHECKING:
    from include.mlops.storage import Lake

Verdict = Literal["pass", "fail", "skip"]
PASS: Verdict = "pass"
FAIL: Verdict = "fail"
SKIP: Verdict = "skip"
CHAMPION = "champion"
CHALLENGER = "challenger"
# The checks that compare the challenger with the champion on the same rows: a candidate failing only these is
# no worse a model, just not shown better here; it may run as the shadow (registry alias ``shadow``).
COMPARATIVE = ("max_roc_auc_drop", "min_roc_auc_gain", "max_brier_rise", "min_window_days")
LATENCY_ROWS = 1000
LATENCY_REPEATS = 20


class EvaluationError(ValueError):
    """Evidence cannot be collected: an empty or one-class window, a model missing feature columns."""


# -- results -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One gate check: what was measured (with its interval when the gate bootstrapped one), against which
    threshold, and the verdict."""

    name: str
    value: float | str | None
    threshold: float | str | None
    verdict: Verdict
    detail: str = ""
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class ModelEvidence:
    """What the gate knows about one model, measured on the evaluation window.

    ``slices``: slice column -> slice value -> ``{"rows", "roc_auc", "positive_rate"}`` (``roc_auc`` is None
    for a one-class slice). ``latency_ms_per_1k``: p95 of scoring 1,000 rows, in milliseconds.
    """

    metrics: dict[str, float]
    slices: dict[str, dict[str, dict[str, float | None]]]
    features: list[str]
    signature: bool
    size_mb: float | None
    latency_ms_per_1k: float | None
    version: str | None = None
    model_uri: str | None = None
    threshold: float | None = None
    # the model's score for each labelled row of the window (for the paired comparison; not in the report)
    scores: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "scores"}


@dataclass
class GateReport:
    """The gate's decision: every check with value, threshold and verdict; ``passed`` = no check failed."""

    dataset: str
    challenger_version: str | None
    champion_version: str | None
    window: dict[str, Any]
    checks: list[Check]
    passed: bool
    decided_at: str
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    slices: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    uris: dict[str, str] = field(default_factory=dict)  # filled by save_report
    alerts: list[str] = field(default_factory=list)  # e.g. both models below an absolute floor

    @property
    def decision(self) -> str:
        return "passed" if self.passed else "rejected"

    @property
    def failed(self) -> list[str]:
        """Names of the failed checks (the rejection reasons)."""
        return [c.name for c in self.checks if c.verdict == FAIL]

    @property
    def may_shadow(self) -> bool:
        """Rejected only for not beating the champion on these rows (:data:`COMPARATIVE` checks): the candidate
        is sound and may score beside the champion as its shadow, to be compared on more, later days."""
        return bool(self.failed) and set(self.failed) <= set(COMPARATIVE)

    def check(self, name: str) -> Check:
        """The check called ``name`` (KeyError if the gate has none)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict (for XCom and gate.json)."""
        d = asdict(self)
        d["decision"] = self.decision
        d["failed"] = self.failed
        return d

    def to_markdown(self) -> str:
        """A Markdown summary (rendered by :mod:`include.mlops.gate_report`)."""
        from include.mlops.gate_report import render_markdown

        return render_markdown(self)

    def to_html(self) -> str:
        """A self-contained HTML page (rendered by :mod:`include.mlops.gate_report`)."""
        from include.mlops.gate_report import render_html

        return render_html(self)


# -- the gate (pure) -----------------------------------------------------------------------------------
def _num(metrics: dict[str, float], key: str) -> float | None:
    v = metrics.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _at_most(name: str, value: float | None, threshold: float, what: str) -> Check:
    if value is None:
        return Check(name, None, threshold, FAIL, f"{what} was not measured")
    ok = value <= threshold
    return Check(name, value, threshold, PASS if ok else FAIL, f"{what} {value:.4g} {'<=' if ok else '>'} {threshold}")


def forbidden_in(spec: DatasetSpec, features: Sequence[str]) -> list[str]:
    """Features a model must not use: the spec's forbidden list, the label and the columns it is decided from,
    a declared feature that reads one of them (a window over earlier days' labels is point-in-time, so allowed),
    and an undeclared feature named like the label."""
    bad = {c.lower() for c in [*spec.gate.forbidden_features, spec.label.name, *spec.label.columns]}
    label_like = {spec.label.name.lower(), spec.label.column.lower()}
    declared = {f.name: f for f in spec.features}

    def leaks(name: str) -> bool:
        if name in declared:
            return any(c.lower() in bad for c in spec.feature_inputs(declared[name]))
        return any(lab in name.lower() for lab in label_like)

    return sorted(f for f in features if f.lower() in bad or leaks(f))


def _slice_check(spec: DatasetSpec, column: str, challenger: ModelEvidence) -> tuple[Check, dict[str, dict[str, Any]]]:
    name, g = f"max_slice_gap[{column}]", spec.gate
    values = challenger.slices.get(column)
    if values is None:
        return Check(name, None, g.max_slice_gap, FAIL, f"no slice metrics for column {column!r}"), {}
    table = {
        str(v): {**s, "gated": s.get("rows", 0) >= g.min_slice_rows and s.get("roc_auc") is not None}
        for v, s in values.items()
    }
    gated = {v: float(s["roc_auc"]) for v, s in table.items() if s["gated"]}
    if len(gated) < 2:
        detail = f"{len(gated)} slice(s) with >= {g.min_slice_rows} rows and both classes: nothing to compare"
        return Check(name, None, g.max_slice_gap, SKIP, detail), table
    best, worst = max(gated, key=gated.get), min(gated, key=gated.get)
    gap = gated[best] - gated[worst]
    ok = gap <= g.max_slice_gap
    detail = (
        f"{column}={best} AUC {gated[best]:.3f} vs {column}={worst} AUC {gated[worst]:.3f} "
        f"over {len(gated)} slices ({len(table) - len(gated)} ignored: < {g.min_slice_rows} rows or one class)"
    )
    return Check(name, gap, g.max_slice_gap, PASS if ok else FAIL, detail), table


@dataclass(frozen=True)
class PairedComparison:
    """Challenger against champion on the same labelled rows: ``roc_auc_drop`` (champion minus challenger) and
    ``brier_rise`` (challenger minus champion), each ``(value, low, high)`` with a paired bootstrap interval."""

    rows: int
    samples: int
    confidence: float
    roc_auc_drop: tuple[float, float, float]
    brier_rise: tuple[float, float, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class WeightedAUC:
    """ROC AUC of fixed scores under many row weightings (bootstrap resamples as counts): the scores are ranked
    once, each weighting costs two ``bincount`` passes. Equal to ``roc_auc_score(y, p, sample_weight=w)``."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        self.pos = np.asarray(y).astype(bool)
        self.groups = np.unique(np.asarray(p), return_inverse=True)[1].ravel()
        self.size = int(self.groups.max()) + 1 if len(self.groups) else 0

    def __call__(self, w: np.ndarray) -> float:
        pos = np.bincount(self.groups, weights=w * self.pos, minlength=self.size)
        neg = np.bincount(self.groups, weights=w * ~self.pos, minlength=self.size)
        below = np.cumsum(neg) - neg  # negatives scored lower; ties count a half
        return float(np.sum(pos * (below + 0.5 * neg)) / (pos.sum() * neg.sum()))


def resample_weights(y: np.ndarray, samples: int, seed: int) -> Iterator[np.ndarray]:
    """``samples`` bootstrap resamples of the rows as count weights, skipping any without both classes."""
    rng = np.random.default_rng(seed)
    pos = np.asarray(y).astype(bool)
    for _ in range(samples):
        w = np.bincount(rng.integers(0, len(pos), len(pos)), minlength=len(pos)).astype("float64")
        if w[pos].any() and w[~pos].any():
            yield w


def interval(draws: Sequence[float], confidence: float, fallback: float) -> tuple[float, float]:
    """The central ``confidence`` range of bootstrap draws (``fallback`` twice when there are none)."""
    if not len(draws):
        return fallback, fallback
    low, high = np.percentile(draws, [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100])
    return float(low), float(high)


def paired_bootstrap(
    y: np.ndarray,
    p_challenger: np.ndarray,
    p_champion: np.ndarray,
    *,
    samples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Resample the rows (the same resample for both models) ``samples`` times; the interval of each difference is
    its central ``confidence`` quantile range. Pairing removes what the rows share (their base rate, how hard the
    week is), so the interval measures how sure we are that one model is better on rows like these."""
    y = np.asarray(y).astype(int)
    a, b = np.asarray(p_challenger, dtype="float64"), np.asarray(p_champion, dtype="float64")
    if len(np.unique(y)) < 2:
        raise EvaluationError(f"{len(y)} labelled rows of a single class: nothing to compare on")
    auc_a, auc_b = WeightedAUC(y, a), WeightedAUC(y, b)
    se_diff = (a - y) ** 2 - (b - y) ** 2
    ones = np.ones(len(y))
    drops, rises = [], []
    for w in resample_weights(y, samples, seed):
        drops.append(auc_b(w) - auc_a(w))
        rises.append(float(np.average(se_diff, weights=w)))
    drop, rise = auc_b(ones) - auc_a(ones), float(np.mean(se_diff))
    return PairedComparison(
        len(y),
        len(drops),
        confidence,
        (drop, *interval(drops, confidence, drop)),
        (rise, *interval(rises, confidence, rise)),
    )


def _floor(
    name: str, value: float | None, threshold: float, champion: float | None, higher_is_better: bool, what: str
) -> tuple[Check, str | None]:
    """An absolute floor. A challenger below it still passes when the champion is below it too on the same rows
    and the challenger is strictly better: a floor never keeps a worse champion. Returns the check and an alert."""
    if value is None:
        return Check(name, None, threshold, FAIL, f"{what} was not measured"), None
    ok = value >= threshold if higher_is_better else value <= threshold
    rel = (">=" if ok else "<") if higher_is_better else ("<=" if ok else ">")
    detail = f"{what} {value:.4f} {rel} {threshold}"
    if ok:
        return Check(name, value, threshold, PASS, detail), None
    champion_below = champion is not None and not (champion >= threshold if higher_is_better else champion <= threshold)
    better = champion is not None and (value > champion if higher_is_better else value < champion)
    if champion_below and better:
        alert = (
            f"both models are below {name} {threshold} on the same rows ({what}: challenger {value:.4f}, champion "
            f"{champion:.4f}): the better one, the challenger, may serve"
        )
        return Check(name, value, threshold, PASS, f"{detail}, but the champion is worse ({champion:.4f})"), alert
    if champion_below:
        alert = (
            f"both models are below {name} {threshold} on the same rows "
            f"(challenger {value:.4f}, champion {champion:.4f})"
        )
        return Check(name, value, threshold, FAIL, f"{detail}; the champion ({champion:.4f}) is better"), alert
    return Check(name, value, threshold, FAIL, detail), None


def _change(
    name: str, value: float | None, threshold: float, paired: tuple[float, float, float] | None, detail: str
) -> Check:
    """A change threshold against the champion: with a paired interval, the challenger passes only when the
    interval's upper end is within the threshold (shown not worse by more than it); else on the point value."""
    if paired is not None:
        value, low, high = paired
        ok = high <= threshold
        why = f"{detail}; {name} {value:+.4f}, interval [{low:+.4f}, {high:+.4f}] {'<=' if ok else '>'} {threshold}"
        return Check(name, value, threshold, PASS if ok else FAIL, why, (low, high))
    if value is None:
        return Check(name, None, threshold, FAIL, f"{detail}: a metric is missing for a model")
    ok = value <= threshold
    return Check(name, value, threshold, PASS if ok else FAIL, f"{detail} ({name} {value:+.4f})")


def _window_days(minimum: int, window: dict[str, Any]) -> Check:
    """Enough data: the window both models were scored on spans at least ``minimum`` days."""
    try:
        days = (date.fromisoformat(str(window["end"])[:10]) - date.fromisoformat(str(window["start"])[:10])).days + 1
    except (KeyError, ValueError):
        return Check("min_window_days", None, minimum, FAIL, "the evaluation window's days are not known")
    ok = days >= minimum
    detail = f"{days} days of rows out of time for both models ({window['start']} .. {window['end']})"
    if not ok:
        detail += f": fewer than {minimum}, not enough to replace a champion on"
    return Check("min_window_days", days, minimum, PASS if ok else FAIL, detail)


def _gain(name: str, gain: float | None, threshold: float, paired_drop: tuple[float, float, float] | None) -> Check:
    """Superiority: the challenger replaces a champion only when better by ``threshold`` ROC AUC, at the lower end
    of the paired interval of the gain when there is one (the drop's interval, turned round)."""
    if paired_drop is not None:
        drop, low, high = paired_drop
        gain, interval_ = -drop, (-high, -low)
        ok = interval_[0] >= threshold
        why = (
            f"ROC AUC gain over the champion {gain:+.4f}, interval [{interval_[0]:+.4f}, {interval_[1]:+.4f}]: "
            + ("shown better by" if ok else "not shown better by")
            + f" {threshold} on the same rows"
        )
        return Check(name, gain, threshold, PASS if ok else FAIL, why, interval_)
    if gain is None:
        return Check(name, None, threshold, FAIL, "a ROC AUC is missing for a model")
    ok = gain >= threshold
    return Check(name, gain, threshold, PASS if ok else FAIL, f"ROC AUC gain over the champion {gain:+.4f}")


def evaluate_gate(
    spec: DatasetSpec,
    challenger: ModelEvidence,
    champion: ModelEvidence | None,
    *,
    window: dict[str, Any] | None = None,
    decided_at: str | None = None,
    paired: PairedComparison | None = None,
) -> GateReport:
    """Decide whether ``challenger`` may replace ``champion`` (None: there is no champion yet).

    Pure: no I/O. Checks: absolute floors (``min_roc_auc``, ``max_brier``: a challenger below one passes when the
    champion is below it too on the same rows and is worse, with an alert that both are below), non-regression
    against the champion (``max_roc_auc_drop``, ``max_brier_rise``; 'skip' without a champion; with ``paired``,
    the upper end of the paired bootstrap interval must be within the threshold), superiority (``min_roc_auc_gain``:
    the lower end of the gain's interval must reach it), ``max_slice_gap[<col>]`` per
    slice column, and policy (``signature_present``, ``no_forbidden_features``, ``max_model_mb``,
    ``max_latency_ms_per_1k``). The report passes when no check fails.
    """
    g = spec.gate
    checks: list[Check] = []
    alerts: list[str] = []
    c_metrics = champion.metrics if champion else {}

    auc, brier = _num(challenger.metrics, "roc_auc"), _num(challenger.metrics, "brier")
    c_auc, c_brier = _num(c_metrics, "roc_auc"), _num(c_metrics, "brier")
    for check, alert in (
        _floor("min_roc_auc", auc, g.min_roc_auc, c_auc, True, "ROC AUC"),
        _floor("max_brier", brier, g.max_brier, c_brier, False, "Brier score"),
    ):
        checks.append(check)
        alerts += [alert] if alert else []

    # Non-regression (change thresholds): TFX skips them when there is no baseline.
    if champion is None:
        checks.append(Check("max_roc_auc_drop", None, g.max_roc_auc_drop, SKIP, "no champion: nothing to regress"))
    else:
        drop = None if auc is None or c_auc is None else c_auc - auc
        detail = f"champion v{champion.version} {_f4(c_auc)} -> challenger {_f4(auc)}"
        checks.append(_change("max_roc_auc_drop", drop, g.max_roc_auc_drop, paired and paired.roc_auc_drop, detail))
    if g.min_window_days is not None and champion is not None:
        checks.append(_window_days(g.min_window_days, window or {}))
    if g.min_roc_auc_gain is not None:
        if champion is None:
            checks.append(Check("min_roc_auc_gain", None, g.min_roc_auc_gain, SKIP, "no champion to beat"))
        else:
            gain = None if auc is None or c_auc is None else auc - c_auc
            checks.append(_gain("min_roc_auc_gain", gain, g.min_roc_auc_gain, paired and paired.roc_auc_drop))
    if g.max_brier_rise is not None:
        if champion is None:
            checks.append(Check("max_brier_rise", None, g.max_brier_rise, SKIP, "no champion: nothing to regress"))
        else:
            rise = None if brier is None or c_brier is None else brier - c_brier
            detail = f"Brier champion {_f4(c_brier)} -> challenger {_f4(brier)} on the same rows"
            checks.append(_change("max_brier_rise", rise, g.max_brier_rise, paired and paired.brier_rise, detail))

    slices: dict[str, dict[str, dict[str, Any]]] = {}
    for column in g.slice_columns:
        check, table = _slice_check(spec, column, challenger)
        champ_values = (champion.slices if champion else {}).get(column, {})
        for value, s in table.items():
            s["champion_roc_auc"] = (champ_values.get(value) or {}).get("roc_auc")
        checks.append(check)
        slices[column] = table

    checks.append(
        Check(
            "signature_present",
            challenger.signature,
            True,
            PASS if challenger.signature else FAIL,
            "the model was logged with an input/output signature" if challenger.signature else "no signature",
        )
    )
    bad = forbidden_in(spec, challenger.features)
    checks.append(
        Check(
            "no_forbidden_features",
            ", ".join(bad) or "none",
            "none",
            FAIL if bad else PASS,
            f"the model uses {bad}" if bad else f"{len(challenger.features)} features, none forbidden or label-like",
        )
    )
    checks.append(_at_most("max_model_mb", challenger.size_mb, g.max_model_mb, "model artifacts (MB)"))
    checks.append(
        _at_most("max_latency_ms_per_1k", challenger.latency_ms_per_1k, g.max_latency_ms_per_1k, "p95 ms per 1k rows")
    )

    return GateReport(
        dataset=spec.name,
        challenger_version=challenger.version,
        champion_version=champion.version if champion else None,
        window=dict(window or {}),
        checks=checks,
        passed=not any(c.verdict == FAIL for c in checks),
        decided_at=decided_at or datetime.now(UTC).isoformat(timespec="seconds"),
        challenger_metrics=dict(challenger.metrics),
        champion_metrics=dict(champion.metrics) if champion else None,
        slices=slices,
        alerts=alerts,
    )


def _f4(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


# -- evaluation window ---------------------------------------------------------------------------------
@dataclass
class EvaluationWindow:
    """Labelled feature rows of [start, end]: the one frame challenger and champion are both scored on."""

    start: str
    end: str
    frame: pd.DataFrame = field(repr=False)
    label: str = "label"

    def describe(self) -> dict[str, Any]:
        """Start, end, rows and positive rate (for the report)."""
        rate = float(self.frame[self.label].mean()) if len(self.frame) else None
        return {"start": self.start, "end": self.end, "rows": len(self.frame), "positive_rate": rate}


def evaluation_window(
    spec: DatasetSpec, lake: Lake, end: date | str, *, start: date | str | None = None
) -> EvaluationWindow:
    """The labelled features of the last ``spec.training.test_days`` validated days up to ``end`` (or of the
    validated days of [start, end]), delay-rate history included; rows with no label are dropped."""
    from include.mlops.features import feature_columns, features_for_dates

    end_s = str(end)[:10]
    dates = [p.removeprefix("date=") for p in lake.partitions("validated", spec.name) if p.startswith("date=")]
    dates = [d for d in dates if d <= end_s and (start is None or d >= str(start)[:10])]
    if start is None:
        dates = dates[-spec.training.test_days :]
    if not dates:
        raise EvaluationError(f"no validated {spec.name} days to evaluate on up to {end_s}")
    df = features_for_dates(lake, spec, dates[0], dates[-1])
    df = df[df[spec.label.name].notna()].reset_index(drop=True)[feature_columns(spec)]
    if df[spec.label.name].nunique() < 2:
        raise EvaluationError(f"the window {dates[0]} .. {dates[-1]} has {len(df)} labelled rows of a single class")
    return EvaluationWindow(dates[0], dates[-1], df, spec.label.name)


def training_test_window(spec: DatasetSpec, version: str, tracking_uri: str | None = None) -> tuple[str, str]:
    """The (start, end) dates of the test split a registered version was scored on at training time."""
    from mlflow import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version(spec.name, str(version))
    params = client.get_run(mv.run_id).data.params
    if "test_start" not in params or "test_end" not in params:
        raise EvaluationError(f"run {mv.run_id} of {spec.name} v{version} has no test_start/test_end params")
    return params["test_start"], params["test_end"]


# -- evidence ------------------------------------------------------------------------------------------
def _predict_fn(model: Any) -> Any:
    if hasattr(model, "predict_proba"):
        return lambda x: np.asarray(model.predict_proba(x))[:, 1]

    def predict(x: pd.DataFrame) -> np.ndarray:
        out = np.asarray(model.predict(x))
        return out[:, -1] if out.ndim == 2 else out

    return predict


def _resolve_version(client: Any, model_uri: str) -> str | None:
    """The registry version behind ``models:/<name>/<version>`` or ``models:/<name>@<alias>``, else None."""
    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri.removeprefix("models:/").strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return str(client.get_model_version_by_alias(name, alias).version)
    _, _, version = ref.partition("/")
    return version if version.isdigit() else None


def slice_metrics(df: pd.DataFrame, y: np.ndarray, p: np.ndarray, columns: Sequence[str]) -> dict[str, Any]:
    """Per slice column and value: rows, positive rate and ROC AUC (None when the slice has one class)."""
    from sklearn.metrics import roc_auc_score

    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for col in columns:
        if col not in df.columns:
            raise EvaluationError(f"slice column {col!r} is not in the evaluation frame")
        keys = df[col].astype(str).where(df[col].notna(), "<missing>").to_numpy()
        out[col] = {}
        for value in sorted(set(keys)):
            m = keys == value
            ys = y[m]
            auc = float(roc_auc_score(ys, p[m])) if len(np.unique(ys)) == 2 else None
            out[col][value] = {"rows": int(m.sum()), "positive_rate": float(ys.mean()), "roc_auc": auc}
    return out


def measure_latency(
    predict: Any, x: pd.DataFrame, *, rows: int = LATENCY_ROWS, repeats: int = LATENCY_REPEATS, seed: int = 0
) -> float:
    """p95 over ``repeats`` of the milliseconds to score ``rows`` rows (after one warm-up call)."""
    batch = x.sample(n=rows, replace=len(x) < rows, random_state=seed)
    predict(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(batch)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.percentile(times, 95)) * LATENCY_ROWS / rows


def collect_evidence(
    spec: DatasetSpec,
    model_uri: str,
    frame: pd.DataFrame,
    *,
    threshold: float | None = None,
    tracking_uri: str | None = None,
    latency_repeats: int = LATENCY_REPEATS,
) -> ModelEvidence:
    """Load ``model_uri`` (``models:/<name>/<v>``, ``models:/<name>@<alias>``, ``runs:/…``), score ``frame``
    (a feature table with the label; rows with a null label are dropped) and measure what the gate needs.

    ``threshold`` defaults to the version's ``threshold`` tag (set at training), else 0.5.
    """
    from include.mlops import tracking

    uri = tracking_uri or default_tracking_uri()
    client = tracking.client(uri)
    version = _resolve_version(client, model_uri)
    name = model_uri.removeprefix("models:/").split("@")[0].split("/")[0]
    if threshold is None:
        tag = client.get_model_version(name, version).tags.get("threshold") if version else None
        threshold = float(tag) if tag else 0.5

    label = spec.label.name
    if label not in frame.columns:
        raise EvaluationError(f"the evaluation frame has no label column {label!r}")
    df = frame[frame[label].notna()].reset_index(drop=True)
    y = df[label].to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        raise EvaluationError(f"the evaluation frame has {len(df)} labelled rows of a single class")

    # skops with our trusted types; never a pickle (docs/security.md); fetched from THIS registry
    with tracking.open_model(f"models:/{name}/{version}" if version else model_uri, uri) as (model, info, size_mb):
        signature = info.signature is not None
        features = tracking.input_features(model, info, spec.feature_names)
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise EvaluationError(f"{model_uri} needs columns {missing} that the evaluation frame lacks")
    x = df[features]
    predict = _predict_fn(model)
    with limited_threads():
        p = predict(x)
        latency = measure_latency(predict, x, repeats=latency_repeats)
    return evidence_from_scores(
        spec,
        df,
        p,
        threshold=threshold,
        features=features,
        signature=signature,
        size_mb=size_mb,
        latency_ms_per_1k=latency,
        version=version,
        model_uri=model_uri,
    )


def evidence_from_scores(
    spec: DatasetSpec,
    frame: pd.DataFrame,
    p: np.ndarray,
    *,
    threshold: float,
    features: Sequence[str],
    signature: bool,
    size_mb: float | None,
    latency_ms_per_1k: float | None,
    version: str | None = None,
    model_uri: str | None = None,
) -> ModelEvidence:
    """The evidence of a model whose scores ``p`` on the labelled rows of ``frame`` are already known: the
    metrics and slices the gate reads, computed the same way for every caller (the gate step, the policy bench)."""
    y = frame[spec.label.name].to_numpy().astype(int)
    return ModelEvidence(
        metrics=binary_metrics(y, p, threshold),
        slices=slice_metrics(frame, y, p, spec.gate.slice_columns),
        features=list(features),
        signature=signature,
        size_mb=None if size_mb is None else round(size_mb, 4),
        latency_ms_per_1k=None if latency_ms_per_1k is None else round(latency_ms_per_1k, 3),
        version=version,
        model_uri=model_uri,
        threshold=threshold,
        scores=np.asarray(p),
    )


# -- report files and MLflow ---------------------------------------------------------------------------
def report_dir(report: GateReport, key: str | None = None) -> str:
    """Where a gate report lives in the lake: ``reports/gate/<dataset>/v<version>-<key>``, ``key`` being the
    first 8 hex digits of the version's training run id (a uuid: v1 of two MLflow stores never share a folder);
    ``v<version>`` without a key."""
    return f"reports/gate/{report.dataset}/v{report.challenger_version}" + (f"-{key}" if key else "")


def save_report(report: GateReport, lake: Lake, key: str | None = None) -> dict[str, str]:
    """Write gate.json, gate.md and gate.html to the lake; return their URIs (also kept in ``report.uris``)."""
    base = report_dir(report, key)
    # The URIs are known before writing, so gate.json records where its siblings are.
    report.uris = {ext: lake.uri(lake.path(*base.split("/"), f"gate.{ext}")) for ext in ("json", "md", "html")}
    lake.write_json(f"{base}/gate.json", report.as_dict())
    lake.write_bytes(f"{base}/gate.md", report.to_markdown().encode())
    lake.write_bytes(f"{base}/gate.html", report.to_html().encode())
    return dict(report.uris)


def log_report(
    report: GateReport,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    *,
    report_uri: str | None = None,
    spec: DatasetSpec | None = None,
) -> dict[str, str]:
    """Log the report (json, md, html under ``gate/``) on the challenger's training run and tag its version
    with ``gate.decision`` (passed/rejected), ``gate.reasons`` (failed check names), ``gate.report_uri`` (a
    ``runs:/`` URI) and ``gate.report_path`` (the lake copy, relative to the lake root). With ``spec``, the
    version's model card is re-rendered with the gate record. Returns the version tags that were set."""
    from mlflow import MlflowClient

    if report.challenger_version is None:
        raise EvaluationError("the report names no challenger version to tag")
    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = str(report.challenger_version)
    run_id = run_id or client.get_model_version(report.dataset, version).run_id
    client.log_dict(run_id, report.as_dict(), "gate/gate.json")
    client.log_text(run_id, report.to_markdown(), "gate/gate.md")
    client.log_text(run_id, report.to_html(), "gate/gate.html")
    tags = {
        "gate.decision": report.decision,
        "gate.reasons": ",".join(report.failed),
        # portable: resolvable wherever this MLflow is reachable; the lake copy is named by its relative path
        "gate.report_uri": report_uri or f"runs:/{run_id}/gate/gate.html",
        "gate.decided_at": report.decided_at,
        "gate.champion_version": report.champion_version or "none",
    }
    if report.uris.get("html") and "/reports/gate/" in report.uris["html"]:
        tags["gate.report_path"] = "reports/gate/" + report.uris["html"].split("/reports/gate/", 1)[1]
    for k, v in tags.items():
        client.set_model_version_tag(report.dataset, version, k, v)
    name = client.get_run(run_id).data.tags.get("mlflow.runName", "")
    client.set_tag(run_id, "mlflow.runName", f"{name.split(' (')[0]} (gate {report.decision})")
    if spec is not None:
        from include.mlops import lineage

        try:
            lineage.log_model_card(spec, version, uri)
        except lineage.LineageError as exc:  # a version not trained by training.py has no lineage to show
            print(f"no model card for {spec.name} v{version}: {exc}")
    return tags


def evaluate_challenger(
    spec: DatasetSpec,
    lake: Lake,
    *,
    version: str | None = None,
    end: date | str | None = None,
    start: date | str | None = None,
    tracking_uri: str | None = None,
) -> GateReport:
    """The gate step: score the challenger (default: alias ``challenger``) and the champion on the same window,
    decide, save the report to the lake and log it to MLflow. The window is the challenger's training test
    split, or the last ``test_days`` validated days up to ``end`` when ``end`` is given, or the validated days of
    [``start``, ``end``] (a shadow proposing itself on its comparison window)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = str(version or client.get_model_version_by_alias(spec.name, CHALLENGER).version)
    try:
        champion: str | None = str(client.get_model_version_by_alias(spec.name, CHAMPION).version)
    except MlflowException:
        champion = None
    if champion == version:
        champion = None  # re-evaluating the champion itself: no baseline but itself

    if end is None:
        start, end = training_test_window(spec, version, uri)
        window = evaluation_window(spec, lake, end, start=start)
    else:
        window = evaluation_window(spec, lake, end, start=start)
    ev_challenger = collect_evidence(spec, f"models:/{spec.name}/{version}", window.frame, tracking_uri=uri)
    ev_champion = (
        collect_evidence(spec, f"models:/{spec.name}/{champion}", window.frame, tracking_uri=uri) if champion else None
    )
    paired = None
    if ev_champion is not None and spec.gate.bootstrap_samples:
        y = window.frame[spec.label.name].to_numpy()
        g = spec.gate
        paired = paired_bootstrap(
            y, ev_challenger.scores, ev_champion.scores, samples=g.bootstrap_samples, confidence=g.confidence
        )
    report = evaluate_gate(spec, ev_challenger, ev_champion, window=window.describe(), paired=paired)
    if paired is not None:
        report.window["paired"] = paired.as_dict()
    save_report(report, lake, key=client.get_model_version(spec.name, version).run_id[:8])
    log_report(report, uri, spec=spec)
    return report
