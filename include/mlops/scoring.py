"""Batch scoring: the champion's delay probability for every flight of a validated day, written to the lake.

Features come from :func:`features.features_for_dates`, the code that built the training table, so a flight is
scored on exactly the values training would have computed for it (point-in-time delay rates included): there
is no second feature implementation to drift out of step. Every flight of the day is scored, cancelled ones
included, because at scoring time nobody knows which flights will be cancelled.

``predictions/<dataset>/date=…`` holds the entity keys, ``probability``, ``prediction`` (0/1 at the version's
``threshold`` tag), ``model_version`` and ``role`` (``champion``). Labels are deliberately *not* stored: in
production a day is scored before its flights land, so a label column would be empty or, in the 2013 replay, a
leak of the future. The monitor joins outcomes later from the validated zone on the entity keys, which also
picks up late or corrected labels without rewriting what was served. A partition is the record of what the
model said, and nothing else.

The shadow (``registry.SHADOW``: a newer version, rejected or awaiting approval) scores the same feature rows beside
the champion into ``shadow/<dataset>/version=<v>/date=…`` (same columns, ``role`` = ``shadow``), so the monitor can
compare the two on the same flights once labels arrive. The feature frame is built once for both; a shadow that
cannot be scored costs its own partition, never the champion's (the summary says why).

The loaded model is cached per process by (tracking URI, model, version): a worker scoring day after day
loads the champion once and again only when the alias moves.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from include.mlops.config import DatasetSpec
from include.mlops.training import SKOPS_TRUSTED_TYPES, compute_threads, default_tracking_uri

if TYPE_CHECKING:
    from include.mlops.storage import Lake, PartitionManifest

CHAMPION = "champion"
PREDICTIONS_TABLE = "predictions"
PROBABILITY = "probability"
PREDICTION = "prediction"
MODEL_VERSION = "model_version"
ROLE = "role"  # who made a prediction: CHAMPION (served, predictions/) or SHADOW (shadow/, never served)
SHADOW = "shadow"  # the role, the registry alias and the lake zone
DEFAULT_THRESHOLD = 0.5
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # what MLflow answers for a missing alias/version

_MODELS: dict[tuple[str, str], Any] = {}  # (tracking URI, resolved model URI) -> (model, feature names)


class ScoringError(RuntimeError):
    """Scoring cannot proceed: no validated data for the day, an unknown model version or URI."""


class UnsafeModelError(ScoringError):
    """A model file this process will not deserialize: pickle / cloudpickle, a pyfunc, or skops types outside
    ``training.SKOPS_TRUSTED_TYPES``."""


class NoChampionError(ScoringError):
    """The registered model has no ``champion`` alias yet: nothing may score until a version is promoted."""


# Frames longer than this are predicted in slices: the model's intermediate arrays (column selection, encoded
# matrix, per-tree raw scores) stay a few hundred MB at any size instead of growing with the frame.
PREDICT_CHUNK_ROWS = 500_000


@dataclass(frozen=True)
class ScoringModel:
    """A loaded model and what scoring needs to know about it."""

    name: str
    version: str | None
    uri: str  # the resolved URI that was loaded (``models:/<name>/<version>`` for registry versions)
    model: Any = field(repr=False)
    features: list[str]
    threshold: float
    run_id: str | None = None

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class per row of ``frame`` (a feature table; extra columns ignored)."""
        return predict(self, frame)


def _client(tracking_uri: str) -> Any:
    from include.mlops import tracking

    return tracking.client(tracking_uri)


def _resolve(client: Any, spec: DatasetSpec, model_uri: str) -> tuple[str, str | None, Any]:
    """(name, version, model version entity or None) behind a ``models:/`` URI; other URIs have no version."""
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith("models:/"):
        return spec.name, None, None
    ref = model_uri.removeprefix("models:/").strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        try:
            mv = client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code not in _NOT_FOUND:
                raise  # the registry is unreachable or failing: not the same as "no champion", let it retry
            if alias == CHAMPION:
                raise NoChampionError(
                    f"registered model {name!r} has no {CHAMPION!r} alias: promote a version before scoring "
                    f"(the {spec.name}_train DAG does after its gate)"
                ) from None
            raise ScoringError(f"registered model {name!r} has no alias {alias!r}") from None
        return name, str(mv.version), mv
    name, _, version = ref.partition("/")
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
        raise ScoringError(f"registered model {name!r} has no version {version!r}") from None
    return name, str(mv.version), mv


def load_model(spec: DatasetSpec, model_uri: str | None = None, *, tracking_uri: str | None = None) -> ScoringModel:
    """The model to score with: ``model_uri`` (``models:/<name>/<v>``, ``models:/<name>@<alias>``, ``runs:/…``),
    by default ``models:/<dataset>@champion``. Raises NoChampionError when there is no champion yet.

    The alias is resolved on every call (cheap), the model is loaded once per process and version.
    """
    uri = tracking_uri or default_tracking_uri()
    client = _client(uri)
    requested = model_uri or f"models:/{spec.name}@{CHAMPION}"
    name, version, mv = _resolve(client, spec, requested)
    resolved = f"models:/{name}/{version}" if version else requested
    key = (uri, resolved)
    if key not in _MODELS:
        _MODELS[key] = _load(resolved, uri, spec)
    model, features = _MODELS[key]
    tag = (mv.tags or {}).get("threshold") if mv is not None else None
    return ScoringModel(
        name=name,
        version=version,
        uri=resolved,
        model=model,
        features=features,
        threshold=float(tag) if tag else DEFAULT_THRESHOLD,
        run_id=mv.run_id if mv is not None else None,
    )


def _load(model_uri: str, tracking_uri: str, spec: DatasetSpec) -> tuple[Any, list[str]]:
    from include.mlops import tracking

    with tracking.open_model(model_uri, tracking_uri) as (model, info, _size):
        return model, tracking.input_features(model, info, spec.feature_names)


ALLOW_PICKLE_ENV = "MLOPS_ALLOW_PICKLE_MODELS"


def load_model_dir(local: str) -> Any:
    """The scikit-learn model of a downloaded MLflow model directory, deserialized with skops and the trusted-type
    list in code (``training.SKOPS_TRUSTED_TYPES``), never the list the MLmodel file carries. A pickle or
    cloudpickle file (versions logged before skops), a pyfunc or an unknown type raises UnsafeModelError: loading
    one would run whatever code its author put in it. ``MLOPS_ALLOW_PICKLE_MODELS=1`` loads pickle files
    anyway, for a registry whose every writer is trusted (docs/security.md)."""
    from mlflow.models import Model

    flavor = Model.load(local).flavors.get("sklearn")
    if not flavor or "pickled_model" not in flavor:
        raise UnsafeModelError(f"{local}: not a scikit-learn model (other flavours load through pickle): refused")
    root = os.path.realpath(local)
    path = os.path.realpath(os.path.join(root, flavor["pickled_model"]))
    if os.path.commonpath([root, path]) != root:
        raise UnsafeModelError(f"{local}: the model file {flavor['pickled_model']!r} is outside the model directory")
    fmt = flavor.get("serialization_format", "pickle")
    if fmt == "skops":
        import skops.io
        from skops.io.exceptions import UntrustedTypesFoundException

        try:
            return skops.io.load(path, trusted=list(SKOPS_TRUSTED_TYPES))
        except UntrustedTypesFoundException as exc:
            raise UnsafeModelError(f"{local}: the model names types outside our trusted list: {exc}") from None
    if fmt in ("pickle", "cloudpickle") and os.environ.get(ALLOW_PICKLE_ENV) == "1":
        import cloudpickle

        logging.getLogger("mlops.scoring").warning("%s: loading a %s model (%s=1)", local, fmt, ALLOW_PICKLE_ENV)
        with open(path, "rb") as f:
            return cloudpickle.load(f)  # nosec B301 (opted in by the operator: docs/security.md)
    raise UnsafeModelError(
        f"{local}: a {fmt} model file: refused, unpickling runs code of the file's choosing. Retrain (new versions "
        f"are skops) or set {ALLOW_PICKLE_ENV}=1 where every registry writer is trusted"
    )


def clear_cache() -> None:
    """Forget every loaded model (tests, or a worker that must reload)."""
    _MODELS.clear()


@lru_cache(maxsize=1)
def _threadpools() -> Any:
    # One controller per process: threadpoolctl's threadpool_limits() re-inspects every loaded library on each
    # call (~4 ms, a fifth of scoring a day); a kept controller's limit() costs microseconds. It only sees
    # libraries already loaded, so the estimators (and their OpenMP/BLAS) are imported first.
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def predict(model: ScoringModel, frame: pd.DataFrame) -> np.ndarray:
    """The one predict path of scoring, monitoring and the benchmark: the model's input columns, in order, with
    at most :func:`training.compute_threads` OpenMP/BLAS threads (as training)."""
    missing = [c for c in model.features if c not in frame.columns]
    if missing:
        raise ScoringError(f"{model.uri} needs feature columns {missing} that the frame lacks")
    if len(frame) > PREDICT_CHUNK_ROWS:  # bounded memory, linear time: each row's score depends on it alone
        parts = [
            predict(model, frame.iloc[i : i + PREDICT_CHUNK_ROWS]) for i in range(0, len(frame), PREDICT_CHUNK_ROWS)
        ]
        return np.concatenate(parts)
    x = frame[model.features]
    with _threadpools().limit(limits=compute_threads()):
        if hasattr(model.model, "predict_proba"):
            return np.asarray(model.model.predict_proba(x))[:, 1]
        out = np.asarray(model.model.predict(x))
    return out[:, -1] if out.ndim == 2 else out


def score_frame(
    spec: DatasetSpec, model: ScoringModel, features: pd.DataFrame, role: str | None = None
) -> pd.DataFrame:
    """Entity keys + ``probability``, ``prediction`` (at the model's threshold), ``model_version`` and, when given,
    ``role`` per row."""
    missing = [k for k in spec.entity_keys if k not in features.columns]
    if missing:
        raise ScoringError(f"the feature frame lacks entity keys {missing}")
    p = predict(model, features).astype("float64")
    # One constructor call: adding columns one by one costs more than the rest of a day's bookkeeping.
    columns = {k: features[k].to_numpy() for k in spec.entity_keys}
    columns |= {
        PROBABILITY: p,
        PREDICTION: (p >= model.threshold).astype("int8"),
        MODEL_VERSION: np.full(len(p), model.version or model.uri, dtype=object),
    }
    if role is not None:
        columns[ROLE] = np.full(len(p), role, dtype=object)
    return pd.DataFrame(columns, copy=False)


def _as_date(day: date | str) -> date:
    return day if isinstance(day, date) else date.fromisoformat(str(day)[:10])


def rescored_dataset(spec: DatasetSpec, version: str | None, model_uri: str) -> str:
    """Where an explicit re-score of ``spec`` by a model goes, below zone ``rescored``:
    ``<dataset>/version=<v>`` (``version=uri-<sha12>`` for a model outside the registry)."""
    import hashlib

    label = version or "uri-" + hashlib.sha256(model_uri.encode()).hexdigest()[:12]
    return f"{spec.name}/version={label}"


def shadow_dataset(spec: DatasetSpec, version: str) -> str:
    """Where a shadow version's predictions go, below zone ``shadow``: ``<dataset>/version=<v>``."""
    return f"{spec.name}/version={version}"


def score_partition(
    spec: DatasetSpec,
    lake: Lake,
    day: date | str,
    *,
    model_uri: str | None = None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    rescore: bool = False,
) -> dict[str, Any]:
    """Score every row of validated day ``day`` with the champion (or ``model_uri``) and write
    ``predictions/<dataset>/date=<day>``; returns a JSON-serialisable summary (for XCom).

    Served history is a record: when the day already has predictions written by another model, nothing is
    written and the summary says ``"written": False`` with the version that served the day (a re-run by the
    same model rewrites identical content, idempotently). ``rescore=True`` is the explicit re-score: it
    writes ``rescored/<dataset>/version=<v>/date=<day>`` (see :func:`rescored_dataset`) and never touches
    ``predictions/``.

    When the registry has a shadow, the same feature rows are also scored by it into
    ``shadow/<dataset>/version=<v>/date=<day>`` (a kept day too, when that partition is missing); the summary's
    ``shadow`` says what was written, or why nothing was (None without a shadow). Never on a re-score.

    Raises NoChampionError without a champion, ScoringError when the day has no validated partition.
    """
    from include.mlops.features import features_for_dates
    from include.mlops.storage import date_partition

    t0 = time.perf_counter()
    day = _as_date(day)
    partition = date_partition(day)
    validated = lake.manifest("validated", spec.name, partition)
    if validated is None:
        raise ScoringError(f"validated/{spec.name}/{partition} does not exist: nothing to score for {day}")
    model = load_model(spec, model_uri, tracking_uri=tracking_uri)
    zone, dataset = (
        ("rescored", rescored_dataset(spec, model.version, model.uri)) if rescore else ("predictions", spec.name)
    )
    where = {
        "dataset": spec.name,
        "date": day.isoformat(),
        "partition": partition,
        "zone": zone,
        "uri": lake.uri(lake.partition_path(zone, dataset, partition)),
    }

    def shadow(features: pd.DataFrame | None, served_version: str | None) -> dict[str, Any] | None:
        if rescore:
            return None
        return _score_shadow(
            spec,
            lake,
            day,
            features,
            champion=model.version,
            served_version=served_version,
            validated_sha256=validated.sha256,
            run_id=run_id,
            tracking_uri=tracking_uri,
        )

    served = None if rescore else lake.manifest("predictions", spec.name, partition)
    if served is not None and served.extra.get("model_uri") != model.uri:
        return where | {
            "written": False,
            "reason": f"kept: {partition} was served by v{served.extra.get('model_version')} "
            f"({served.extra.get('model_uri')}); re-score explicitly to compare another version",
            "rows": served.rows,
            "sha256": served.sha256,
            "model_version": served.extra.get("model_version"),
            "shadow": shadow(None, served.extra.get("model_version")),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    features = features_for_dates(lake, spec, day, day)
    out = score_frame(spec, model, features, role=None if rescore else CHAMPION)
    extra = _model_extra(model, validated.sha256)
    manifest = _write_predictions(lake, zone, dataset, partition, out, run_id, extra)
    return where | {
        "written": True,
        "rows": len(out),
        "positives": int(out[PREDICTION].sum()),
        "mean_probability": round(float(out[PROBABILITY].mean()), 6) if len(out) else None,
        "sha256": manifest.sha256,
        **extra,
        "shadow": shadow(features, model.version),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _score_shadow(
    spec: DatasetSpec,
    lake: Lake,
    day: date,
    features: pd.DataFrame | None,
    *,
    champion: str | None,
    served_version: str | None,
    validated_sha256: str,
    run_id: str | None,
    tracking_uri: str | None,
) -> dict[str, Any] | None:
    """The shadow's half of :func:`score_partition`: score ``features`` (None, a kept day: build them, unless the
    shadow's partition is already there) with the shadow and write them; None without a shadow. Never raises:
    a failure is logged and named in the summary, and the champion's day goes on."""
    from include.mlops import registry
    from include.mlops.features import features_for_dates
    from include.mlops.storage import date_partition

    t0 = time.perf_counter()
    partition = date_partition(day)
    summary: dict[str, Any] = {"model_version": None, "uri": None, "rows": 0, "sha256": None, "written": False}
    try:
        summary["model_version"] = version = registry.shadow_version(spec, tracking_uri or default_tracking_uri())
        if version is None:
            return None
        if version == champion:
            return summary | {"reason": f"shadow v{version} is the champion: not scored twice"}
        dataset = shadow_dataset(spec, version)
        summary["uri"] = lake.uri(lake.partition_path(SHADOW, dataset, partition))
        have = lake.manifest(SHADOW, dataset, partition) if features is None else None
        if have is not None and have.extra.get("validated_sha256") == validated_sha256:
            return summary | {"rows": have.rows, "sha256": have.sha256, "reason": f"shadow v{version}: already scored"}
        model = load_model(spec, f"models:/{spec.name}/{version}", tracking_uri=tracking_uri)
        if features is None:
            features = features_for_dates(lake, spec, day, day)
        out = score_frame(spec, model, features, role=SHADOW)
        extra = _model_extra(model, validated_sha256) | {
            "champion_version": champion,  # the champion when the shadow scored
            "served_version": served_version,  # whose predictions/ partition these rows sit beside
        }
        manifest = _write_predictions(lake, SHADOW, dataset, partition, out, run_id, extra)
    except Exception as exc:  # a shadow must never fail or block the champion's scoring
        v = summary["model_version"]
        why = f"shadow {'v' + v if v else '(version unknown)'} not scored: {type(exc).__name__}: {exc}"
        logging.getLogger("mlops.scoring").warning("%s %s: %s", spec.name, partition, why)
        return summary | {"uri": None, "reason": why}
    return summary | {
        "rows": len(out),
        "sha256": manifest.sha256,
        "written": True,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _write_predictions(
    lake: Lake, zone: str, dataset: str, partition: str, out: pd.DataFrame, run_id: str | None, extra: dict[str, Any]
) -> PartitionManifest:
    """Write one predictions table as a partition (its manifest: the run and the model, ``extra``)."""
    return lake.write_partition(
        zone, dataset, partition, {PREDICTIONS_TABLE: out}, source="scoring.score_partition", run_id=run_id, extra=extra
    )


def _model_extra(model: ScoringModel, validated_sha256: str) -> dict[str, Any]:
    """What a predictions manifest says about the model that wrote it."""
    return {
        "model_name": model.name,
        "model_version": model.version,
        "model_uri": model.uri,
        "model_run_id": model.run_id,
        "threshold": model.threshold,
        "validated_sha256": validated_sha256,
    }


def read_predictions(spec: DatasetSpec, lake: Lake, start: date | str, end: date | str) -> pd.DataFrame:
    """The served predictions of the days in [start, end] (empty frame when there are none); ``role`` is
    ``champion`` throughout (partitions written before the column existed included)."""
    return _read_days(spec, lake, "predictions", spec.name, start, end, CHAMPION)


def read_shadow_predictions(
    spec: DatasetSpec, lake: Lake, version: str | int, start: date | str, end: date | str
) -> pd.DataFrame:
    """Shadow ``version``'s predictions of the days in [start, end], same columns as :func:`read_predictions`
    (``role`` = ``shadow``); an empty frame when there are none. Join with the served ones on the entity keys."""
    return _read_days(spec, lake, SHADOW, shadow_dataset(spec, str(version)), start, end, SHADOW)


def shadow_days(spec: DatasetSpec, lake: Lake, version: str | int) -> list[str]:
    """The days (ISO dates, sorted) shadow ``version`` has predictions for."""
    return [p.removeprefix("date=") for p in lake.partitions(SHADOW, shadow_dataset(spec, str(version)))]


def _read_days(
    spec: DatasetSpec, lake: Lake, zone: str, dataset: str, start: date | str, end: date | str, role: str
) -> pd.DataFrame:
    lo, hi = f"date={_as_date(start).isoformat()}", f"date={_as_date(end).isoformat()}"
    parts = [p for p in lake.partitions(zone, dataset) if lo <= p <= hi]
    frames = [lake.read_table(zone, dataset, p, PREDICTIONS_TABLE) for p in parts]
    if not frames:
        return pd.DataFrame(columns=[*spec.entity_keys, PROBABILITY, PREDICTION, MODEL_VERSION, ROLE])
    out = pd.concat(frames, ignore_index=True)
    if ROLE not in out.columns or out[ROLE].isna().any():  # days scored before predictions carried a role
        out[ROLE] = out[ROLE].fillna(role) if ROLE in out.columns else role
    return out


def first_scoring_day(spec: DatasetSpec, lake: Lake, tracking_uri: str | None = None) -> str | None:
    """The first day the platform should have scored: the day after the training window of the first champion
    (the audit history's first promotion, else the current champion), or the earliest stored prediction if that
    is earlier. None before any champion and prediction."""
    from mlflow.exceptions import MlflowException

    from include.mlops import registry

    days = [p.removeprefix("date=") for p in lake.partitions("predictions", spec.name)[:1]]
    uri = tracking_uri or default_tracking_uri()
    client = _client(uri)
    first = next((e.to_version for e in registry.history(spec, uri) if e.to_version), None)
    try:
        mv = (
            client.get_model_version(spec.name, first)
            if first
            else client.get_model_version_by_alias(spec.name, CHAMPION)
        )
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
        mv = None
    end = (mv.tags or {}).get("window_end") if mv is not None else None
    if end:
        days.append((_as_date(end) + timedelta(days=1)).isoformat())
    return min(days) if days else None


def unscored_days(spec: DatasetSpec, lake: Lake, tracking_uri: str | None = None) -> list[str]:
    """Validated days without predictions, from :func:`first_scoring_day` up to the latest validated day, oldest
    first: what a lost validated Asset event (apache/airflow#56050) or a run skipped before the first champion
    left unscored."""
    start = first_scoring_day(spec, lake, tracking_uri)
    if start is None:
        return []
    scored = set(lake.partitions("predictions", spec.name))
    return [
        p.removeprefix("date=")
        for p in lake.partitions("validated", spec.name)
        if p.startswith("date=") and p.removeprefix("date=") >= start and p not in scored
    ]


def reconcile(
    spec: DatasetSpec, lake: Lake, *, max_days: int = 31, run_id: str | None = None, tracking_uri: str | None = None
) -> list[dict[str, Any]]:
    """Score the oldest ``max_days`` of :func:`unscored_days` with the champion (:func:`score_partition`, so a day
    scored meanwhile by another version is kept); their summaries."""
    days = unscored_days(spec, lake, tracking_uri)[:max_days]
    return [score_partition(spec, lake, d, run_id=run_id, tracking_uri=tracking_uri) for d in days]


def announced(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``predictions`` Asset event extra of a scoring run: the partitions it wrote (kept days are not news)
    and the version that wrote the last of them."""
    written = [r for r in results if r.get("written") and r.get("zone", PREDICTIONS_TABLE) == PREDICTIONS_TABLE]
    return {
        "partitions": [r["partition"] for r in written],
        "model_version": written[-1]["model_version"] if written else None,
    }


def describe(result: Mapping[str, Any]) -> str:
    """One log line for a :func:`score_partition` summary (its shadow's result on a second line)."""
    r = result
    if not r["written"]:
        line = f"{r['partition']}: {r['reason']}"
    else:
        line = f"{r['partition']}: {r['rows']} rows, {r['positives']} positive (v{r['model_version']}) -> {r['uri']}"
    s = r.get("shadow")
    if s is None:
        return line
    if s["written"]:
        return f"{line}\n  shadow v{s['model_version']}: {s['rows']} rows -> {s['uri']}"
    return f"{line}\n  {s['reason']}"


def before_first_scoring_day(
    spec: DatasetSpec, lake: Lake, days: Iterable[str], tracking_uri: str | None = None
) -> tuple[list[str], list[str]]:
    """Split the days named by validated-Asset events into (to score, never to be scored): a day before
    :func:`first_scoring_day` lies in the first champion's training window, before anything was served, so no
    model scores it from an event (in-sample predictions the monitor would read). The scheduler hands an
    Asset-scheduled DAG every event made while it was paused or before it ever ran: e.g. all of ``make demo``'s
    validated days when ``make up`` starts. An explicit ``date`` (a manual run) is not filtered."""
    days = list(days)
    first = first_scoring_day(spec, lake, tracking_uri) if days else None
    if first is None:
        return days, []
    return [d for d in days if d >= first], [d for d in days if d < first]


def partitions_to_score(
    event_extras: Iterable[Mapping[str, Any] | None], day: str | None = None, default: date | None = None
) -> list[str]:
    """The days a scoring run covers, as sorted ISO dates: the ``date`` Param when given, else the ``partition``
    (``date=YYYY-MM-DD``) named by each triggering validated-Asset event, else ``default`` (a manual run's day).
    Events are de-duplicated: several validated days queued behind one run are all scored, each once."""
    if day:
        return [_as_date(day).isoformat()]
    days = set()
    for extra in event_extras:
        partition = (extra or {}).get("partition")
        if partition and str(partition).startswith("date="):
            days.add(_as_date(str(partition).removeprefix("date=")).isoformat())
    if not days and default is not None:
        days.add(default.isoformat())
    return sorted(days)
