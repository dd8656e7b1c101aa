"""MLflow access in one place: which tracking/registry URI, a client for it, where artifacts go, experiments,
opening a registered model's files, and MLflow's console output in task logs.

Every library module asks here instead of building its own ``MlflowClient`` or touching MLflow's process-wide
settings: a task never leaves a tracking URI set for the rest of its process (:func:`using` restores it), and
a model is always fetched from the registry the caller named (:func:`open_model`).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any

log = logging.getLogger("include.mlops.tracking")  # not under "mlflow": MLflow's own handler must not see it


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else SQLite beside a local lake (``<lake>/../mlflow.db``, as scripts/env.sh)."""
    from include.mlops.storage import DEFAULT_ROOT, data_root

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = data_root()
    local = "://" not in root or root.startswith("file://")
    lake = Path(root.removeprefix("file://")) if local else DEFAULT_ROOT
    return f"sqlite:///{lake.resolve().parent / 'mlflow.db'}"


def client(tracking_uri: str | None = None) -> Any:
    """An ``MlflowClient`` whose tracking and registry URIs are both ``tracking_uri`` (default: above)."""
    from mlflow import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def artifact_location(tracking_uri: str, experiment: str, artifact_root: str | None = None) -> str | None:
    """Where the experiment's artifacts go: ``artifact_root`` (or ``MLOPS_MLFLOW_ARTIFACT_ROOT``), else
    ``mlflow-artifacts`` beside a SQLite database; None for a tracking server (it proxies artifacts)."""
    root = artifact_root or os.environ.get("MLOPS_MLFLOW_ARTIFACT_ROOT")
    if root is None and tracking_uri.startswith("sqlite:///"):
        root = str(Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlflow-artifacts")
    if root is None:
        return None
    if "://" not in root:
        return (Path(root).resolve() / experiment).as_uri()
    return f"{root.rstrip('/')}/{experiment}"


# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, "Detect issues"); ours are
# classic model training, where runs, metrics and models are the first thing shown.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(client: Any, name: str, location: str | None, tags: dict[str, str] | None = None) -> str:
    """The id of experiment ``name`` (created with ``location`` if missing, restored if deleted; race-safe),
    tagged as a model-training experiment (:data:`EXPERIMENT_KIND`) and with ``tags``."""
    from mlflow.exceptions import MlflowException

    want = {**EXPERIMENT_KIND, **(tags or {})}
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=location, tags=want)
        except MlflowException:  # created concurrently by another run
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    for k, v in want.items():
        if (exp.tags or {}).get(k) != v:  # an experiment made before the tag existed
            client.set_experiment_tag(exp.experiment_id, k, v)
    return exp.experiment_id


@contextmanager
def using(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (``mlflow.start_run``, ``log_model``) pointed at ``tracking_uri`` for the block only;
    the process's previous tracking and registry URIs are restored after it."""
    import mlflow
    from mlflow.tracing.provider import reset
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # set_tracking_uri/set_registry_uri also export MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI: restore those too
    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    before = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = before
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset()  # the tracer provider keeps the URI it saw (as set_tracking_uri does on a change)


class _LineLogger(io.TextIOBase):
    """A text stream that logs each complete line at INFO (progress-bar carriage returns end a line too)."""

    def __init__(self) -> None:
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buf += text.replace("\r", "\n")
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line.strip():
                log.info("%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._buf.strip():
            log.info("%s", self._buf.rstrip())
        self._buf = ""


@contextmanager
def mlflow_output_as_info() -> Iterator[None]:
    """MLflow's console output in the block (its log handler, ``eprint`` notices such as "Created version '3'",
    warnings) logged at INFO instead of written to stderr, which Airflow's task log shows as red ERROR lines;
    artifact progress bars are switched off."""
    old = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    stream = _LineLogger()
    try:
        with redirect_stderr(stream):
            yield
    finally:
        stream.flush()
        if old is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = old


def artifact_uri_of(model_uri: str, tracking_uri: str) -> str:
    """Where a model's files live, asked of THIS registry for ``models:/<name>/<version>``: MLflow's own models:/
    resolution inside ``download_artifacts`` consults the process-wide registry (``MLFLOW_TRACKING_URI``), not
    the URI passed in, so a caller pointing at another server would get that registry's version."""
    if not model_uri.startswith("models:/") or "@" in model_uri:
        return model_uri
    name, _, version = model_uri.removeprefix("models:/").strip("/").partition("/")
    return client(tracking_uri).get_model_version_download_uri(name, version)


@contextmanager
def open_model(model_uri: str, tracking_uri: str | None = None) -> Iterator[tuple[Any, Any, float]]:
    """The model behind ``model_uri`` (``models:/<name>/<v>``, ``runs:/…``; an alias URI is resolved by MLflow):
    yields ``(model, MLmodel info, size in MB)``, the model deserialized by :func:`scoring.load_model_dir`
    (skops with our trusted types; never a pickle). Its downloaded files are removed after the block."""
    import mlflow.artifacts
    from mlflow.models import Model

    from include.mlops.scoring import load_model_dir

    uri = tracking_uri or default_tracking_uri()
    with tempfile.TemporaryDirectory() as tmp, mlflow_output_as_info():
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri_of(model_uri, uri), dst_path=tmp, tracking_uri=uri
        )
        size_mb = sum(p.stat().st_size for p in Path(local).rglob("*") if p.is_file()) / 2**20
        yield load_model_dir(local), Model.load(local), size_mb


def input_features(model: Any, info: Any, default: list[str]) -> list[str]:
    """The columns a model takes: its logged signature's inputs, else the estimator's ``feature_names_in_``,
    else ``default`` (the spec's features)."""
    if info.signature is not None and info.signature.inputs is not None:
        return list(info.signature.inputs.input_names())
    return list(getattr(model, "feature_names_in_", default))
