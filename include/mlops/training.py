"""Training: a time split, one pipeline per candidate, a small seeded search, MLflow tracking and registration.

Models take raw feature rows (a DataFrame with the spec's feature columns): imputation, scaling and encoding
live inside the scikit-learn pipeline, so scoring needs nothing but :func:`features.build_features`.
Everything random is seeded, so the same feature table and seed give the same metrics.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from include.mlops.config import CandidateSpec, DatasetSpec, spec_hash
from include.mlops.features import feature_columns
from include.mlops.tracking import (  # MLflow access lives in tracking.py; these names stay importable here
    artifact_location,
    default_tracking_uri,
    ensure_experiment,
)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from include.mlops.storage import Lake

CHALLENGER = "challenger"
VERSION_TAGS = ("dataset", "feature_version", "spec_hash", "git_sha", "git_dirty", "trained_because", "retrain_of")
BASELINE_METRICS = ("test_roc_auc", "test_brier", "test_positive_rate")  # also version tags: the monitor's baseline
SELECTION_METRIC = "roc_auc"  # validation metric that picks the search trial and the best candidate
PERMUTATION_ROWS = 2000
PERMUTATION_REPEATS = 3
PREDICTION_COLUMN = "prediction"  # predicted probability of the positive class in the reference sample
_MAX_CATEGORIES = 250  # HistGradientBoosting needs fewer categories than max_bins (255)


def compute_threads() -> int:
    """OpenMP/BLAS threads for fitting and predicting: ``MLOPS_TRAIN_THREADS``, default 1.

    Measured on 2 cores: HistGradientBoosting on 50k rows fits in ~2 s with 1 or 2 threads when the machine
    is idle, but with 2 threads it takes 20-25 s as soon as other processes (Airflow, a second Celery task)
    compete for the cores, because OpenMP threads spin at barriers while a sibling is descheduled.
    """
    return max(1, int(os.environ.get("MLOPS_TRAIN_THREADS", "1")))


@contextmanager
def limited_threads() -> Iterator[None]:
    """Run the block with at most :func:`compute_threads` OpenMP/BLAS threads."""
    # threadpoolctl only limits runtimes already loaded: import the estimators (and their OpenMP) first.
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=compute_threads()):
        yield


class TrainingError(ValueError):
    """Training cannot proceed: too few days, a split with one class, an unknown candidate or parameter."""


# -- split ---------------------------------------------------------------------------------------------
def day_of(values: pd.Series) -> pd.Series:
    """The ISO day of each value of a time column (a date, or a datetime whose first 10 characters are its day)."""
    return values.astype(str).str.slice(0, 10)


def time_split(df: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split by date: the last ``test_days`` dates are test, the ``validation_days`` before validation."""
    col, t = spec.time.column, spec.training
    if col not in df.columns:
        raise TrainingError(f"feature table has no time column {col!r}")
    d = day_of(df[col])
    dates = np.sort(d.unique())
    needed = t.validation_days + t.test_days + 1
    if len(dates) < needed:
        raise TrainingError(
            f"the window has {len(dates)} dates; a split needs at least {needed} "
            f"(validation_days={t.validation_days} + test_days={t.test_days} + 1 training day)"
        )
    test_from, valid_from = dates[-t.test_days], dates[-(t.test_days + t.validation_days)]
    train = df[d < valid_from]
    valid = df[(d >= valid_from) & (d < test_from)]
    test = df[d >= test_from]
    return train, valid, test


# -- pipelines -----------------------------------------------------------------------------------------
def make_pipeline(
    candidate: CandidateSpec, spec: DatasetSpec, seed: int, params: dict[str, Any] | None = None
) -> Pipeline:
    """An unfitted Pipeline (preprocessing + estimator) taking a DataFrame of the spec's feature columns."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    cats, nums = spec.categorical_features, spec.numeric_features
    kwargs = {**candidate.params, **(params or {})}
    try:
        if candidate.estimator == "logistic_regression":
            prep = ColumnTransformer(
                [
                    (
                        "num",
                        Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                        nums,
                    ),
                    (
                        "cat",
                        Pipeline(
                            [
                                ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                                ("onehot", OneHotEncoder(handle_unknown="ignore")),
                            ]
                        ),
                        cats,
                    ),
                ],
                verbose_feature_names_out=False,
            )
            model = LogisticRegression(random_state=seed, **kwargs)
        else:
            # Ordinal codes first, so the categorical columns are the first len(cats) of the model input;
            # unseen or missing categories become NaN, which the trees treat as missing.
            prep = ColumnTransformer(
                [
                    (
                        "cat",
                        OrdinalEncoder(
                            handle_unknown="use_encoded_value",
                            unknown_value=np.nan,
                            encoded_missing_value=np.nan,
                            max_categories=_MAX_CATEGORIES,
                        ),
                        cats,
                    ),
                    ("num", "passthrough", nums),
                ],
                verbose_feature_names_out=False,
            )
            model = HistGradientBoostingClassifier(
                random_state=seed, categorical_features=list(range(len(cats))) or None, **kwargs
            )
    except TypeError as exc:
        raise TrainingError(f"candidate {candidate.name!r}: bad parameter for {candidate.estimator}: {exc}") from exc
    return Pipeline([("prep", prep), ("model", model)])


# -- metrics -------------------------------------------------------------------------------------------
def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold that maximises F1 on (y, p)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, p)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    return float(thresholds[int(np.argmax(f1))]) if len(thresholds) else 0.5


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier, F1/precision/recall at ``threshold``, rows and base rate."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    pred = (p >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "rows": float(len(y)),
        "positive_rate": float(np.mean(y)),
    }


# -- search (no MLflow) --------------------------------------------------------------------------------
@dataclass
class CandidateResult:
    """The best trial of one candidate: its fitted pipeline, params, threshold and metrics."""

    name: str
    estimator: str
    params: dict[str, Any]
    threshold: float
    valid: dict[str, float]
    test: dict[str, float]
    trials: list[dict[str, Any]]
    seconds: float
    pipeline: Any = field(repr=False, default=None)

    def summary(self) -> dict[str, Any]:
        """Everything but the fitted pipeline (JSON-serialisable)."""
        return {k: v for k, v in asdict(self).items() if k != "pipeline"}


@dataclass
class SearchResult:
    """All candidates fitted on one split; ``best`` is the name with the highest validation ROC AUC."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    candidates: dict[str, CandidateResult]
    best: str


def fit_rows(spec: DatasetSpec, train: pd.DataFrame) -> pd.DataFrame:
    """The training rows the candidates are fitted on: all of them, or a seeded random sample (in row order) of
    ``training.max_fit_rows`` when there are more. A fit holds about four float64 copies of its input (the
    encoded matrix, HistGradientBoosting's own categorical coding, its train/early-stopping split): ~0.7 kB a
    row, 7 GB at 10 M rows. A daily window is far below the limit; a bulk retrain over years is not."""
    limit = spec.training.max_fit_rows
    if len(train) <= limit:
        return train
    return train.sample(n=limit, random_state=spec.training.seed).sort_index()


def _xy(df: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, np.ndarray]:
    return df[spec.feature_names], df[spec.label.name].to_numpy().astype(int)


def _pick_candidates(spec: DatasetSpec, names: Sequence[str] | None) -> list[CandidateSpec]:
    known = {c.name: c for c in spec.training.candidates}
    if not names:
        return list(known.values())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TrainingError(f"unknown candidates {unknown}; the spec declares {sorted(known)}")
    return [known[n] for n in names]


def _trials(candidate: CandidateSpec, iterations: int, seed: int) -> list[dict[str, Any]]:
    from sklearn.model_selection import ParameterSampler

    space = candidate.search_space
    if not space:
        return [{}]
    size = int(np.prod([len(v) for v in space.values()]))
    # Never ask for more samples than the grid holds (ParameterSampler would warn and return the grid).
    return list(ParameterSampler(space, n_iter=min(iterations, size), random_state=seed))


def search_candidates(
    spec: DatasetSpec,
    features_df: pd.DataFrame,
    *,
    seed: int | None = None,
    search_iterations: int | None = None,
    candidates: Sequence[str] | None = None,
) -> SearchResult:
    """Fit every candidate's sampled parameters on train, keep the best on validation, score it on test."""
    with limited_threads():
        return _search(spec, features_df, seed, search_iterations, candidates)


def _search(
    spec: DatasetSpec,
    features_df: pd.DataFrame,
    seed: int | None,
    search_iterations: int | None,
    candidates: Sequence[str] | None,
) -> SearchResult:
    from sklearn.metrics import roc_auc_score

    seed = spec.training.seed if seed is None else seed
    iterations = search_iterations or spec.training.search_iterations
    chosen = _pick_candidates(spec, candidates)
    missing = [c for c in feature_columns(spec) if c not in features_df.columns]
    if missing:
        raise TrainingError(f"feature table lacks columns {missing}")
    labelled = features_df[features_df[spec.label.name].notna()]
    train, valid, test = time_split(labelled, spec)
    for name, part in (("train", train), ("validation", valid), ("test", test)):
        if part[spec.label.name].nunique() < 2:
            raise TrainingError(f"the {name} split has a single class; widen the window")
    x_train, y_train = _xy(fit_rows(spec, train), spec)
    x_valid, y_valid = _xy(valid, spec)
    x_test, y_test = _xy(test, spec)

    results: dict[str, CandidateResult] = {}
    for cand in chosen:
        t0 = time.perf_counter()
        best_score, best_pipe, best_params, trials = -np.inf, None, {}, []
        for i, params in enumerate(_trials(cand, iterations, seed)):
            pipe = make_pipeline(cand, spec, seed, params)
            try:
                pipe.fit(x_train, y_train)
            except (TypeError, ValueError) as exc:
                raise TrainingError(f"candidate {cand.name!r} with {params}: {exc}") from exc
            score = float(roc_auc_score(y_valid, pipe.predict_proba(x_valid)[:, 1]))
            trials.append({"trial": i, "params": params, f"valid_{SELECTION_METRIC}": score})
            if score > best_score:
                best_score, best_pipe, best_params = score, pipe, params
        p_valid = best_pipe.predict_proba(x_valid)[:, 1]
        threshold = choose_threshold(y_valid, p_valid)
        results[cand.name] = CandidateResult(
            name=cand.name,
            estimator=cand.estimator,
            params={**cand.params, **best_params},
            threshold=threshold,
            valid=binary_metrics(y_valid, p_valid, threshold),
            test=binary_metrics(y_test, best_pipe.predict_proba(x_test)[:, 1], threshold),
            trials=trials,
            seconds=round(time.perf_counter() - t0, 2),
            pipeline=best_pipe,
        )
    # Ties go to the candidate declared first in the spec.
    best = max(results, key=lambda n: results[n].valid[SELECTION_METRIC])
    return SearchResult(train, valid, test, results, best)


# -- MLflow --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced; JSON-serialisable via :meth:`as_dict` (for XCom)."""

    dataset: str
    experiment_id: str
    parent_run_id: str
    candidate_runs: dict[str, str]
    best_candidate: str
    model_name: str
    model_version: str
    model_uri: str
    alias: str
    threshold: float
    metrics: dict[str, float]
    candidates: dict[str, dict[str, float]]
    feature_version: str
    spec_hash: str
    git_sha: str
    split: dict[str, dict[str, Any]]
    reference_uri: str
    feature_importance: dict[str, float]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """A plain dict for XCom."""
        return asdict(self)


def git_sha() -> str:
    """The repository's HEAD commit (``MLOPS_GIT_SHA`` wins), or 'unknown' outside a git checkout."""
    if os.environ.get("MLOPS_GIT_SHA"):
        return os.environ["MLOPS_GIT_SHA"]
    # Read .git directly: no git binary needed on workers, no subprocess in a task.
    repo = Path(__file__).resolve().parents[2]
    try:
        git = repo / ".git"
        if git.is_file():  # a worktree: ".git" names the real git dir
            git = (repo / git.read_text().split(":", 1)[1].strip()).resolve()
        common = (git / (git / "commondir").read_text().strip()).resolve() if (git / "commondir").exists() else git
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.removeprefix("ref:").strip()
        for base in (git, common):
            if (base / ref).exists():
                return (base / ref).read_text().strip()
        packed = common / "packed-refs"
        if packed.exists():
            for line in packed.read_text().splitlines():
                if line.endswith(f" {ref}"):
                    return line.split()[0]
    except (OSError, IndexError):
        pass
    return "unknown"


def _data_digest(df: pd.DataFrame) -> str:
    import hashlib

    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()[:20]


def _split_info(df: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    d = day_of(df[spec.time.column])
    return {"rows": len(df), "start": d.min(), "end": d.max(), "positive_rate": float(df[spec.label.name].mean())}


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def permutation_importance(
    pipe: Any,
    x: pd.DataFrame,
    y: np.ndarray,
    *,
    seed: int,
    rows: int = PERMUTATION_ROWS,
    repeats: int = PERMUTATION_REPEATS,
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and std drop in ROC AUC when each feature is shuffled, on a seeded sample of ``rows`` rows."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(x), size=min(rows, len(x)), replace=False))
    sample, y_s = x.iloc[take].reset_index(drop=True), y[take]
    base = roc_auc_score(y_s, pipe.predict_proba(sample)[:, 1])
    # One predict over all shuffled copies: tree ensembles pay a per-call cost far above the per-row cost.
    copies = []
    for col in x.columns:
        for _ in range(repeats):
            c = sample.copy()
            c[col] = sample[col].to_numpy()[rng.permutation(len(sample))]
            copies.append(c)
    p = pipe.predict_proba(pd.concat(copies, ignore_index=True))[:, 1].reshape(len(copies), len(sample))
    drops = np.array([base - roc_auc_score(y_s, row) for row in p]).reshape(len(x.columns), repeats)
    cols = list(x.columns)
    return (
        {c: float(v) for c, v in zip(cols, drops.mean(axis=1), strict=True)},
        {c: float(v) for c, v in zip(cols, drops.std(axis=1), strict=True)},
    )


def _log_plots(pipe: Any, spec: DatasetSpec, test: pd.DataFrame, threshold: float, seed: int) -> dict[str, float]:
    """ROC, PR, calibration, confusion matrix and permutation importance on the test split; returns importances."""
    import mlflow
    from matplotlib.figure import Figure
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    # Figure() objects need no pyplot and no GUI backend: safe in workers and threads.
    x, y = _xy(test, spec)
    p = pipe.predict_proba(x)[:, 1]
    plots = {
        "roc": lambda ax: RocCurveDisplay.from_predictions(y, p, ax=ax),
        "pr": lambda ax: PrecisionRecallDisplay.from_predictions(y, p, ax=ax),
        "calibration": lambda ax: CalibrationDisplay.from_predictions(y, p, n_bins=10, ax=ax),
        "confusion_matrix": lambda ax: ConfusionMatrixDisplay.from_predictions(y, (p >= threshold).astype(int), ax=ax),
    }
    for name, draw in plots.items():
        fig = Figure(figsize=(5, 4), dpi=100)
        ax = fig.subplots()
        draw(ax)
        ax.set_title(f"{spec.name}: {name.replace('_', ' ')} (test)")
        fig.tight_layout()
        mlflow.log_figure(fig, f"plots/{name}.png")

    importance, spread = permutation_importance(pipe, x, y, seed=seed)
    order = sorted(importance, key=importance.get)
    fig = Figure(figsize=(6, 0.3 * len(order) + 1), dpi=100)
    ax = fig.subplots()
    ax.barh(order, [importance[f] for f in order], xerr=[spread[f] for f in order])
    ax.set_xlabel("mean drop in ROC AUC when permuted")
    ax.set_title(f"{spec.name}: permutation importance (test sample)")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/permutation_importance.png")
    mlflow.log_dict(importance, "feature_importance.json")
    return importance


# Model files are skops, not pickle: loading runs no code the file names, only the types below besides skops' own
# defaults (scikit-learn estimators, numpy/scipy containers). The list is ours, in code: scoring.load_model_dir
# passes it to skops itself and never reads the list an MLmodel file carries (MLflow would trust that one, so a
# crafted model could whitelist anything). A pipeline needing another type fails at log_model, where MLflow
# re-loads the file with this list: add the type here only after reading what it can do when loaded.
SKOPS_TRUSTED_TYPES = (
    "functools.partial",  # HistGradientBoosting's validation callable; its func and args are checked separately
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
)


def reference_sample(spec: DatasetSpec, train: pd.DataFrame, pipeline: Any, seed: int) -> pd.DataFrame:
    """The drift reference of a model: a seeded sample of its training rows (feature columns and label, in row
    order) with the model's predicted probability in ``PREDICTION_COLUMN``."""
    ref = train.sample(n=min(spec.training.reference_sample_rows, len(train)), random_state=seed)
    ref = ref.sort_index()[feature_columns(spec)].copy()
    ref[PREDICTION_COLUMN] = pipeline.predict_proba(ref[spec.feature_names])[:, 1]
    return ref


def _pip_requirements(serialization: str) -> list[str]:
    # Explicit requirements: MLflow's inference would re-load the model in a subprocess (seconds per run).
    from importlib.metadata import version

    pkgs = ["mlflow", "scikit-learn", "pandas", "numpy", "scipy", serialization]
    return [f"{p}=={version(p)}" for p in pkgs]


def train_candidates(
    spec: DatasetSpec,
    features_df: pd.DataFrame,
    *,
    seed: int | None = None,
    search_iterations: int | None = None,
    candidates: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    tags: dict[str, str] | None = None,
    artifact_root: str | None = None,
    feature_version: str | None = None,
    feature_uri: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    trigger: Mapping[str, Any] | None = None,
    retrain_of: str | None = None,
) -> TrainingResult:
    """Search every candidate under one MLflow parent run (a nested run each), register the best model as a
    new version of ``spec.name`` with alias ``challenger``; returns ids, metrics and the chosen threshold.

    ``feature_version`` / ``feature_uri`` default to ``features_df.attrs`` (set by ``read_feature_table``),
    else to a hash of the frame's content. Lineage (``lineage/lineage.json`` and ``lineage/spec.yaml`` on the
    run, see :mod:`include.mlops.lineage`): ``inputs`` = :func:`features.feature_inputs` of the table (its
    validated partitions and their sha256), ``trigger`` = :func:`lineage.trigger` (why this run happened),
    ``retrain_of`` = the version whose recorded inputs this run repeats.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from include.mlops import lineage, tracking

    t0 = time.perf_counter()
    seed = spec.training.seed if seed is None else seed
    iterations = search_iterations or spec.training.search_iterations
    feature_version = feature_version or features_df.attrs.get("feature_version") or _data_digest(features_df)
    feature_uri = feature_uri or features_df.attrs.get("feature_uri")
    tracking_uri = tracking_uri or default_tracking_uri()
    experiment = experiment or spec.name
    s_hash, sha = spec_hash(spec), git_sha()

    search = search_candidates(spec, features_df, seed=seed, search_iterations=iterations, candidates=candidates)
    best = search.candidates[search.best]
    parts = {"train": search.train, "valid": search.valid, "test": search.test}
    split = {n: _split_info(d, spec) for n, d in parts.items()}

    client = tracking.client(tracking_uri)
    exp_id = ensure_experiment(client, experiment, artifact_location(tracking_uri, experiment, artifact_root))
    window = f"{split['train']['start']}..{split['test']['end']}"
    run_tags = {
        "dataset": spec.name,
        "feature_version": feature_version,
        "spec_hash": s_hash,
        "git_sha": sha,
        "mlflow.source.git.commit": sha,
        "trained_because": lineage.trigger_summary(trigger)[:250],
        **({"retrain_of": str(retrain_of)} if retrain_of else {}),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    record = lineage.training_record(
        spec,
        inputs=inputs,
        trigger_=trigger,
        feature_version=feature_version,
        feature_uri=feature_uri,
        split=split,
        params={
            "seed": seed,
            "search_iterations": iterations,
            "selection_metric": SELECTION_METRIC,
            "max_fit_rows": spec.training.max_fit_rows,
        },
        candidates=list(search.candidates),
        git_sha=sha,
        spec_hash=s_hash,
        retrain_of=retrain_of,
    )
    run_tags["git_dirty"] = str(record["code"]["git_dirty"]).lower()
    candidate_runs: dict[str, str] = {}
    with (
        warnings.catch_warnings(),
        tracking.using(tracking_uri),  # the fluent API below, without leaving the URI set for the process
        tracking.mlflow_output_as_info(),
        mlflow.start_run(experiment_id=exp_id, run_name=f"train {window}", tags=run_tags) as parent,
    ):
        mlflow.log_dict(record, lineage.LINEAGE_ARTIFACT)
        mlflow.log_text(lineage.spec_text(spec), lineage.SPEC_ARTIFACT)
        # MLflow hints that int columns cannot hold NaN; build_features guarantees int features have none.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        dataset = mlflow.data.from_pandas(
            features_df,
            source=feature_uri,
            targets=spec.label.name,
            name=f"{spec.name}-features",
            digest=feature_version,
        )
        mlflow.log_input(dataset, context="training")
        mlflow.log_params(
            {
                "seed": seed,
                "search_iterations": iterations,
                "selection_metric": SELECTION_METRIC,
                "candidates": ",".join(search.candidates),
                "features": ",".join(spec.feature_names),
                "fit_rows": min(len(search.train), spec.training.max_fit_rows),
                **{f"{n}_{k}": v for n, info in split.items() for k, v in info.items() if k != "positive_rate"},
            }
        )
        for name, res in search.candidates.items():
            # experiment_id again: a nested run otherwise lands in the process's active (Default) experiment.
            child_tags = {**run_tags, "candidate": name}
            with mlflow.start_run(experiment_id=exp_id, run_name=name, nested=True, tags=child_tags) as child:
                candidate_runs[name] = child.info.run_id
                mlflow.log_input(dataset, context="training")
                mlflow.log_params({"candidate": name, "estimator": res.estimator, "threshold": res.threshold})
                mlflow.log_params(res.params)
                key = f"valid_{SELECTION_METRIC}"
                for trial in res.trials:
                    mlflow.log_metric(f"search_{key}", trial[key], step=trial["trial"])
                mlflow.log_metrics({**_prefixed("valid", res.valid), **_prefixed("test", res.test)})
                mlflow.log_metric("fit_seconds", res.seconds)
                mlflow.log_dict({"trials": res.trials}, "search_trials.json")

        metrics = {**_prefixed("valid", best.valid), **_prefixed("test", best.test)}
        mlflow.log_params({"best_candidate": best.name, "threshold": best.threshold})
        mlflow.log_metrics(metrics)
        mlflow.set_tag("best_candidate", best.name)
        with limited_threads():
            importance = _log_plots(best.pipeline, spec, search.test, best.threshold, seed)

        x_train = search.train[spec.feature_names]
        ref = reference_sample(spec, search.train, best.pipeline, seed)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "reference.parquet"
            ref.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path="reference")
        reference_uri = f"runs:/{parent.info.run_id}/reference/reference.parquet"

        signature = infer_signature(x_train.head(200), best.pipeline.predict_proba(x_train.head(200)))
        info = mlflow.sklearn.log_model(
            best.pipeline,
            name="model",
            signature=signature,
            input_example=x_train.head(5),
            registered_model_name=spec.name,
            serialization_format="skops",
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            pip_requirements=_pip_requirements("skops"),
            pyfunc_predict_fn="predict_proba",
        )
        version = str(info.registered_model_version)

    found = search.candidates
    # A short set on the version: what to filter and act on. Metrics live on the run (as metrics), lineage in
    # its lineage.json; the two test metrics the monitor compares against stay as tags (its baseline).
    version_tags = {
        **{k: v for k, v in run_tags.items() if k in VERSION_TAGS or k.startswith(("airflow.", "window_"))},
        "candidate": best.name,
        "threshold": f"{best.threshold:.6f}",
        "reference_uri": reference_uri,
        **{k: f"{metrics[k]:.6f}" for k in BASELINE_METRICS},
    }
    for k, v in version_tags.items():
        client.set_model_version_tag(spec.name, version, k, v)
    client.set_registered_model_alias(spec.name, CHALLENGER, version)
    client.set_tag(parent.info.run_id, "mlflow.runName", f"train {window} -> v{version} {best.name} (challenger)")
    lineage.log_model_card(spec, version, tracking_uri)

    return TrainingResult(
        dataset=spec.name,
        experiment_id=exp_id,
        parent_run_id=parent.info.run_id,
        candidate_runs=candidate_runs,
        best_candidate=best.name,
        model_name=spec.name,
        model_version=version,
        model_uri=f"models:/{spec.name}/{version}",
        alias=CHALLENGER,
        threshold=best.threshold,
        metrics=metrics,
        candidates={n: {**_prefixed("valid", r.valid), **_prefixed("test", r.test)} for n, r in found.items()},
        feature_version=feature_version,
        spec_hash=s_hash,
        git_sha=sha,
        split=split,
        reference_uri=reference_uri,
        feature_importance=importance,
        seconds=round(time.perf_counter() - t0, 2),
    )


# -- planning: which window to train on, and whether a scheduled run is due ----------------------------------
def last_trained_window_end(spec: DatasetSpec, tracking_uri: str | None = None) -> date | None:
    """The latest ``window_end`` tagged on any registered version of ``spec.name`` (None before the first)."""
    from include.mlops import tracking

    client = tracking.client(tracking_uri)
    ends = []
    for v in client.search_model_versions(f"name='{spec.name}'"):
        end = (v.tags or {}).get("window_end")
        if end:
            ends.append(date.fromisoformat(end))
    return max(ends) if ends else None


def fresh_retrain_request(
    requests: Iterable[Mapping[str, Any] | None], last_end: date | None
) -> Mapping[str, Any] | None:
    """The latest of the monitor's retrain requests (Asset event extras ``{"day", "triggers", "decision_uri"}``)
    that is fresh, or None. A request is stale when its ``day`` is not after ``last_end``, the window end of the
    last registered version: that training already covered the day it complained about (the scheduler replaying
    old Asset events, e.g. after ``make demo``, must not train again). A request without a day counts as fresh
    (nothing says it was answered)."""
    fresh = []
    for r in requests:
        r = r or {}
        if r.get("shadow_version"):
            continue  # a shadow proposing its promotion (:func:`shadow_proposal`), not a request to train
        day = r.get("day")
        if day and last_end is not None and date.fromisoformat(str(day)[:10]) <= last_end:
            continue
        fresh.append(r)
    return fresh[-1] if fresh else None


def shadow_proposal(events: Iterable[Mapping[str, Any] | None], shadow: str | None) -> Mapping[str, Any] | None:
    """The latest ``retrain`` Asset event in which the monitor proposed promoting the shadow
    (``{"shadow_version", "window", "day", ...}``), if that version is still the shadow (``shadow``, the alias's
    version now); None otherwise: a proposal of a version that was promoted, replaced or cleared since is stale."""
    proposals = [e for e in events if e and e.get("shadow_version")]
    if not proposals or shadow is None or str(proposals[-1]["shadow_version"]) != str(shadow):
        return None
    return proposals[-1]


def retrain_request_reason(requests: Iterable[Mapping[str, Any] | None], last_end: date | None) -> str | None:
    """The reason to train now from the monitor's retrain requests, or None when none is fresh
    (:func:`fresh_retrain_request`)."""
    r = fresh_retrain_request(requests, last_end)
    if r is None:
        return None
    on = f" on {r['day']}" if r.get("day") else ""
    return f"retrain requested by the monitor{on}: {', '.join(r.get('triggers') or []) or 'no trigger named'}"


def plan_training(
    spec: DatasetSpec,
    lake: Lake,
    *,
    window_end: date | str | None = None,
    window_days: int | None = None,
    force: bool | str = False,
    last_end: date | None = None,
) -> dict[str, Any]:
    """Decide the training window (the ``window_days`` validated days ending at ``window_end``, default the
    latest validated day) and whether training is due: forced (``force`` may be the reason, e.g. a monitor's
    retrain request), never trained, or at least ``cadence_days`` new validated days since the last trained
    window. Returns a JSON-serialisable plan."""
    days = sorted(date.fromisoformat(p.split("=", 1)[1]) for p in lake.partitions("validated", spec.name))
    if not days:
        return {"due": False, "reason": "no validated partitions yet"}
    end = date.fromisoformat(str(window_end)[:10]) if window_end else days[-1]
    n = window_days or spec.training.window_days
    start = end - timedelta(days=n - 1)
    have = [d for d in days if start <= d <= end]
    needed = spec.training.validation_days + spec.training.test_days + 1
    plan = {"start": start.isoformat(), "end": end.isoformat(), "validated_days": len(have), "window_days": n}
    if len(have) < needed:
        return plan | {"due": False, "reason": f"only {len(have)} validated days in {start}..{end}; need {needed}"}
    if force:
        return plan | {"due": True, "reason": force if isinstance(force, str) else "manual run"}
    if last_end is None:
        return plan | {"due": True, "reason": "no model trained yet"}
    new_days = len([d for d in days if d > last_end])
    if new_days >= spec.training.cadence_days:
        return plan | {"due": True, "reason": f"{new_days} new validated days since {last_end}"}
    return plan | {
        "due": False,
        "reason": f"{new_days} new validated days since {last_end}; cadence is {spec.training.cadence_days}",
    }
