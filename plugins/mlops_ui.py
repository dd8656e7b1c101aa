"""Airflow UI integration of the MLOps platform (issue [7/9]).

- **Extra links** on the MLOps tasks — *MLflow run*, *Model version*, *Data Docs*, *Evidently report*, *Gate
  report*. They are *global* operator extra links: Airflow's API server computes them when the task view asks
  (``/api/v2/dags/…/taskInstances/<task>/links``), calling ``get_link`` with the serialized task and the task
  instance key. (Per-operator links are different: the task pushes them into XCom at the end of its run; no DAG
  file has to change for global links.) ``get_link`` reads the task's own ``return_value`` XCom from the
  metadata DB — the small JSON result every MLOps task already returns (URIs, run ids, versions) — and
  :func:`include.mlops.health.task_links` decides per ``<dataset>_<kind>`` DAG and task id which links apply.
  The other links of a task are empty, and the UI does not show empty links.
- **"Model health"** — a FastAPI app mounted in the API server at ``/mlops`` plus an external view in the
  navigation that shows it inside the UI: champion and challenger, the last gate decision with its checks,
  promotion history, drift and performance over time, links to every report, and each version's model card
  (``/mlops/card/<dataset>/<version>``, rendered from MLflow, sandboxed like a report). It also serves the lake's
  reports (``/mlops/reports/{gx,gate,drift}/<dataset>/…``: GX Data Docs, Evidently HTML, gate pages) through
  :func:`include.mlops.health.report_path`, which admits nothing outside the lake's ``reports/`` zone.
  Authentication is Airflow's own: every route depends on ``airflow.api_fastapi.core_api.security.get_user``
  (the ``_token`` cookie the UI sets at login, or an ``Authorization: Bearer`` JWT from ``/auth/token``), so
  no token → 401, a bad one → 403; a dataset's pages and reports also need read access to its
  ``<dataset>_train`` DAG in the auth manager. A browser without a session (``Accept: text/html``) is redirected
  to Airflow's login page with ``next`` = the page it asked for; API clients get the 401.

Public URLs: ``MLOPS_MLFLOW_PUBLIC_URL`` (default ``http://localhost:5000``) for MLflow links and
``MLOPS_AIRFLOW_PUBLIC_URL`` (default: the path of Airflow's ``[api] base_url``, i.e. relative to the page's own
origin, so links work from localhost, 127.0.0.1 or any host name) for report links. This module stays cheap to
import (every Airflow component loads plugins): FastAPI, MLflow and the library are imported on first use.
"""

# No `from __future__ import annotations`: FastAPI resolves route annotations (Request, responses) that are
# imported inside build_app, which postponed (string) annotations would hide from it.
import logging
from typing import Any
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

APP_PREFIX = "/mlops"  # = include.mlops.health.APP_PREFIX (not imported here: keep plugin loading light)
SIGNED = "/r"  # capability URLs of reports: /mlops/r/<token>/reports/...
# Reports run sandboxed (an opaque origin: no Airflow session, no same-origin API calls) and may be framed by the
# UI only. The links they hold carry the signed prefix, so they work without the cookie.
REPORT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox allow-scripts allow-popups allow-downloads; frame-ancestors 'self'",
    "Referrer-Policy": "no-referrer",  # the capability URL must not leak to a site a report links to
    "Cache-Control": "private, max-age=60",
    "X-Robots-Tag": "noindex",
}


def report_key() -> bytes:
    """The HMAC key of report URLs, derived from Airflow's ``[api] secret_key`` (every api-server shares it)."""
    import hashlib

    from airflow.configuration import conf

    secret = conf.get("api", "secret_key", fallback="") or conf.get("api_auth", "jwt_secret", fallback="")
    if not secret:
        raise RuntimeError("[api] secret_key is not set: report links cannot be signed")
    return hashlib.sha256(b"mlops-report-links\0" + secret.encode()).digest()


def _api_base_url() -> str:
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "").rstrip("/")


def public_urls() -> Any:
    """MLflow and Airflow public URLs from the environment, Airflow's ``[api] base_url`` as the fallback."""
    from include.mlops.health import PublicUrls

    return PublicUrls.from_env(airflow_default=_api_base_url())


def _datasets() -> list[str]:
    """Dataset names: the spec files' stems (a spec's name must equal its file name); no YAML is parsed."""
    from include.mlops.config import spec_paths

    return [p.stem for p in spec_paths()]


def return_value(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    """A task instance's ``return_value`` XCom from the metadata DB (None when there is none)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value", run_id=run_id, dag_ids=dag_id, task_ids=task_id, map_indexes=map_index
            ).with_only_columns(XComModel.value)
        ).first()
    return None if row is None else XComModel.deserialize_value(row)


def links_for(dag_id: str, ti_key: Any) -> dict[str, str]:
    """Every applicable MLOps link of a task instance (empty for tasks of other DAGs)."""
    from include.mlops import health
    from include.mlops.storage import Lake

    split = health.split_dag_id(dag_id, _datasets())
    if split is None:
        return {}
    dataset, kind = split
    source = health.LINK_SOURCE.get((kind, ti_key.task_id))
    value = return_value(dag_id, ti_key.run_id, source or ti_key.task_id, -1 if source else ti_key.map_index)
    return health.task_links(dataset, kind, ti_key.task_id, value, public_urls(), Lake())


class _MlopsLink(BaseOperatorLink):
    """One named link; the URL comes from :func:`links_for` ("" = not applicable: the UI hides it)."""

    name = ""

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            return links_for(operator.dag_id, ti_key).get(self.name, "")
        except Exception:  # a broken link must not break the task view
            log.exception("mlops extra link %r for %s failed", self.name, ti_key)
            return ""


class MlflowRunLink(_MlopsLink):
    name = "MLflow run"


class ModelVersionLink(_MlopsLink):
    name = "Model version"


class DataDocsLink(_MlopsLink):
    name = "Data Docs"


class EvidentlyReportLink(_MlopsLink):
    name = "Evidently report"


class GateReportLink(_MlopsLink):
    name = "Gate report"


# -- the FastAPI app ---------------------------------------------------------------------------------------
def build_app() -> Any:
    """The Model health app: pages, JSON and lake reports, all behind Airflow's authentication."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.core_api.security import GetUserDep, get_user
    from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

    from include.mlops import health
    from include.mlops.config import SpecError, load_spec
    from include.mlops.health_html import render_page
    from include.mlops.storage import Lake

    app = FastAPI(title="MLOps model health", docs_url=None, redoc_url=None, openapi_url=None)
    secured = APIRouter(dependencies=[Depends(get_user)])  # 401 without a token, 403 with an invalid one
    key = report_key()

    def authorize(user: Any, dataset: str) -> None:
        if dataset not in _datasets():
            raise HTTPException(404, f"unknown dataset {dataset!r}: no include/config/{dataset}.yaml")
        allowed = get_auth_manager().is_authorized_dag(
            method="GET", details=DagDetails(id=f"{dataset}_train"), user=user
        )
        if not allowed:
            raise HTTPException(403, f"no read access to DAG {dataset}_train")

    def page_urls(request: Request) -> health.PublicUrls:
        # Links inside the app are relative to where Airflow mounted it (its root path may carry a prefix).
        root = request.scope.get("root_path", "").removesuffix(health.APP_PREFIX)
        return health.PublicUrls(mlflow=public_urls().mlflow, airflow=root)

    def gather(dataset: str) -> dict[str, Any]:
        try:
            spec = load_spec(dataset)
        except SpecError as exc:
            raise HTTPException(500, f"dataset spec {dataset!r} is invalid: {exc}") from None
        return health.model_health(spec, Lake())

    @secured.get("/")
    def index(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/health/")

    @secured.get("/health/", response_class=HTMLResponse)
    def first_dataset(request: Request, user: GetUserDep) -> HTMLResponse:
        datasets = _datasets()
        if not datasets:
            raise HTTPException(404, "no dataset specs in include/config/")
        return dataset_page(datasets[0], request, user)

    @secured.get("/health/{dataset}", response_class=HTMLResponse)
    def dataset_page(dataset: str, request: Request, user: GetUserDep) -> HTMLResponse:
        authorize(user, dataset)
        return HTMLResponse(render_page(gather(dataset), _datasets(), page_urls(request)))

    @secured.get("/api/health/{dataset}")
    def dataset_json(dataset: str, user: GetUserDep) -> JSONResponse:
        authorize(user, dataset)
        return JSONResponse(gather(dataset))

    @secured.get("/card/{dataset}/{version}", response_class=HTMLResponse)
    def model_card(dataset: str, version: str, request: Request, user: GetUserDep) -> Response:
        """A version's model card, rendered from MLflow; served like a report (sandboxed, no script runs)."""
        from include.mlops import lineage

        authorize(user, dataset)
        if not version.isdigit():
            raise HTTPException(404, f"no version {version!r}: a model version is a positive integer")
        try:
            page = lineage.card_html(load_spec(dataset), version, back=page_urls(request).health(dataset))
        except lineage.LineageError as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(page, media_type="text/html; charset=utf-8", headers=REPORT_HEADERS)

    @secured.get("/reports/{sub:path}")
    def report(sub: str, request: Request, user: GetUserDep) -> RedirectResponse:
        """The session's way in: authorize, then send the browser to the report's signed, sandboxed URL."""
        rel = f"reports/{sub}"  # the lake's reports/ zone is what this route serves
        try:
            _, dataset = health.check_report_rel(rel)
            authorize(user, dataset)
            health.report_path(Lake(), rel)  # 404 / 400 here, before a link is made
        except health.ReportNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except health.ReportPathError as exc:
            raise HTTPException(400, str(exc)) from None
        token = health.sign_report(key, rel)
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}{SIGNED}/{token}/{rel}", status_code=303, headers={"Cache-Control": "no-store"})

    @app.get(SIGNED + "/{token}/{sub:path}")
    def signed_report(token: str, sub: str) -> Response:
        """A report by capability URL: no session (the sandbox withholds it), the signature is the permission."""
        try:
            health.check_signature(key, token, sub)
            lake = Lake()
            data = lake.fs.cat_file(health.report_path(lake, sub))
        except health.ReportLinkError as exc:
            raise HTTPException(403, str(exc)) from None
        except health.ReportNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except health.ReportPathError as exc:
            raise HTTPException(400, str(exc)) from None
        return Response(data, media_type=health.content_type(sub), headers=REPORT_HEADERS)

    @app.exception_handler(HTTPException)
    async def login_instead_of_401(request: Request, exc: HTTPException) -> Response:
        """An anonymous browser is sent to Airflow's login page (and back here after it); API clients
        (``Accept: application/json``, or no text/html) keep the 401."""
        from fastapi.exception_handlers import http_exception_handler

        if exc.status_code == 401 and health.wants_html(request.headers.get("accept")):
            mount = request.scope.get("root_path", "")
            root = mount.removesuffix(health.APP_PREFIX)
            path = request.url.path if request.url.path.startswith(mount) else mount + request.url.path
            target = f"{path}?{request.url.query}" if request.url.query else path
            return RedirectResponse(f"{root}{get_auth_manager().get_url_login(next_url=target)}", status_code=303)
        return await http_exception_handler(request, exc)

    app.include_router(secured)
    return app


class LazyApp:
    """An ASGI app that builds :func:`build_app` on its first request, so loading the plugin in the scheduler,
    DAG processor or a worker imports neither FastAPI routes nor the library."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = build_app()
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return "mlops_ui.LazyApp(build_app)"


def _nav_href() -> str:
    """Where the UI's iframe loads the view: the API server's path prefix (from ``[api] base_url``) + /mlops."""
    return f"{urlsplit(_api_base_url()).path.rstrip('/')}{APP_PREFIX}/health/"


class MlopsUiPlugin(AirflowPlugin):
    name = "mlops_ui"
    global_operator_extra_links = [  # noqa: RUF012 (AirflowPlugin declares these as class attributes)
        MlflowRunLink(),
        ModelVersionLink(),
        DataDocsLink(),
        EvidentlyReportLink(),
        GateReportLink(),
    ]
    fastapi_apps = [{"app": LazyApp(), "url_prefix": APP_PREFIX, "name": "MLOps model health"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "Model health",
            "href": _nav_href(),
            "destination": "nav",
            "url_route": "model-health",
            "nav_top_level": True,
        }
    ]
