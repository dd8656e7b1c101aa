"""Monitoring: Evidently drift and delayed-label performance of the champion, and the retrain policy.

:func:`run_monitor` compares the recent window (``monitoring.window_days`` validated days ending at a day) with
the champion's reference sample (logged at training: training rows with the model's ``prediction``):

- **data drift** — Evidently ``DataDriftPreset`` per feature, with fixed methods (normed Wasserstein for
  numeric, Jensen-Shannon for categorical columns, threshold 0.1) so scores mean the same at any window size;
  the share of drifted columns is recorded and shown, **never** acted upon: on the real 2013 data it is
  47-82 % on every week, the champion's own test week included (weather and delay rates are autocorrelated).
- **importance-weighted drift** — the share of the champion's permutation importance (``feature_importance.json``
  of its training run; uniform when absent) held by *materially* drifted columns: numeric columns moved by at
  least ``material_numeric_drift`` reference standard deviations, categorical ones by a Jensen-Shannon distance
  of at least ``material_categorical_drift``. A weather column the model barely uses moving does not count; the
  destination mix of a model that leans on ``dest`` does.
- **prediction drift** — the Wasserstein-1 distance between the recent and reference predicted probabilities,
  in probability units (also PSI over reference deciles and the mean prediction, for people).
- **delayed-label quality** — ROC AUC and Brier of the champion on the window's labelled flights (labels joined
  from the validated zone; cancelled flights have none), computed by :func:`training.binary_metrics`, the same
  function that produced the champion's ``test_*`` metrics at training, against which they are compared.

Results go to ``reports/drift/<dataset>/date=<day>/`` (Evidently HTML + JSON, ``monitor.json``), to an MLflow
run in experiment ``<dataset>-monitoring`` and, for a local lake, to the Evidently workspace ``<root>/evidently``
(``evidently ui --workspace <root>/evidently`` shows the history).

:func:`decide` is the policy, a pure function: a retrain is requested when the champion's recent ROC AUC dropped
or its Brier (or, with ``max_brier_skill_drop``, its Brier skill against the window's own base rate) worsened by
the spec's limits against its own test metrics — significantly, when ``bootstrap_samples`` gives the drop an
interval — or prediction drift or importance-weighted drift exceeds its limit. The debounce is on promotions
(:func:`_debounce`): a rejected candidate's trigger may request again after ``retrain_cooldown_days``, a newly
promoted champion gets ``retrain_debounce_days``; never while a training run is in progress. Every decision is
recorded with its reasons (:func:`record_decision`).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from include.mlops.config import DatasetSpec
from include.mlops.training import (
    PREDICTION_COLUMN,
    artifact_location,
    binary_metrics,
    default_tracking_uri,
    ensure_experiment,
)

if TYPE_CHECKING:
    from include.mlops.storage import Lake

Verdict = Literal["pass", "fail", "skip", "info"]
TRIGGERS = ("roc_auc_drop", "brier_rise", "brier_skill_drop", "prediction_drift", "weighted_drift")
DRIFT_METHODS = {"numeric": "wasserstein", "categorical": "jensenshannon"}
COLUMN_DRIFT_THRESHOLD = 0.1  # Evidently's default for both methods: what "drifted" means in the report
PSI_BINS = 10
_MAX_TAG = 5000
_CACHE: dict[tuple[str, str], Any] = {}  # (tracking URI, artifact URI) -> reference frame / importance


class MonitoringError(RuntimeError):
    """Monitoring cannot run: no validated days in the window, no reference sample for the champion."""


# -- results -------------------------------------------------------------------------------------------
@dataclass
class MonitorResult:
    """One monitoring run: the window, the champion, every metric, per-column drift and where things went."""

    dataset: str
    end_day: str
    window_start: str
    window_end: str
    days: list[str]
    model_version: str | None
    metrics: dict[str, Any]
    columns: dict[str, dict[str, Any]]
    importance_source: str
    served: dict[str, Any]
    uris: dict[str, str] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    evidently_run_id: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def as_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict (for XCom and monitor.json)."""
        return asdict(self)


@dataclass(frozen=True)
class Check:
    """One policy check: its value, limit, interval (when bootstrapped) and verdict (``fail`` = the trigger fired)."""

    name: str
    value: float | None
    threshold: float | None
    verdict: Verdict
    detail: str = ""
    interval: tuple[float, float] | None = None


@dataclass
class Decision:
    """What the policy decided for a day and why: ``retrain`` (request one now), ``alert`` (a trigger fired,
    whether or not a retrain could be requested), the named ``reasons`` and every check."""

    retrain: bool
    reasons: list[str]
    alert: bool
    day: str = ""
    triggers: list[str] = field(default_factory=list)
    blocked_by: str | None = None  # "training_running" | "debounce" when a trigger fired but no request is made
    checks: list[Check] = field(default_factory=list)
    propose_shadow: str | None = None  # the shadow version shown better than the champion: to the gate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the policy (pure) ---------------------------------------------------------------------------------
def _as_date(d: date | str) -> date:
    return d if isinstance(d, date) else date.fromisoformat(str(d)[:10])


def _num(metrics: Mapping[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _perf_check(name: str, metrics: Mapping[str, Any], limit: float, min_rows: int, what: str) -> Check:
    value = _num(metrics, name)
    rows = int(metrics.get("labelled_rows") or 0)
    recent, base = _num(metrics, what), _num(metrics, f"baseline_{what}")
    if value is None or base is None:
        why = "no baseline metric on the champion" if base is None else "the window's labels cannot score it"
        return Check(name, value, limit, "skip", f"not measured: {why}")
    if rows < min_rows:
        return Check(name, value, limit, "skip", f"only {rows} labelled rows (< {min_rows}): too few to judge")
    verdict: Verdict = "fail" if value >= limit else "pass"
    label = {"roc_auc": "ROC AUC", "brier": "Brier", "brier_skill": "Brier skill"}[what]
    detail = f"recent {label} {_f(recent)} vs {_f(base)} at training ({rows:,} labelled rows)"
    interval = metrics.get(f"{name}_interval")
    if interval is not None:
        low, high = (float(v) for v in interval)
        detail += f"; interval of the drop [{low:.3f}, {high:.3f}]"
        if verdict == "fail" and low <= 0:
            verdict = "pass"
            detail += ": not significant (the interval reaches zero)"
        return Check(name, value, limit, verdict, detail, (low, high))
    return Check(name, value, limit, verdict, detail)


def _drift_check(name: str, value: float | None, limit: float, detail: str) -> Check:
    if value is None:
        return Check(name, None, limit, "skip", "not measured")
    return Check(name, value, limit, "fail" if value > limit else "pass", detail)


def policy_checks(spec: DatasetSpec, metrics: Mapping[str, Any]) -> list[Check]:
    """Every check of the policy on one monitoring run's metrics (no history, no side effects)."""
    m = spec.monitoring
    drifted = metrics.get("material_columns") or []
    share = _num(metrics, "drift_share")
    brier = _perf_check("brier_rise", metrics, m.max_brier_rise, m.min_labelled_rows, "brier")
    skill = []
    if m.max_brier_skill_drop is not None:
        skill = [_perf_check("brier_skill_drop", metrics, m.max_brier_skill_drop, m.min_labelled_rows, "brier_skill")]
        # Brier follows the window's delay rate: recorded beside the skill, which replaces it as the trigger
        if brier.verdict != "skip":
            brier = replace(brier, verdict="info", detail=brier.detail + "; recorded, the Brier skill is the trigger")
    return [
        _perf_check("roc_auc_drop", metrics, m.max_roc_auc_drop, m.min_labelled_rows, "roc_auc"),
        brier,
        *skill,
        _drift_check(
            "prediction_drift",
            _num(metrics, "prediction_drift"),
            m.max_prediction_drift,
            f"Wasserstein distance of predicted probabilities; mean {_f(_num(metrics, 'mean_prediction'))} "
            f"vs {_f(_num(metrics, 'reference_mean_prediction'))} in the reference",
        ),
        _drift_check(
            "weighted_drift",
            _num(metrics, "weighted_drift"),
            m.max_weighted_drift,
            "share of the champion's feature importance in materially drifted columns"
            + (f" ({', '.join(drifted)})" if drifted else ""),
        ),
        Check(
            "drift_share",
            share,
            m.max_drift_share,
            "info",
            "share of columns Evidently flags as drifted: recorded, never a trigger (a week of seasonal data is "
            "always 'drifted' against a longer reference period)",
        ),
    ]


def decide(
    spec: DatasetSpec,
    metrics: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    *,
    day: date | str | None = None,
    training_running: bool = False,
    champion: str | None = None,
) -> Decision:
    """The retrain policy. ``metrics``: a :class:`MonitorResult`'s ``metrics``; ``history``: earlier decision
    records (``{"day", "retrain", …}``); ``day`` defaults to ``metrics["end_day"]``.

    A trigger is ROC AUC drop ≥ ``max_roc_auc_drop`` or Brier rise ≥ ``max_brier_rise`` against the champion's
    test metrics (with at least ``min_labelled_rows`` labels), prediction drift > ``max_prediction_drift`` or
    importance-weighted drift > ``max_weighted_drift``; the raw drift share never triggers. Any trigger alerts;
    a retrain is requested unless a training run is in progress or the debounce blocks it (:func:`_debounce`;
    decisions of the same day are ignored, so a re-run decides the same). ``champion``: the version monitored
    (history records carry theirs as ``model_version``).
    """
    day = _as_date(day or metrics["end_day"])
    checks = policy_checks(spec, metrics)
    propose, why_shadow = _shadow_proposal(spec, metrics.get("shadow"), history, day)
    fired = [c for c in checks if c.verdict == "fail" and c.name in TRIGGERS]
    triggers = [c.name for c in fired]
    reasons = [f"{c.name} {_f(c.value)} beyond {c.threshold}: {c.detail}" for c in fired]
    if not fired:
        measured = "; ".join(
            f"{c.name} {_f(c.value)} (limit {c.threshold})" if c.verdict != "skip" else f"{c.name} skipped ({c.detail})"
            for c in checks
            if c.name in TRIGGERS
        )
        share = next(c.value for c in checks if c.name == "drift_share")
        reasons = [f"no trigger: {measured}; drift_share {_f(share, 2)} recorded, not a trigger", *why_shadow]
        return Decision(False, reasons, False, day.isoformat(), [], None, checks, propose)
    reasons += why_shadow

    blocked_by = None
    if training_running:
        blocked_by = "training_running"
        reasons.append(f"retrain not requested: a {spec.name}_train run is in progress and will answer this")
    else:
        blocked_by, why = _debounce(spec, history, day, champion)
        if why:
            reasons.append(why)
    return Decision(blocked_by is None, reasons, True, day.isoformat(), triggers, blocked_by, checks, propose)


def _shadow_proposal(
    spec: DatasetSpec, shadow: Mapping[str, Any] | None, history: Sequence[Mapping[str, Any]], day: date
) -> tuple[str | None, list[str]]:
    """The shadow version to send to the gate (shown better than the champion by :func:`compare_shadow`), unless
    it was proposed within ``retrain_cooldown_days`` (or ``retrain_debounce_days``) already; and the reason."""
    if not shadow or not shadow.get("version"):
        return None, []
    version = str(shadow["version"])
    if shadow.get("verdict") != "better":
        return None, [f"shadow v{version}: {shadow.get('verdict')}: {shadow.get('detail', '')}"]
    m = spec.monitoring
    wait = m.retrain_cooldown_days if m.retrain_cooldown_days is not None else m.retrain_debounce_days
    earlier = [
        _as_date(h["day"])
        for h in history
        if str(h.get("propose_shadow")) == version and h.get("day") and 0 < (day - _as_date(h["day"])).days < wait
    ]
    if earlier:
        return None, [f"shadow v{version} is better, already proposed on {max(earlier)}: {shadow.get('detail', '')}"]
    return version, [f"shadow v{version} proposes its promotion: {shadow.get('detail', '')}"]


def compare_shadow(
    spec: DatasetSpec,
    y: np.ndarray,
    p_shadow: np.ndarray,
    p_champion: np.ndarray,
    *,
    version: str,
    champion: str | None,
    window: tuple[str, str],
    since: str | None = None,
) -> dict[str, Any]:
    """The shadow against the champion on the same labelled rows (its test split and the days since it began
    shadowing): a paired bootstrap of the ROC AUC gain and the Brier change, judged by the gate's own bars
    (``gate.min_roc_auc_gain``, else a gain above 0, and ``gate.max_brier_rise``), so a shadow called
    ``better`` here is one the gate would promote on these rows. Pure; the dict goes to ``monitor.json``."""
    from include.mlops.evaluation import EvaluationError, paired_bootstrap

    g = spec.gate
    y = np.asarray(y).astype(int)
    min_gain = g.min_roc_auc_gain or 0.0
    max_rise = g.max_brier_rise if g.max_brier_rise is not None else 0.0
    out: dict[str, Any] = {
        "version": str(version),
        "champion": champion,
        "since": since,
        "window": list(window),
        "rows": len(y),
        "min_gain": min_gain,
        "max_brier_rise": max_rise,
    }
    who = f"v{version} vs champion v{champion} on {len(y):,} labelled rows of {window[0]}..{window[1]}"
    if len(y) < spec.monitoring.min_labelled_rows or len(np.unique(y)) < 2:
        return out | {"verdict": "too few rows", "detail": f"{who}: too few to judge"}
    try:
        cmp = paired_bootstrap(
            y,
            p_shadow,
            p_champion,
            samples=g.bootstrap_samples or 200,
            confidence=g.confidence,
            seed=spec.training.seed,
        )
    except EvaluationError as exc:
        return out | {"verdict": "too few rows", "detail": f"{who}: {exc}"}
    drop, low, high = cmp.roc_auc_drop
    gain, gain_interval = -drop, [-high, -low]
    rise, r_low, r_high = cmp.brier_rise
    better = (gain_interval[0] >= min_gain if min_gain > 0 else gain_interval[0] > 0) and r_high <= max_rise
    quality = {
        "roc_auc": binary_metrics(y, np.asarray(p_shadow, dtype="float64"), 0.5).get("roc_auc"),
        "brier": float(np.mean((np.asarray(p_shadow, dtype="float64") - y) ** 2)),
        "champion_roc_auc": binary_metrics(y, np.asarray(p_champion, dtype="float64"), 0.5).get("roc_auc"),
        "champion_brier": float(np.mean((np.asarray(p_champion, dtype="float64") - y) ** 2)),
    }
    detail = (
        f"{who}: ROC AUC {gain:+.4f} [{gain_interval[0]:+.4f}, {gain_interval[1]:+.4f}] (needs >= "
        f"{'+' if min_gain else '> +'}{min_gain}), Brier {rise:+.4f} [{r_low:+.4f}, {r_high:+.4f}] "
        f"(needs <= +{max_rise})"
    )
    return (
        out
        | quality
        | {
            "auc_gain": gain,
            "auc_gain_interval": gain_interval,
            "brier_change": rise,
            "brier_change_interval": [r_low, r_high],
            "verdict": "better" if better else "not better",
            "detail": detail,
        }
    )


def _debounce(
    spec: DatasetSpec, history: Sequence[Mapping[str, Any]], day: date, champion: str | None
) -> tuple[str | None, str | None]:
    """Whether the request is blocked (``"debounce"`` / ``"cooldown"``) and why.

    Without ``retrain_cooldown_days`` (or without versions to tell what happened): no request within
    ``retrain_debounce_days`` of another. With it, the debounce is on promotions, not requests: when the champion
    changed since the last request, a new request waits ``retrain_debounce_days`` from the first day the new
    champion was monitored; when it did not (the candidate was rejected), a persisting trigger requests again
    after ``retrain_cooldown_days``."""
    m = spec.monitoring
    earlier = [h for h in history if h.get("day") and _as_date(h["day"]) != day]
    requests = sorted((h for h in earlier if h.get("retrain")), key=lambda h: _as_date(h["day"]))
    if m.retrain_cooldown_days is None or champion is None or not requests or not requests[-1].get("model_version"):
        near = [_as_date(h["day"]) for h in requests if abs((day - _as_date(h["day"])).days) < m.retrain_debounce_days]
        if not near:
            return None, None
        last = min(near, key=lambda d: abs((day - d).days))
        return "debounce", (
            f"retrain not requested: debounced, a retrain was requested for {last} "
            f"({_days(abs((day - last).days))} away; at most one per {_days(m.retrain_debounce_days)})"
        )
    last = requests[-1]
    last_day = _as_date(last["day"])
    if str(last["model_version"]) == str(champion):
        gap = (day - last_day).days
        if gap < m.retrain_cooldown_days:
            return "cooldown", (
                f"retrain not requested: v{champion} still serves after the request of {last_day} ({_days(gap)} ago); "
                f"a persisting trigger requests again after {_days(m.retrain_cooldown_days)}"
            )
        return None, None
    seen = [_as_date(h["day"]) for h in earlier if str(h.get("model_version")) == str(champion)]
    since = min([d for d in seen if d > last_day], default=day)
    served = (day - since).days
    if served < m.retrain_debounce_days:
        return "debounce", (
            f"retrain not requested: v{champion} was promoted after the request of {last_day} and has been "
            f"monitored for {_days(served)}; a new champion gets {_days(m.retrain_debounce_days)}"
        )
    return None, None


# -- measurements (no I/O) -----------------------------------------------------------------------------
def importance_weights(spec: DatasetSpec, importance: Mapping[str, float] | None) -> tuple[dict[str, float], str]:
    """Non-negative weights summing to 1 over the spec's features, from permutation importance (negative
    importance is noise: weight 0); uniform when no importance is available or all of it is zero."""
    names = spec.feature_names
    raw = {n: max(float((importance or {}).get(n, 0.0) or 0.0), 0.0) for n in names}
    total = sum(raw.values())
    if not importance or total <= 0:
        return {n: 1.0 / len(names) for n in names}, "uniform"
    return {n: v / total for n, v in raw.items()}, "feature_importance.json"


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``current`` against ``reference`` over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    r = np.clip(np.histogram(reference, edges)[0] / len(reference), 1e-4, None)
    c = np.clip(np.histogram(current, edges)[0] / max(len(current), 1), 1e-4, None)
    return float(np.sum((c - r) * np.log(c / r)))


def drift_sample(spec: DatasetSpec, current: pd.DataFrame) -> pd.DataFrame:
    """At most ``monitoring.max_drift_rows`` rows of the window for the drift report: a seeded random sample in
    row order (the same rows on every re-run). Against a reference of a few thousand rows the per-column scores
    of a 50,000-row sample differ from the full window's by far less than the 0.1 drift threshold, while
    Evidently's cost grows with the rows it is given (a year: 336 k rows)."""
    limit = spec.monitoring.max_drift_rows
    if len(current) <= limit:
        return current
    return current.sample(n=limit, random_state=spec.training.seed).sort_index()


def drift_report(
    spec: DatasetSpec,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    timestamp: datetime | None = None,
    metadata: dict[str, Any] | None = None,
    tags: list[str] | None = None,
) -> Any:
    """The Evidently snapshot: DataDriftPreset over the spec's features plus the drift of the prediction column."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    cols = [*spec.feature_names, PREDICTION_COLUMN]
    current = drift_sample(spec, current)
    # A feature with no value on one side (e.g. a rate over earlier days on a dataset's first day) cannot be
    # compared: Evidently raises on it. It is left out of the drift figures, and the report says so.
    compared = [c for c in spec.feature_names if current[c].notna().any() and reference[c].notna().any()]
    empty = [c for c in spec.feature_names if c not in compared]
    if empty:
        metadata = {**(metadata or {}), "not compared (no values on one side)": ", ".join(empty)}
    definition = DataDefinition(
        numerical_columns=[*spec.numeric_features, PREDICTION_COLUMN], categorical_columns=spec.categorical_features
    )
    report = Report(
        [
            DataDriftPreset(
                columns=compared,
                drift_share=spec.monitoring.max_drift_share,
                num_method=DRIFT_METHODS["numeric"],
                cat_method=DRIFT_METHODS["categorical"],
                threshold=COLUMN_DRIFT_THRESHOLD,
            ),
            ValueDrift(column=PREDICTION_COLUMN, method=DRIFT_METHODS["numeric"], threshold=COLUMN_DRIFT_THRESHOLD),
        ],
        include_tests=True,
        metadata={k: str(v) for k, v in (metadata or {}).items()},
        tags=tags or [],
    )
    return report.run(
        Dataset.from_pandas(current[cols].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(reference[cols].reset_index(drop=True), data_definition=definition),
        timestamp=timestamp,
    )


def column_drift(spec: DatasetSpec, snapshot: Any, weights: Mapping[str, float]) -> tuple[dict[str, Any], float]:
    """Per feature: method, score, whether Evidently flags it, whether it drifted materially and its weight;
    and the share of drifted columns."""
    d = snapshot.dict()
    m = spec.monitoring
    cats = set(spec.categorical_features)
    share = 0.0
    out: dict[str, dict[str, Any]] = {}
    for metric in d["metrics"]:
        cfg = metric.get("config", {})
        kind = cfg.get("type", "")
        if kind.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif kind.endswith("ValueDrift") and cfg.get("column") in weights:
            col, score = cfg["column"], float(metric["value"])
            material = score >= (m.material_categorical_drift if col in cats else m.material_numeric_drift)
            out[col] = {
                "method": cfg.get("method"),
                "score": round(score, 6),
                "drifted": bool(score >= float(cfg.get("threshold") or COLUMN_DRIFT_THRESHOLD)),
                "material": bool(material),
                "weight": round(float(weights[col]), 6),
            }
    return out, share


def window_metrics(
    spec: DatasetSpec,
    frame: pd.DataFrame,
    p: np.ndarray,
    reference: pd.DataFrame,
    *,
    threshold: float,
    baseline: Mapping[str, float | None],
    columns: Mapping[str, Mapping[str, Any]],
    drift_share: float,
) -> dict[str, Any]:
    """The flat metrics the policy reads: quality on labelled rows vs the baseline, prediction drift, drift."""
    from scipy.stats import wasserstein_distance

    label = spec.label.name
    known = frame[label].notna().to_numpy() if label in frame.columns else np.zeros(len(frame), dtype=bool)
    y = frame[label].to_numpy()[known].astype(int) if known.any() else np.array([], dtype=int)
    ref_p = reference[PREDICTION_COLUMN].to_numpy(dtype="float64")
    out: dict[str, Any] = {
        "rows": len(frame),
        "drift_rows": min(len(frame), spec.monitoring.max_drift_rows),
        "labelled_rows": int(known.sum()),
        "positive_rate": float(y.mean()) if len(y) else None,
        "mean_prediction": float(p.mean()) if len(p) else None,
        "reference_mean_prediction": float(ref_p.mean()),
        "prediction_drift": float(wasserstein_distance(ref_p, p)) if len(p) else None,
        "prediction_psi": psi(ref_p, p) if len(p) else None,
        "drift_share": drift_share,
        "drifted_columns": sum(1 for c in columns.values() if c["drifted"]),
        "weighted_drift": float(sum(c["weight"] for c in columns.values() if c["material"])),
        # the materially drifted columns that carry weight, heaviest first (they make up weighted_drift)
        "material_columns": sorted(
            (c for c, v in columns.items() if v["material"] and v["weight"] > 0), key=lambda c: -columns[c]["weight"]
        ),
        "baseline_roc_auc": baseline.get("roc_auc"),
        "baseline_brier": baseline.get("brier"),
    }
    quality = binary_metrics(y, p[known], threshold) if len(np.unique(y)) == 2 else {}
    for k in ("roc_auc", "brier", "pr_auc", "log_loss"):
        out[k] = quality.get(k)
    out["calibration_gap"] = (
        out["mean_prediction"] - out["positive_rate"] if known.any() and out["mean_prediction"] is not None else None
    )
    if out["roc_auc"] is not None and out["baseline_roc_auc"] is not None:
        out["roc_auc_drop"] = out["baseline_roc_auc"] - out["roc_auc"]
    else:
        out["roc_auc_drop"] = None
    if out["brier"] is not None and out["baseline_brier"] is not None:
        out["brier_rise"] = out["brier"] - out["baseline_brier"]
    else:
        out["brier_rise"] = None
    out["brier_skill"] = brier_skill(out["brier"], out["positive_rate"])
    out["baseline_brier_skill"] = brier_skill(baseline.get("brier"), baseline.get("positive_rate"))
    out["brier_skill_drop"] = (
        out["baseline_brier_skill"] - out["brier_skill"]
        if out["brier_skill"] is not None and out["baseline_brier_skill"] is not None
        else None
    )
    m = spec.monitoring
    if m.bootstrap_samples and out["roc_auc"] is not None:
        auc, skill = bootstrap_quality(
            y, p[known], samples=m.bootstrap_samples, confidence=m.confidence, seed=spec.training.seed
        )
        for name, (low, high), base in (
            ("roc_auc_drop", auc, out["baseline_roc_auc"]),
            ("brier_skill_drop", skill, out["baseline_brier_skill"]),
        ):
            # the baseline is one number: the drop's interval is the baseline minus the recent interval
            out[f"{name}_interval"] = None if base is None else [base - high, base - low]
    return out


def brier_skill(brier: float | None, rate: float | None) -> float | None:
    """1 - Brier / (rate * (1 - rate)): the share of the base-rate forecast's Brier score a model removes. Brier
    itself follows the positive rate (r = 0.90 with the weekly delay rate over 2013), the skill does not."""
    if brier is None or rate is None or not 0 < rate < 1:
        return None
    return 1.0 - float(brier) / (float(rate) * (1.0 - float(rate)))


def bootstrap_quality(
    y: np.ndarray, p: np.ndarray, *, samples: int, confidence: float, seed: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Bootstrap intervals of ROC AUC and Brier skill (against each resample's own rate) on ``(y, p)``."""
    from include.mlops.evaluation import WeightedAUC, interval, resample_weights

    auc = WeightedAUC(y, p)
    se = (p - y) ** 2
    aucs, skills = [], []
    for w in resample_weights(y, samples, seed):
        aucs.append(auc(w))
        rate = float(np.average(y, weights=w))
        skills.append(1.0 - float(np.average(se, weights=w)) / (rate * (1 - rate)))
    ones = np.ones(len(y))
    skill = brier_skill(float(se.mean()), float(np.mean(y)))
    return interval(aucs, confidence, auc(ones)), interval(skills, confidence, skill or 0.0)


# -- the champion's reference and importance -------------------------------------------------------------
def _cached_artifact(tracking_uri: str, artifact_uri: str, read: Any) -> Any:
    import tempfile

    import mlflow.artifacts

    key = (tracking_uri, artifact_uri)
    if key not in _CACHE:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=artifact_uri, dst_path=tmp, tracking_uri=tracking_uri
            )
            _CACHE[key] = read(local)
    return _CACHE[key]


def champion_baseline(spec: DatasetSpec, version: str, tracking_uri: str) -> dict[str, Any]:
    """The version's reference sample, feature importance and test metrics at training."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mv = client.get_model_version(spec.name, version)
    tags = mv.tags or {}
    ref_uri = tags.get("reference_uri")
    if not ref_uri:
        raise MonitoringError(f"{spec.name} v{version} has no reference_uri tag: it was not trained by training.py")
    reference = _cached_artifact(tracking_uri, ref_uri, pd.read_parquet)
    missing = [c for c in [*spec.feature_names, PREDICTION_COLUMN] if c not in reference.columns]
    if missing:
        raise MonitoringError(f"the reference sample of {spec.name} v{version} lacks columns {missing}")
    try:
        importance = _cached_artifact(
            tracking_uri, f"runs:/{mv.run_id}/feature_importance.json", lambda p: json.loads(Path(p).read_text())
        )
    except (MlflowException, OSError):
        importance = None

    def tag(name: str) -> float | None:
        try:
            return float(tags[name])
        except (KeyError, ValueError):
            return None

    return {
        "reference": reference,
        "importance": importance,
        "baseline": {
            "roc_auc": tag("test_roc_auc"),
            "brier": tag("test_brier"),
            "positive_rate": tag("test_positive_rate"),
        },
        "run_id": mv.run_id,
    }


# -- the monitoring run --------------------------------------------------------------------------------
def report_dir(spec: DatasetSpec, day: date | str) -> str:
    """Where a day's drift reports live in the lake."""
    return f"reports/drift/{spec.name}/date={_as_date(day).isoformat()}"


def decisions_dir(spec: DatasetSpec) -> str:
    return f"reports/drift/{spec.name}/decisions"


def monitoring_experiment(spec: DatasetSpec) -> str:
    return f"{spec.name}-monitoring"


def _served(spec: DatasetSpec, lake: Lake, frame: pd.DataFrame, p: np.ndarray, version: str | None) -> dict[str, Any]:
    """What the predictions zone holds for the window, and whether the champion's stored scores match a fresh
    scoring of the same rows (a training/serving skew check)."""
    from include.mlops.scoring import MODEL_VERSION, read_predictions

    start, end = frame[spec.time.column].min(), frame[spec.time.column].max()
    stored = read_predictions(spec, lake, start, end)
    if stored.empty:
        return {"rows": 0, "versions": [], "compared_rows": 0, "max_abs_diff": None}
    return {
        "rows": len(stored),
        "versions": sorted(stored[MODEL_VERSION].astype(str).unique().tolist()),
        **_stored_vs_fresh(spec, frame, p, stored[stored[MODEL_VERSION].astype(str) == str(version)]),
    }


def _stored_vs_fresh(spec: DatasetSpec, frame: pd.DataFrame, p: np.ndarray, stored: pd.DataFrame) -> dict[str, Any]:
    """Stored predictions joined on the entity keys with a fresh scoring ``p`` of ``frame``: how many rows matched
    and the largest difference (0: what was written then is what the model says now)."""
    from include.mlops.scoring import PROBABILITY

    both = frame[spec.entity_keys].assign(_p=p).merge(stored, on=spec.entity_keys, how="inner")
    diff = float(np.max(np.abs(both["_p"] - both[PROBABILITY]))) if len(both) else None
    return {"compared_rows": len(both), "max_abs_diff": diff}


def run_monitor(
    spec: DatasetSpec,
    lake: Lake,
    end_day: date | str,
    *,
    tracking_uri: str | None = None,
    window_days: int | None = None,
    tags: Mapping[str, str] | None = None,
    workspace: str | None = None,
) -> MonitorResult:
    """Monitor the champion on the ``window_days`` (default ``monitoring.window_days``) days ending at
    ``end_day``: reports to the lake, an MLflow run in ``<dataset>-monitoring``, a snapshot in the Evidently
    workspace (``workspace``, default ``<lake root>/evidently`` for a local lake). Raises
    :class:`scoring.NoChampionError` without a champion, :class:`MonitoringError` without data."""
    from include.mlops import scoring
    from include.mlops.features import features_for_dates

    t0 = time.perf_counter()
    uri = tracking_uri or default_tracking_uri()
    end = _as_date(end_day)
    n = window_days or spec.monitoring.window_days
    start = end - timedelta(days=n - 1)
    lo, hi = f"date={start.isoformat()}", f"date={end.isoformat()}"
    days = [p.removeprefix("date=") for p in lake.partitions("validated", spec.name) if lo <= p <= hi]
    if not days:
        raise MonitoringError(f"no validated {spec.name} days between {start} and {end}: nothing to monitor")

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 3)
        clock = now

    model = scoring.load_model(spec, tracking_uri=uri)
    base = champion_baseline(spec, model.version, uri)
    lap("champion")
    frame = features_for_dates(lake, spec, start, end)
    lap("features")
    p = scoring.predict(model, frame)
    current = frame.assign(**{PREDICTION_COLUMN: p})
    lap("score")
    weights, source = importance_weights(spec, base["importance"])
    snapshot = drift_report(
        spec,
        current,
        base["reference"],
        timestamp=datetime(end.year, end.month, end.day, tzinfo=UTC),
        metadata={"dataset": spec.name, "model_version": model.version, "window": f"{start}..{end}"},
        tags=[spec.name, f"v{model.version}"],
    )
    columns, share = column_drift(spec, snapshot, weights)
    lap("evidently")
    metrics = window_metrics(
        spec,
        frame,
        p,
        base["reference"],
        threshold=model.threshold,
        baseline=base["baseline"],
        columns=columns,
        drift_share=share,
    )
    metrics = {"end_day": end.isoformat(), **metrics}
    metrics["shadow"] = shadow_comparison(spec, lake, model, frame, p, start, end, uri)
    lap("shadow")
    result = MonitorResult(
        dataset=spec.name,
        end_day=end.isoformat(),
        window_start=start.isoformat(),
        window_end=end.isoformat(),
        days=days,
        model_version=model.version,
        metrics=metrics,
        columns=columns,
        importance_source=source,
        served=_served(spec, lake, frame, p, model.version),
        timings=timings,
    )
    lap("metrics")
    html = with_context(script_safe_html(snapshot.get_html_str(as_iframe=False)), spec, result)
    lap("html")
    save_reports(spec, lake, result, html=html, evidently_json=snapshot.json())
    lap("reports")
    result.mlflow_run_id = log_to_mlflow(spec, result, html, tracking_uri=uri, tags=tags)
    lap("mlflow")
    result.evidently_run_id = add_to_workspace(spec, lake, snapshot, result, workspace=workspace)
    lap("workspace")
    result.seconds = round(time.perf_counter() - t0, 2)
    lake.write_json(f"{report_dir(spec, end)}/monitor.json", result.as_dict())
    return result


def shadow_window(spec: DatasetSpec, test_start: date | str, end: date | str) -> tuple[date, date]:
    """The rows a shadow is judged on, ending ``end``: its test split (from ``test_start``) and the days since, at
    most ``monitoring.shadow_window_days`` days: out of time for both models, and more of them every day."""
    end = _as_date(end)
    return max(_as_date(test_start), end - timedelta(days=spec.monitoring.shadow_window_days - 1)), end


def shadow_comparison(
    spec: DatasetSpec,
    lake: Lake,
    model: Any,
    frame: pd.DataFrame,
    p: np.ndarray,
    start: date,
    end: date,
    tracking_uri: str,
) -> dict[str, Any] | None:
    """The shadow (registry alias ``shadow``) against the champion ``model`` for a monitoring run ending ``end``:
    :func:`compare_shadow` on the shadow's test split and the days since (at most ``shadow_window_days``), its
    ROC AUC / Brier on the monitored window ``frame`` (the second curve beside the champion's ``p``), and its
    stored predictions (``shadow/<ds>/version=<v>``) checked against a fresh scoring of the same rows. None
    without a shadow. A shadow that cannot be read never fails the champion's monitoring: verdict ``error``."""
    from include.mlops import registry, scoring
    from include.mlops.evaluation import training_test_window
    from include.mlops.features import features_for_dates

    version = registry.shadow_version(spec, tracking_uri)
    if version is None or str(version) == str(model.version):
        return None
    try:
        shadow = scoring.load_model(spec, f"models:/{spec.name}/{version}", tracking_uri=tracking_uri)
        first, _ = shadow_window(spec, training_test_window(spec, version, tracking_uri)[0], end)
        wide = frame if first >= start else features_for_dates(lake, spec, first, end)
        label = spec.label.name
        known = wide[label].notna().to_numpy()
        p_wide = p if wide is frame else scoring.predict(model, wide)
        s_wide = scoring.predict(shadow, wide)
        shadow_days = scoring.shadow_days(spec, lake, version)
        out = compare_shadow(
            spec,
            wide[label].to_numpy()[known],
            s_wide[known],
            p_wide[known],
            version=str(version),
            champion=model.version,
            window=(first.isoformat(), end.isoformat()),
            since=shadow_days[0] if shadow_days else None,
        )
        p_shadow = s_wide if wide is frame else scoring.predict(shadow, frame)
        here = frame[label].notna().to_numpy()
        y = frame[label].to_numpy()[here].astype(int)
        window = binary_metrics(y, p_shadow[here], shadow.threshold) if len(np.unique(y)) == 2 else {}
        out["window_roc_auc"], out["window_brier"] = window.get("roc_auc"), window.get("brier")
        stored = scoring.read_shadow_predictions(spec, lake, version, start, end)
        out["stored"] = {
            "days": len([d for d in shadow_days if start.isoformat() <= d <= end.isoformat()]),
            **_stored_vs_fresh(spec, frame, p_shadow, stored),
        }
        return out
    except Exception as exc:  # the shadow is an experiment: its trouble is reported, the champion is still judged
        return {"version": str(version), "champion": model.version, "verdict": "error", "detail": f"{exc!r}"[:500]}


_DATA_BLOCK = "<script>\n    var "  # Evidently 0.7's inline data: `var <id> = <json>;` ... up to "\n</script>"


def script_safe_html(html: str) -> str:
    """Evidently's standalone HTML with its inline JSON made safe to embed: Evidently writes the report data into a
    ``<script>`` unescaped, so a value such as ``</script><script>…`` in a string column would end the element and
    run. Every ``<`` in that block becomes ``\\u003c`` (the same string to the JSON parser; JSON outside strings
    and the ``var`` lines hold no ``<``). The block ends at the first ``\\n</script>``: JSON strings cannot hold a
    raw newline, so no value can fake that end. Raises when the block is not where Evidently 0.7 puts it, rather
    than write a report that may carry markup raw."""
    start = html.find(_DATA_BLOCK)
    end = html.find("\n</script>", start + len(_DATA_BLOCK)) if start >= 0 else -1
    if end < 0:
        raise RuntimeError("Evidently's HTML has no inline data block where 0.7 writes it: cannot escape it")
    body = start + len(_DATA_BLOCK)
    return html[:body] + html[body:end].replace("<", "\\u003c") + html[end:]


def with_context(html: str, spec: DatasetSpec, result: MonitorResult) -> str:
    """Evidently's page with a title and a header saying what it is: dataset, window, champion version, the
    figures the retrain policy acts on against their limits, how Evidently's own headline and prediction-drift
    figure relate to them, and a link back to Model health (a new tab: the report is served sandboxed)."""
    import html as h

    m, lim = result.metrics, spec.monitoring

    def fig(key: str) -> str:
        v = m.get(key)
        return "–" if v is None else f"{v:.3f}"

    title = f"Drift report: {spec.name} {result.window_start}..{result.window_end}, champion v{result.model_version}"
    header = (
        '<div id="mlops-context" style="font-family:system-ui,sans-serif;margin:1rem 1.5rem;padding:.8rem 1rem;'
        'border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa;color:#1f2328">'
        f"<h1 style='font-size:1.3rem;margin:0 0 .4rem'>{h.escape(title)}</h1>"
        f"<p style='margin:.2rem 0'>{len(result.days)} validated days, scored by the champion "
        f"v{h.escape(str(result.model_version))}. The retrain policy acts on: prediction drift "
        f"<b>{fig('prediction_drift')}</b> (limit {lim.max_prediction_drift}), importance-weighted drift "
        f"<b>{fig('weighted_drift')}</b> (limit {lim.max_weighted_drift}), and on labelled rows ROC AUC "
        f"<b>{fig('roc_auc')}</b> / Brier <b>{fig('brier')}</b> against the champion at training.</p>"
        "<p style='margin:.2rem 0;font-size:.9rem;color:#656d76'>Evidently's headline below (the share of "
        f"drifted columns, here {fig('drift_share')}) is recorded but never triggers a retrain: a week of "
        "seasonal data always drifts against a quarter. Its prediction column drift is the Wasserstein distance "
        "divided by the reference's standard deviation (normed); the policy's prediction drift above is the "
        "same distance in probability units, so the two figures differ by that factor.</p>"
        f"<p style='margin:.2rem 0'><a href='/mlops/health/{h.escape(spec.name)}' target='_blank' "
        "rel='noopener'>Model health</a></p></div>"
    )
    html = re.sub(r"<title>.*?</title>", f"<title>{h.escape(title)}</title>", html, count=1, flags=re.S)
    at = html.find("<body>")
    return html[: at + 6] + header + html[at + 6 :] if at >= 0 else header + html


def save_reports(spec: DatasetSpec, lake: Lake, result: MonitorResult, *, html: str, evidently_json: str) -> None:
    """Evidently HTML and JSON under ``reports/drift/<dataset>/date=<day>/``; URIs kept in ``result.uris``."""
    base = report_dir(spec, result.end_day)
    result.uris = {
        "html": lake.write_bytes(f"{base}/drift.html", html.encode()),
        "evidently_json": lake.write_bytes(f"{base}/drift.json", evidently_json.encode()),
        "monitor_json": lake.uri(lake.path(*base.split("/"), "monitor.json")),
    }


def log_to_mlflow(
    spec: DatasetSpec,
    result: MonitorResult,
    html: str,
    *,
    tracking_uri: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """One run in ``<dataset>-monitoring``: numeric metrics, the Evidently HTML and monitor.json, tagged with
    the model version and window; returns its run id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = monitoring_experiment(spec)
    exp_id = ensure_experiment(client, name, artifact_location(uri, name))
    run_tags = {
        "dataset": spec.name,
        "model_version": str(result.model_version),
        "end_day": result.end_day,
        "window_start": result.window_start,
        "window_end": result.window_end,
        "importance_source": result.importance_source,
        "report_uri": result.uris.get("html", ""),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    # A re-run of the same day and model version updates its run instead of adding one (idempotent re-runs).
    same = client.search_runs(
        [exp_id],
        filter_string=f"tags.end_day = '{result.end_day}' and tags.model_version = '{result.model_version}'",
        max_results=1,
    )
    if same:
        run_id = same[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        for k, v in run_tags.items():
            client.set_tag(run_id, k, v)
    else:
        name = f"monitor-{result.end_day}-v{result.model_version}"
        run_id = client.create_run(exp_id, run_name=name, tags=run_tags).info.run_id
    now = int(time.time() * 1000)
    step = _as_date(result.end_day).toordinal()  # the monitored day: charts across runs follow the replay's clock
    numeric = {k: float(v) for k, v in result.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    shadow = result.metrics.get("shadow") or {}
    for k in ("roc_auc", "brier", "auc_gain", "brier_change", "window_roc_auc", "window_brier"):
        if isinstance(shadow.get(k), int | float):
            numeric[f"shadow_{k}"] = float(shadow[k])
    for col, info in result.columns.items():
        numeric[f"drift_{col}"] = float(info["score"])
    metrics = [Metric(k, v, now, step) for k, v in numeric.items() if not math.isnan(v)]
    client.log_batch(run_id, metrics=metrics)
    client.log_text(run_id, html, "evidently/drift.html")
    client.log_dict(run_id, result.as_dict(), "monitor.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def workspace_path(lake: Lake) -> str | None:
    """``<lake root>/evidently`` for a local lake (the Evidently workspace is a local folder); None otherwise."""
    from fsspec.implementations.local import LocalFileSystem

    return f"{lake.root}/evidently" if isinstance(lake.fs, LocalFileSystem) else None


def add_to_workspace(
    spec: DatasetSpec, lake: Lake, snapshot: Any, result: MonitorResult, *, workspace: str | None = None
) -> str | None:
    """Add the snapshot to project ``<dataset>`` of the Evidently workspace; returns the snapshot id (None when
    the lake is remote and no ``workspace`` is given: the HTML/JSON reports in the lake still exist)."""
    from evidently.ui.workspace import Workspace

    path = workspace or workspace_path(lake)
    if path is None:
        return None
    ws = Workspace.create(path)
    found = list(ws.search_project(spec.name))
    project = found[0] if found else ws.create_project(spec.name, description=f"Drift of the {spec.name} champion")
    name = f"{result.end_day} v{result.model_version}"
    try:  # a re-run of the day replaces the snapshot its earlier run added (recorded in the day's monitor.json)
        earlier = lake.read_json(f"{report_dir(spec, result.end_day)}/monitor.json")
    except FileNotFoundError:
        earlier = {}
    if earlier.get("evidently_run_id") and earlier.get("model_version") == result.model_version:
        with contextlib.suppress(Exception):  # already gone: nothing to replace
            ws.delete_run(project.id, earlier["evidently_run_id"])
    ref = ws.add_run(project.id, snapshot, include_data=False, name=name)
    return str(getattr(ref, "id", ref))


# -- decisions: history and records --------------------------------------------------------------------
def decision_history(spec: DatasetSpec, lake: Lake) -> list[dict[str, Any]]:
    """Every recorded decision of the dataset (``reports/drift/<dataset>/decisions/<day>.json``), by day."""
    base = lake.path(*decisions_dir(spec).split("/"))
    if not lake.fs.exists(base):
        return []
    out = []
    for path in sorted(lake.fs.glob(f"{base}/*.json")):
        with lake.fs.open(path, "rb") as f:
            out.append(json.load(f))
    return sorted(out, key=lambda d: d.get("day", ""))


def record_decision(
    spec: DatasetSpec,
    lake: Lake,
    decision: Decision,
    monitor: Mapping[str, Any],
    *,
    tracking_uri: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the decision (with its reasons and checks) to ``reports/drift/<dataset>/decisions/<day>.json`` and as
    ``decision.*`` tags on the monitoring run; returns the record."""
    record = {
        **decision.as_dict(),
        "dataset": spec.name,
        "model_version": monitor.get("model_version"),
        "window": [monitor.get("window_start"), monitor.get("window_end")],
        "monitor_uri": (monitor.get("uris") or {}).get("monitor_json"),
        "report_uri": (monitor.get("uris") or {}).get("html"),
        "mlflow_run_id": monitor.get("mlflow_run_id"),
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **dict(extra or {}),
    }
    record["uri"] = lake.write_json(f"{decisions_dir(spec)}/{decision.day}.json", record)
    run_id = monitor.get("mlflow_run_id")
    if run_id:
        from mlflow import MlflowClient

        uri = tracking_uri or default_tracking_uri()
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        tags = {
            "decision.retrain": str(decision.retrain).lower(),
            "decision.alert": str(decision.alert).lower(),
            "decision.triggers": ",".join(decision.triggers) or "none",
            "decision.blocked_by": decision.blocked_by or "none",
            "decision.reasons": " | ".join(decision.reasons)[:_MAX_TAG],
            "mlflow.note.content": "\n".join(decision.reasons)[:_MAX_TAG],
        }
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    return record


def decide_and_record(
    spec: DatasetSpec,
    lake: Lake,
    monitor: Mapping[str, Any],
    *,
    training_running: bool = False,
    tracking_uri: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The decide step: the policy over a monitoring result (``MonitorResult.as_dict()``) and the recorded
    history, recorded in the lake and on the MLflow run; returns the decision record."""
    history = decision_history(spec, lake)
    decision = decide(
        spec,
        monitor["metrics"],
        history,
        day=monitor["end_day"],
        training_running=training_running,
        champion=monitor.get("model_version"),
    )
    return record_decision(spec, lake, decision, monitor, tracking_uri=tracking_uri, extra=extra)
