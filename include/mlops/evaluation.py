"""Evaluation: the gate as a pure function over metrics, and the thin step that gathers those metrics.

The gate (TFX Evaluator style) combines value thresholds (``min_roc_auc``, ``max_brier``), change thresholds
against the champion (``max_roc_auc_drop``, ``max_brier_rise``: skipped, not failed, when there is no
champion), a slice-gap check per slice column and policy checks (signature, forbidden features, size,
latency). :func:`evaluate_gate` does no I/O: it turns two :class:`ModelEvidence` into a :class:`GateReport`
that names every check with its value, threshold and verdict. :func:`collect_evidence` scores a model on a
window, and :func:`evaluate_challenger` wires window → evidence → gate → report files and MLflow tags.

Challenger and champion are always scored on the SAME rows (:func:`evaluation_window`), by the same code, so
their metrics and latencies are comparable.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
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
LATENCY_ROWS = 1000
LATENCY_REPEATS = 20


class EvaluationError(ValueError):
    """Evidence cannot be collected: an empty or one-class window, a model missing feature columns."""


# -- results -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One gate check: what was measured, against which threshold, and the verdict."""

    name: str
    value: float | str | None
    threshold: float | str | None
    verdict: Verdict
    detail: str = ""


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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

    @property
    def decision(self) -> str:
        return "passed" if self.passed else "rejected"

    @property
    def failed(self) -> list[str]:
        """Names of the failed checks (the rejection reasons)."""
        return [c.name for c in self.checks if c.verdict == FAIL]

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
        """A Markdown summary: verdict, checks, metrics and slices."""
        banner = "PASSED" if self.passed else f"REJECTED ({', '.join(self.failed)})"
        lines = [
            f"# Gate report: {self.dataset} v{self.challenger_version}",
            "",
            f"**Decision: {banner}**",
            "",
            f"- challenger: v{self.challenger_version}",
            f"- champion: {'v' + self.champion_version if self.champion_version else 'none (first model)'}",
            f"- window: {_window_text(self.window)}",
            f"- decided at: {self.decided_at}",
            "",
            "## Checks",
            "",
            "| check | value | threshold | verdict | detail |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {c.name} | {_fmt(c.value)} | {_fmt(c.threshold)} | {c.verdict.upper()} | {_md(c.detail)} |"
            for c in self.checks
        ]
        lines += ["", "## Metrics on the window", "", "| metric | challenger | champion |", "|---|---|---|"]
        for k in _metric_keys(self.challenger_metrics, self.champion_metrics):
            champ = (self.champion_metrics or {}).get(k)
            lines.append(f"| {k} | {_fmt(self.challenger_metrics.get(k))} | {_fmt(champ)} |")
        if self.slices:
            lines += ["", "## Slices", "", "| column | value | rows | challenger AUC | champion AUC | gated |"]
            lines.append("|---|---|---|---|---|---|")
            for row in _slice_rows(self.slices):
                lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """A self-contained HTML page: verdict banner, checks table, metrics and slice tables."""
        e = html.escape
        colour = "#1b7f3b" if self.passed else "#b3261e"
        banner = "PASSED" if self.passed else "REJECTED: " + ", ".join(self.failed)
        verdict_style = {PASS: "color:#1b7f3b", FAIL: "color:#b3261e;font-weight:bold", SKIP: "color:#777"}
        checks = "".join(
            f"<tr><td>{e(c.name)}</td><td>{e(_fmt(c.value))}</td><td>{e(_fmt(c.threshold))}</td>"
            f'<td style="{verdict_style[c.verdict]}">{c.verdict.upper()}</td><td>{e(c.detail)}</td></tr>'
            for c in self.checks
        )
        metrics = "".join(
            f"<tr><td>{e(k)}</td><td>{e(_fmt(self.challenger_metrics.get(k)))}</td>"
            f"<td>{e(_fmt((self.champion_metrics or {}).get(k)))}</td></tr>"
            for k in _metric_keys(self.challenger_metrics, self.champion_metrics)
        )
        slices = "".join(
            "<tr>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in row) + "</tr>" for row in _slice_rows(self.slices)
        )
        champion = f"v{e(self.champion_version)}" if self.champion_version else "none (first model)"
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Gate report: {e(self.dataset)} v{e(str(self.challenger_version))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
.banner {{ background: {colour}; color: white; padding: 1rem 1.5rem; font-size: 1.4rem; border-radius: 6px; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .7rem; text-align: left; }}
th {{ background: #f3f3f3; }}
</style></head><body>
<h1>Gate report: {e(self.dataset)} v{e(str(self.challenger_version))}</h1>
<div class="banner">{e(banner)}</div>
<p>Challenger v{e(str(self.challenger_version))} &middot; champion {champion} &middot;
window {e(_window_text(self.window))} &middot; decided at {e(self.decided_at)}</p>
<h2>Checks</h2>
<table><tr><th>check</th><th>value</th><th>threshold</th><th>verdict</th><th>detail</th></tr>{checks}</table>
<h2>Metrics on the window</h2>
<table><tr><th>metric</th><th>challenger</th><th>champion</th></tr>{metrics}</table>
<h2>Slices</h2>
<table><tr><th>column</th><th>value</th><th>rows</th><th>challenger AUC</th><th>champion AUC</th><th>gated</th></tr>
{slices}</table>
</body></html>
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _window_text(window: dict[str, Any]) -> str:
    if not window:
        return "-"
    rows = f", {window['rows']} rows" if "rows" in window else ""
    return f"{window.get('start', '?')} .. {window.get('end', '?')}{rows}"


def _metric_keys(a: dict[str, float], b: dict[str, float] | None) -> list[str]:
    return list(dict.fromkeys([*a, *(b or {})]))


def _slice_rows(slices: dict[str, dict[str, dict[str, Any]]]) -> list[list[Any]]:
    return [
        [col, value, s.get("rows"), s.get("roc_auc"), s.get("champion_roc_auc"), s.get("gated")]
        for col, values in slices.items()
        for value, s in values.items()
    ]


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


def evaluate_gate(
    spec: DatasetSpec,
    challenger: ModelEvidence,
    champion: ModelEvidence | None,
    *,
    window: dict[str, Any] | None = None,
    decided_at: str | None = None,
) -> GateReport:
    """Decide whether ``challenger`` may replace ``champion`` (None: there is no champion yet).

    Pure: no I/O. Checks: absolute (``min_roc_auc``, ``max_brier``), non-regression against the champion
    (``max_roc_auc_drop``, ``max_brier_rise``; verdict 'skip' without a champion), ``max_slice_gap[<col>]``
    per slice column, and policy (``signature_present``, ``no_forbidden_features``, ``max_model_mb``,
    ``max_latency_ms_per_1k``). The report passes when no check fails.
    """
    g = spec.gate
    checks: list[Check] = []

    auc = _num(challenger.metrics, "roc_auc")
    if auc is None:
        checks.append(Check("min_roc_auc", None, g.min_roc_auc, FAIL, "ROC AUC was not measured"))
    else:
        ok = auc >= g.min_roc_auc
        detail = f"ROC AUC {auc:.4f} {'>=' if ok else '<'} {g.min_roc_auc}"
        checks.append(Check("min_roc_auc", auc, g.min_roc_auc, PASS if ok else FAIL, detail))
    brier = _num(challenger.metrics, "brier")
    checks.append(_at_most("max_brier", brier, g.max_brier, "Brier score"))

    # Non-regression (change thresholds): TFX skips them when there is no baseline.
    if champion is None:
        checks.append(Check("max_roc_auc_drop", None, g.max_roc_auc_drop, SKIP, "no champion: nothing to regress"))
    else:
        c_auc = _num(champion.metrics, "roc_auc")
        if auc is None or c_auc is None:
            checks.append(Check("max_roc_auc_drop", None, g.max_roc_auc_drop, FAIL, "ROC AUC missing for a model"))
        else:
            drop = c_auc - auc
            ok = drop <= g.max_roc_auc_drop
            detail = f"champion v{champion.version} {c_auc:.4f} -> challenger {auc:.4f} (drop {drop:+.4f})"
            checks.append(Check("max_roc_auc_drop", drop, g.max_roc_auc_drop, PASS if ok else FAIL, detail))
    if g.max_brier_rise is not None:
        if champion is None:
            checks.append(Check("max_brier_rise", None, g.max_brier_rise, SKIP, "no champion: nothing to regress"))
        else:
            c_brier = _num(champion.metrics, "brier")
            rise = None if brier is None or c_brier is None else brier - c_brier
            checks.append(_at_most("max_brier_rise", rise, g.max_brier_rise, "Brier rise over the champion"))

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
    )


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
    return ModelEvidence(
        metrics=binary_metrics(y, p, threshold),
        slices=slice_metrics(df, y, p, spec.gate.slice_columns),
        features=features,
        signature=signature,
        size_mb=round(size_mb, 4),
        latency_ms_per_1k=round(latency, 3),
        version=version,
        model_uri=model_uri,
        threshold=threshold,
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
    tracking_uri: str | None = None,
) -> GateReport:
    """The gate step: score the challenger (default: alias ``challenger``) and the champion on the same window,
    decide, save the report to the lake and log it to MLflow. The window is the challenger's training test
    split, or the last ``test_days`` validated days up to ``end`` when ``end`` is given."""
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
        window = evaluation_window(spec, lake, end)
    ev_challenger = collect_evidence(spec, f"models:/{spec.name}/{version}", window.frame, tracking_uri=uri)
    ev_champion = (
        collect_evidence(spec, f"models:/{spec.name}/{champion}", window.frame, tracking_uri=uri) if champion else None
    )
    report = evaluate_gate(spec, ev_challenger, ev_champion, window=window.describe())
    save_report(report, lake, key=client.get_model_version(spec.name, version).run_id[:8])
    log_report(report, uri, spec=spec)
    return report
