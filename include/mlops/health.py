"""Model health and links for the Airflow UI: what the plugin (plugins/mlops_ui.py) shows, without Airflow.

- :func:`task_links` — the extra links of a task (MLflow run, model version, Data Docs, Evidently report, gate
  report) from the small JSON result the task already returns (its XCom ``return_value``) and the public URLs.
- :func:`report_path` — the one gate to lake files served over HTTP: only files under ``reports/{gx,gate,drift}/
  <dataset>/`` of the lake, with ``..``, absolute paths, encoded traversal and symlinks leaving that folder refused.
- :func:`sign_report` / :func:`check_signature` — the capability URLs reports are served under: an HMAC over the
  report's folder (:func:`report_scope`) and an expiry, so a report page (served sandboxed, without the Airflow
  session: docs/security.md) can load its assets and follow its links inside that folder and nowhere else.
- :func:`model_health` — everything the "Model health" view shows for one dataset: champion, challenger and shadow
  (with its latest comparison against the champion on live labels), the last gate decision with its checks, the
  promotion history, monitoring over time and every report.

Public URLs come from the environment: ``MLOPS_MLFLOW_PUBLIC_URL`` (default ``http://localhost:5000``, the MLflow
UI of ``make up``) and ``MLOPS_AIRFLOW_PUBLIC_URL`` (default: Airflow's ``[api] base_url``, else links relative
to the UI's own origin), under which the plugin serves the lake's ``reports/`` zone at ``/mlops/reports/…``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import mimetypes
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from include.mlops.config import DatasetSpec
    from include.mlops.storage import Lake

APP_PREFIX = "/mlops"  # where the plugin's FastAPI app is mounted in the Airflow API server
DEFAULT_MLFLOW_URL = "http://localhost:5000"
REPORT_KINDS = ("gx", "gate", "drift")
# What may be served: report pages and the static files Data Docs and Evidently pages load.
SERVED_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".eot": "application/vnd.ms-fontobject",
}

# Link names (the buttons in the task instance view).
MLFLOW_RUN = "MLflow run"
MODEL_VERSION = "Model version"
DATA_DOCS = "Data Docs"
EVIDENTLY_REPORT = "Evidently report"
GATE_REPORT = "Gate report"
LINK_NAMES = (MLFLOW_RUN, MODEL_VERSION, DATA_DOCS, EVIDENTLY_REPORT, GATE_REPORT)

# DAG kinds built per spec (dags/<kind>.py gives <dataset>_<kind>) and, per task, whose return value holds the
# link data: the task's own, or another task's of the same run (the HITL approval shows the evaluate result).
DAG_KINDS = ("ingest", "train", "score", "monitor", "rollback", "reconcile")
LINK_SOURCE = {("train", "approve"): "evaluate"}


class ReportPathError(ValueError):
    """A requested report path that is not a file under the lake's ``reports/{gx,gate,drift}/<dataset>/``."""


class ReportLinkError(ReportPathError):
    """A signed report URL that is malformed, expired or not for the requested file."""


class ReportNotFound(ReportPathError):
    """A well-formed report path with no file behind it."""


# -- public URLs and link building ---------------------------------------------------------------------
def wants_html(accept: str | None) -> bool:
    """A browser navigation (``Accept`` names text/html before any JSON), not an API client."""
    accept = (accept or "").lower()
    html, js = accept.find("text/html"), accept.find("application/json")
    return html >= 0 and (js < 0 or html < js)


@dataclass(frozen=True)
class PublicUrls:
    """Where a browser reaches MLflow and the Airflow API server (no trailing slash; ``airflow`` may be ``""``:
    links relative to the page's own origin)."""

    mlflow: str = DEFAULT_MLFLOW_URL
    airflow: str = ""

    @classmethod
    def from_env(cls, airflow_default: str = "") -> PublicUrls:
        """``MLOPS_MLFLOW_PUBLIC_URL`` / ``MLOPS_AIRFLOW_PUBLIC_URL``, else the defaults. Airflow links default to
        the *path* of ``airflow_default`` (Airflow's ``[api] base_url``): relative to the page's own origin, so a
        link works whether the UI was opened as localhost, 127.0.0.1 or a host name (an absolute base_url host
        would send the browser to another origin, without its session)."""
        mlflow = os.environ.get("MLOPS_MLFLOW_PUBLIC_URL") or DEFAULT_MLFLOW_URL
        airflow = os.environ.get("MLOPS_AIRFLOW_PUBLIC_URL") or ""
        for name, url in (("MLOPS_MLFLOW_PUBLIC_URL", mlflow), ("MLOPS_AIRFLOW_PUBLIC_URL", airflow)):
            if url and not re.match(r"^https?://[^\s/]+", url):
                raise ValueError(f"{name} must be an http(s) URL, got {url!r}")
        airflow = airflow or urlsplit(airflow_default or "").path
        return cls(mlflow=mlflow.rstrip("/"), airflow=airflow.rstrip("/"))

    def mlflow_run(self, run_id: str, experiment_id: str | None = None) -> str:
        """The MLflow UI page of a run (``#/runs/<id>`` redirects to its experiment when that is unknown)."""
        run = quote(str(run_id), safe="")
        if experiment_id:
            return f"{self.mlflow}/#/experiments/{quote(str(experiment_id), safe='')}/runs/{run}"
        return f"{self.mlflow}/#/runs/{run}"

    def mlflow_experiment(self, experiment_id: str) -> str:
        return f"{self.mlflow}/#/experiments/{quote(str(experiment_id), safe='')}"

    def model_version(self, model: str, version: str | int) -> str:
        """The MLflow UI page of a registered model version."""
        return f"{self.mlflow}/#/models/{quote(str(model), safe='')}/versions/{quote(str(version), safe='')}"

    def report(self, rel: str) -> str:
        """The URL under which the plugin serves a lake report (``rel`` relative to the lake root, under
        ``reports/``): ``<airflow>/mlops/reports/gate/flights/v1/gate.html``."""
        if not rel.startswith("reports/"):
            raise ReportPathError(f"only files under reports/ are served: {rel!r}")
        return f"{self.airflow}{APP_PREFIX}/{quote(rel, safe='/=')}"

    def health(self, dataset: str) -> str:
        """The Model health page of a dataset."""
        return f"{self.airflow}{APP_PREFIX}/health/{quote(dataset, safe='')}"

    def health_json(self, dataset: str) -> str:
        return f"{self.airflow}{APP_PREFIX}/api/health/{quote(dataset, safe='')}"

    def dag_run(self, dag_id: str, run_id: str) -> str:
        """The Airflow UI page of a DAG run."""
        return f"{self.airflow}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"

    def model_card(self, dataset: str, version: str | int) -> str:
        """The model card page of a registered version (rendered from MLflow by the plugin)."""
        return f"{self.airflow}{APP_PREFIX}/card/{quote(dataset, safe='')}/{quote(str(version), safe='')}"


def lake_rel(lake: Lake, uri: str | None) -> str | None:
    """The lake-relative path of a URI this lake produced (``file:///…/lake/reports/…`` → ``reports/…``);
    None for anything outside the lake or empty. String work only: nothing is read."""
    if not uri or not isinstance(uri, str):
        return None
    path = lake.fs._strip_protocol(uri).rstrip("/")
    root = lake.root.rstrip("/")
    if not path.startswith(root + "/"):
        return None
    rel = path[len(root) + 1 :]
    try:
        check_report_rel(rel)
    except ReportPathError:
        return None
    return rel


def split_dag_id(dag_id: str, datasets: Sequence[str]) -> tuple[str, str] | None:
    """``("flights", "train")`` for ``flights_train`` when ``flights`` is a known dataset; None otherwise."""
    ds, _, kind = dag_id.rpartition("_")
    return (ds, kind) if ds in datasets and kind in DAG_KINDS else None


def task_links(dataset: str, kind: str, task_id: str, value: Any, urls: PublicUrls, lake: Lake) -> dict[str, str]:
    """The extra links of one task from its return value (see :data:`LINK_SOURCE` for which task's); only the
    links that apply, e.g. ``{"Data Docs": …}`` for ``<dataset>_ingest.validate``."""
    links: dict[str, str] = {}
    if value is None:
        return links

    def report(uri: Any, name: str) -> None:
        rel = lake_rel(lake, uri)
        if rel:
            links[name] = urls.report(rel)

    def version(v: Any) -> None:
        if v not in (None, ""):
            links[MODEL_VERSION] = urls.model_version(dataset, v)

    def run(run_id: Any, experiment_id: Any = None) -> None:
        if run_id:
            links[MLFLOW_RUN] = urls.mlflow_run(run_id, experiment_id)

    d = value if isinstance(value, Mapping) else {}
    key = (kind, task_id)
    if key == ("ingest", "validate"):
        report(d.get("docs_uri"), DATA_DOCS)
    elif key == ("train", "train"):
        run(d.get("parent_run_id"), d.get("experiment_id"))
        version(d.get("model_version"))
    elif key in (("train", "evaluate"), ("train", "approve")):
        report((d.get("uris") or {}).get("html"), GATE_REPORT)
        version(d.get("challenger_version"))
    elif key in (("train", "promote"), ("train", "reject")):
        version(d.get("version"))
        run(d.get("run_id"))  # the audit entry's run
        report(d.get("gate_report_uri"), GATE_REPORT)
    elif key == ("rollback", "rollback"):
        version(d.get("to_version"))
        run(d.get("run_id"))
    elif key == ("score", "score") and isinstance(value, list) and value:
        last = value[-1] if isinstance(value[-1], Mapping) else {}
        version(last.get("model_version"))
    elif key == ("monitor", "monitor"):
        report((d.get("uris") or {}).get("html"), EVIDENTLY_REPORT)
        run(d.get("mlflow_run_id"))
        version(d.get("model_version"))
    elif key == ("monitor", "decide"):
        report(d.get("report_uri"), EVIDENTLY_REPORT)
        run(d.get("mlflow_run_id"))
    return links


# -- serving lake reports --------------------------------------------------------------------------------
def check_report_rel(rel: str) -> tuple[str, str]:
    """Validate a lake-relative report path; return its (kind, dataset). Raises :class:`ReportPathError` for
    anything but ``reports/{gx,gate,drift}/<dataset>/…/<file>`` made of plain names."""
    if not isinstance(rel, str) or not rel:
        raise ReportPathError("empty report path")
    if any(c in rel for c in ("\x00", "\\", "%")) or any(ord(c) < 32 for c in rel):
        # Starlette has decoded the URL once already: a '%' left is double encoding (e.g. %252e%252e).
        raise ReportPathError(f"report path has a forbidden character: {rel!r}")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel) or "://" in rel:
        raise ReportPathError(f"report path must be relative to the lake: {rel!r}")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ReportPathError(f"report path has an empty, '.' or '..' component: {rel!r}")
    if any(p.startswith(".") for p in parts):
        raise ReportPathError(f"report path names a hidden file: {rel!r}")
    if len(parts) < 4 or parts[0] != "reports" or parts[1] not in REPORT_KINDS:
        raise ReportPathError(f"only files under reports/{{{','.join(REPORT_KINDS)}}}/<dataset>/ are served: {rel!r}")
    if os.path.splitext(parts[-1])[1].lower() not in SERVED_TYPES:
        raise ReportPathError(f"not a report file type: {rel!r}")
    return parts[1], parts[2]


def report_path(lake: Lake, rel: str) -> str:
    """The file-system path of a report file in the lake, after :func:`check_report_rel` and, on a local lake,
    a check that the resolved path (symlinks followed) is still inside ``reports/<kind>/<dataset>/`` — the folder
    the dataset's read permission covers. Raises :class:`ReportNotFound` when there is no such file."""
    kind, dataset = check_report_rel(rel)
    path = lake.path(*rel.split("/"))
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(lake.fs, LocalFileSystem):
        folder = os.path.realpath(lake.path("reports", kind, dataset))
        real = os.path.realpath(path)
        if os.path.commonpath([folder, real]) != folder:
            raise ReportPathError(f"report path leaves reports/{kind}/{dataset}/: {rel!r}")
    if not lake.fs.isfile(path):
        raise ReportNotFound(f"no report {rel!r} in the lake")
    return path


# -- capability URLs for reports ---------------------------------------------------------------------------
REPORT_LINK_SECONDS = 3600  # how long a signed report URL works


def report_scope(rel: str) -> str:
    """The folder a signed URL for ``rel`` opens: the report's own partition (``reports/gx/<ds>/date=…/``,
    ``reports/gate/<ds>/v3/``, ``reports/drift/<ds>/date=…/``), where its assets and linked pages live; for a file
    directly under ``reports/<kind>/<ds>/``, that folder."""
    parts = rel.split("/")
    return "/".join(parts[:4] if len(parts) > 4 else parts[:3]) + "/"


def _mac(key: bytes, scope: str, expires: int) -> str:
    digest = hmac.new(key, f"{scope}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign_report(key: bytes, rel: str, now: float | None = None, seconds: int = REPORT_LINK_SECONDS) -> str:
    """The token (``<expiry>.<mac>``) of a capability URL for ``rel``'s folder, valid ``seconds`` from ``now``."""
    check_report_rel(rel)
    expires = int((time.time() if now is None else now) + seconds)
    return f"{expires}.{_mac(key, report_scope(rel), expires)}"


def check_signature(key: bytes, token: str, rel: str, now: float | None = None) -> None:
    """Raise ReportLinkError unless ``token`` was made by :func:`sign_report` with ``key`` for a file in the same
    folder as ``rel`` and has not expired."""
    check_report_rel(rel)
    expires, _, mac = token.partition(".")
    if not expires.isdigit() or not mac:
        raise ReportLinkError("malformed report link")
    if int(expires) < (time.time() if now is None else now):
        raise ReportLinkError("the report link has expired: open the report again from Airflow")
    if not hmac.compare_digest(mac, _mac(key, report_scope(rel), int(expires))):
        raise ReportLinkError("the report link is not valid for this file")


def content_type(rel: str) -> str:
    ext = os.path.splitext(rel)[1].lower()
    return SERVED_TYPES.get(ext) or mimetypes.guess_type(rel)[0] or "application/octet-stream"


# -- what the view shows ---------------------------------------------------------------------------------
def _date_dirs(lake: Lake, rel: str) -> list[str]:
    """``date=…`` folders directly under a lake folder, sorted."""
    base = lake.path(*rel.split("/"))
    if not lake.fs.exists(base):
        return []
    names = (p.rstrip("/").rsplit("/", 1)[-1] for p in lake.fs.ls(base, detail=False))
    return sorted(n for n in names if re.match(r"^date=\d{4}-\d{2}-\d{2}$", n))


def _read_json(lake: Lake, rel: str) -> Any | None:
    try:
        return lake.read_json(rel)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def gate_reports(spec: DatasetSpec, lake: Lake) -> list[dict[str, Any]]:
    """Every gate report of the dataset (``reports/gate/<ds>/v<n>-<run id prefix>/gate.json``), newest first."""
    base = lake.path("reports", "gate", spec.name)
    if not lake.fs.exists(base):
        return []
    out = []
    for p in lake.fs.ls(base, detail=False):
        name = p.rstrip("/").rsplit("/", 1)[-1]
        m = re.match(r"^v(\d+)(?:-[0-9a-f]{8})?$", name)  # v<n>-<run id prefix> (evaluation.report_dir)
        if not m:
            continue
        rel = f"reports/gate/{spec.name}/{name}"
        report = _read_json(lake, f"{rel}/gate.json")
        if report is None:
            continue
        out.append({"version": m[1], "html": f"{rel}/gate.html", "json": f"{rel}/gate.json", "report": report})
    return sorted(out, key=lambda r: (int(r["version"]), r["report"].get("decided_at") or ""), reverse=True)


def monitoring_series(spec: DatasetSpec, lake: Lake) -> list[dict[str, Any]]:
    """One point per monitored day, by day: the metrics of ``monitor.json``, the recorded decision and the
    report files (``reports/drift/<ds>/date=…``, ``reports/drift/<ds>/decisions/<day>.json``)."""
    from include.mlops import monitoring

    decisions = {d.get("day"): d for d in monitoring.decision_history(spec, lake)}
    points = []
    for part in _date_dirs(lake, f"reports/drift/{spec.name}"):
        day = part.removeprefix("date=")
        rel = f"reports/drift/{spec.name}/{part}"
        monitor = _read_json(lake, f"{rel}/monitor.json")
        if monitor is None:
            continue
        decision = decisions.get(day)
        points.append(
            {
                "day": day,
                "model_version": monitor.get("model_version"),
                "metrics": monitor.get("metrics") or {},
                "mlflow_run_id": monitor.get("mlflow_run_id"),
                "html": f"{rel}/drift.html" if lake.exists(f"{rel}/drift.html") else None,
                "decision": None
                if decision is None
                else {
                    k: decision.get(k)
                    for k in ("retrain", "alert", "triggers", "blocked_by", "reasons", "propose_shadow")
                },
                "decision_json": f"{monitoring.decisions_dir(spec)}/{day}.json" if decision else None,
            }
        )
    return points


def shadow_comparison(series: Sequence[Mapping[str, Any]], version: str | None) -> dict[str, Any] | None:
    """The latest comparison of shadow ``version`` with the champion (``metrics.shadow`` of the monitoring points,
    plus ``day`` and ``champion_version``) and ``proposed_on``: the days its decision proposed its promotion. None
    when there is no shadow or it has not been compared yet."""
    if version is None:
        return None
    version = str(version)

    def of_version(p: Mapping[str, Any]) -> bool:
        s = p["metrics"].get("shadow")
        return isinstance(s, Mapping) and str(s.get("version")) == version

    compared = [p for p in series if of_version(p)]
    if not compared:
        return None
    last = compared[-1]
    return dict(last["metrics"]["shadow"]) | {
        "day": last["day"],
        "champion_version": last.get("model_version"),
        "proposed_on": [p["day"] for p in series if str((p.get("decision") or {}).get("propose_shadow")) == version],
    }


def data_docs(spec: DatasetSpec, lake: Lake) -> list[dict[str, Any]]:
    """Validation result and Data Docs page per ingested day (``reports/gx/<ds>/date=…``), newest first."""
    out = []
    for part in reversed(_date_dirs(lake, f"reports/gx/{spec.name}")):
        rel = f"reports/gx/{spec.name}/{part}"
        result = _read_json(lake, f"{rel}/result.json") or {}
        docs = f"{rel}/docs/index.html"
        out.append(
            {
                "day": part.removeprefix("date="),
                "status": result.get("status"),
                "rows_quarantined": result.get("rows_quarantined"),
                "docs": docs if lake.exists(docs) else None,
                "result": f"{rel}/result.json",
            }
        )
    return out


def _section(fn: Any, *args: Any) -> tuple[Any, str | None]:
    """Run one part of the view; an unreachable MLflow or a broken file costs that part, not the page."""
    try:
        return fn(*args), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def model_health(spec: DatasetSpec, lake: Lake, tracking_uri: str | None = None) -> dict[str, Any]:
    """Everything the view shows for a dataset, as plain JSON-serialisable data (``errors`` names any part that
    could not be read)."""
    from include.mlops import registry

    errors: dict[str, str] = {}
    current, err = _section(registry.current, spec, tracking_uri)
    if err:
        errors["registry"] = err
    history, err = _section(registry.history, spec, tracking_uri)
    if err:
        errors["history"] = err
    gates, err = _section(gate_reports, spec, lake)
    if err:
        errors["gate"] = err
    series, err = _section(monitoring_series, spec, lake)
    if err:
        errors["monitoring"] = err
    docs, err = _section(data_docs, spec, lake)
    if err:
        errors["data_docs"] = err
    from include.mlops import feature_store

    catalog, err = _section(feature_store.catalog, spec, lake, tracking_uri)
    if err:
        errors["features"] = err
    current = current or {}
    shadow = current.get("shadow")
    return {
        "dataset": spec.name,
        "description": spec.description,
        "champion": current.get("champion"),
        "challenger": current.get("challenger"),
        "shadow": shadow,
        "shadow_comparison": shadow_comparison(series or [], (shadow or {}).get("version")),
        "last_gate": (gates or [None])[0],
        "gate_reports": [{k: g[k] for k in ("version", "html", "json")} | _gate_summary(g) for g in gates or []],
        "history": [e.as_dict() for e in history or []],
        "monitoring": series or [],
        "data_docs": docs or [],
        "features": catalog,
        "thresholds": {
            "max_roc_auc_drop": spec.monitoring.max_roc_auc_drop,
            "max_brier_rise": spec.monitoring.max_brier_rise,
            "max_prediction_drift": spec.monitoring.max_prediction_drift,
            "max_weighted_drift": spec.monitoring.max_weighted_drift,
            "max_drift_share": spec.monitoring.max_drift_share,
        },
        "errors": errors,
    }


def _gate_summary(g: Mapping[str, Any]) -> dict[str, Any]:
    r = g["report"]
    return {"decision": r.get("decision"), "failed": r.get("failed") or [], "decided_at": r.get("decided_at")}
