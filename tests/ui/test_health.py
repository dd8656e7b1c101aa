"""include.mlops.health without Airflow running: report path validation on a real temp lake (symlinks too),
the extra links built from real task result shapes, public URLs, and the page's escaping; plus the plugin's
import cost (every Airflow component loads it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from include.mlops import health
from include.mlops.health import PublicUrls, ReportNotFound, ReportPathError, report_path
from include.mlops.storage import Lake
from tests.conftest import REPO

URLS = PublicUrls(mlflow="http://mlflow:5000", airflow="http://airflow:8080")


@pytest.fixture
def lake(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    lake.write_bytes("reports/gate/flights/v3/gate.html", b"<html>gate</html>")
    lake.write_bytes("reports/gx/flights/date=2013-01-24/docs/index.html", b"<html>docs</html>")
    lake.write_bytes("reports/gx/flights/date=2013-01-24/docs/static/styles/x.css", b"body{}")
    lake.write_json("validated/flights/date=2013-01-24/_manifest.json", {"rows": 1})
    (tmp_path / "secret.html").write_text("secret")
    os.symlink(tmp_path / "secret.html", tmp_path / "lake/reports/gate/flights/v3/escape.html")
    os.symlink(tmp_path, tmp_path / "lake/reports/gate/flights/outside")
    os.symlink(
        tmp_path / "lake/reports/gate/flights/v3/gate.html", tmp_path / "lake/reports/gate/flights/v3/alias.html"
    )
    # inside the lake but outside the folder the link names: another dataset's report, the validated zone
    lake.write_bytes("reports/gate/other/v1/gate.html", b"<html>other dataset</html>")
    os.symlink(tmp_path / "lake/reports/gate/other/v1/gate.html", tmp_path / "lake/reports/gate/flights/v3/other.html")
    os.symlink(tmp_path / "lake/validated", tmp_path / "lake/reports/gx/flights/validated")
    return lake


@pytest.mark.parametrize(
    ("rel", "kind", "dataset"),
    [
        ("reports/gate/flights/v3/gate.html", "gate", "flights"),
        ("reports/gx/flights/date=2013-01-24/docs/index.html", "gx", "flights"),
        ("reports/gx/flights/date=2013-01-24/docs/static/styles/x.css", "gx", "flights"),
        ("reports/gate/flights/v3/alias.html", "gate", "flights"),  # a symlink that stays in the lake
    ],
)
def test_report_path_serves_files_under_reports(lake, rel, kind, dataset):
    assert health.check_report_rel(rel) == (kind, dataset)
    assert lake.fs.cat_file(report_path(lake, rel)).startswith((b"<html>", b"body"))


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("", "empty"),
        ("../etc/passwd", "'..'"),
        ("reports/gate/flights/../../../etc/passwd", "'..'"),
        ("reports/gate/flights/v3/../../../../secret.html", "'..'"),
        ("reports/gate/flights/%2e%2e/%2e%2e/x.html", "forbidden character"),
        ("reports/gate/flights/%252e%252e/x.html", "forbidden character"),
        ("/etc/passwd", "relative"),
        ("//etc/passwd", "relative"),
        ("C:/Windows/win.ini", "relative"),
        ("file:///etc/passwd", "relative"),
        ("reports/gate/flights\\..\\..\\x.html", "forbidden character"),
        ("reports/gate/flights/v3/gate.html\x00.png", "forbidden character"),
        ("reports/gate//flights/v3/gate.html", "empty"),
        ("reports/gate/flights/./v3/gate.html", "'.'"),
        ("reports/gate/flights/v3/.hidden.html", "hidden"),
        ("validated/flights/date=2013-01-24/_manifest.json", "only files under reports"),
        ("reports/quarantine/flights/x.json", "only files under reports"),
        ("reports/gate/flights", "only files under reports"),
        ("reports/gate/flights/v3/model.pkl", "not a report file type"),
    ],
)
def test_report_path_refuses_anything_else(lake, rel, why):
    with pytest.raises(ReportPathError, match=why):
        report_path(lake, rel)


@pytest.mark.parametrize("rel", ["reports/gate/flights/v3/escape.html", "reports/gate/flights/outside/secret.html"])
def test_report_path_refuses_symlinks_out_of_the_lake(lake, rel):
    assert os.path.exists(lake.path(*rel.split("/")))  # the file is reachable through the link...
    with pytest.raises(ReportPathError, match="leaves reports/gate/flights/"):
        report_path(lake, rel)  # ...but never served


@pytest.mark.parametrize(
    "rel", ["reports/gate/flights/v3/other.html", "reports/gx/flights/validated/flights/date=2013-01-24/_manifest.json"]
)
def test_report_path_refuses_symlinks_out_of_the_reports_own_folder(lake, rel):
    assert os.path.exists(lake.path(*rel.split("/")))
    with pytest.raises(ReportPathError, match=r"leaves reports/(gate|gx)/flights/"):
        report_path(lake, rel)


KEY = b"k" * 32


@pytest.mark.parametrize(
    ("signed", "asked"),
    [
        ("reports/gx/flights/date=2013-01-24/docs/index.html", "reports/gx/flights/date=2013-01-24/docs/static/a.css"),
        ("reports/gx/flights/date=2013-01-24/docs/index.html", "reports/gx/flights/date=2013-01-24/result.json"),
        ("reports/gate/flights/v3/gate.html", "reports/gate/flights/v3/gate.json"),
        ("reports/drift/flights/decisions/2013-01-24.json", "reports/drift/flights/decisions/2013-01-25.json"),
    ],
)
def test_a_signed_report_link_opens_its_own_folder(signed, asked):
    token = health.sign_report(KEY, signed, now=1000)
    health.check_signature(KEY, token, asked, now=1000 + health.REPORT_LINK_SECONDS - 1)


@pytest.mark.parametrize(
    ("asked", "key", "at", "why"),
    [
        ("reports/gx/flights/date=2013-01-25/docs/index.html", KEY, 1000, "not valid for this file"),
        ("reports/gate/flights/v4/gate.html", KEY, 1000, "not valid for this file"),
        ("reports/gx/other/date=2013-01-24/docs/index.html", KEY, 1000, "not valid for this file"),
        ("reports/gx/flights/date=2013-01-24/docs/index.html", b"x" * 32, 1000, "not valid for this file"),
        ("reports/gx/flights/date=2013-01-24/docs/index.html", KEY, 1000 + 3601, "expired"),
    ],
)
def test_a_signed_report_link_opens_nothing_else(asked, key, at, why):
    token = health.sign_report(KEY, "reports/gx/flights/date=2013-01-24/docs/index.html", now=1000)
    with pytest.raises(health.ReportLinkError, match=why):
        health.check_signature(key, token, asked, now=at)
    for forged in ("", "abc", f"{int(token.split('.')[0]) + 10}.{token.split('.')[1]}", token.split(".")[0] + "."):
        with pytest.raises(health.ReportLinkError):
            health.check_signature(KEY, forged, "reports/gx/flights/date=2013-01-24/docs/index.html", now=1000)


def test_report_path_names_a_missing_report(lake):
    with pytest.raises(ReportNotFound, match="no report"):
        report_path(lake, "reports/gate/flights/v9/gate.html")


def test_lake_rel_only_for_uris_of_this_lake(lake, tmp_path):
    uri = lake.uri(lake.path("reports", "gate", "flights", "v3", "gate.html"))
    assert uri.startswith("file://")
    assert health.lake_rel(lake, uri) == "reports/gate/flights/v3/gate.html"
    assert health.lake_rel(lake, f"file://{tmp_path}/secret.html") is None
    assert health.lake_rel(lake, lake.uri(lake.path("validated", "flights"))) is None
    assert health.lake_rel(lake, None) is None


# -- links ------------------------------------------------------------------------------------------------
def _uri(lake, rel):
    return lake.uri(lake.path(*rel.split("/")))


def test_links_of_each_task(lake):
    docs = _uri(lake, "reports/gx/flights/date=2013-01-24/docs/index.html")
    gate = _uri(lake, "reports/gate/flights/v3/gate.html")
    drift = _uri(lake, "reports/drift/flights/date=2013-01-24/drift.html")
    base = "http://airflow:8080/mlops/"
    cases = {
        ("ingest", "validate"): ({"docs_uri": docs, "rows": 900}, {"Data Docs": base + docs.split("/lake/")[1]}),
        ("train", "train"): (
            {"parent_run_id": "abc", "experiment_id": "7", "model_version": "3"},
            {
                "MLflow run": "http://mlflow:5000/#/experiments/7/runs/abc",
                "Model version": "http://mlflow:5000/#/models/flights/versions/3",
            },
        ),
        ("train", "evaluate"): (
            {"challenger_version": "3", "uris": {"html": gate}},
            {
                "Gate report": base + "reports/gate/flights/v3/gate.html",
                "Model version": URLS.model_version("flights", 3),
            },
        ),
        ("train", "approve"): (  # the HITL step: links from the evaluate result (health.LINK_SOURCE)
            {"challenger_version": "3", "uris": {"html": gate}},
            {
                "Gate report": base + "reports/gate/flights/v3/gate.html",
                "Model version": URLS.model_version("flights", 3),
            },
        ),
        ("train", "promote"): (
            {"version": "3", "to_version": "3", "run_id": "r1", "gate_report_uri": gate},  # promote adds the gate's
            {
                "Model version": URLS.model_version("flights", 3),
                "MLflow run": "http://mlflow:5000/#/runs/r1",
                "Gate report": base + "reports/gate/flights/v3/gate.html",
            },
        ),
        ("rollback", "rollback"): ({"version": "1", "to_version": "1", "run_id": "r2"}, None),
        ("score", "score"): (
            [{"model_version": "2"}, {"model_version": "3"}],
            {"Model version": URLS.model_version("flights", 3)},
        ),
        ("monitor", "monitor"): (
            {"uris": {"html": drift}, "mlflow_run_id": "m1", "model_version": "3"},
            {
                "Evidently report": base + "reports/drift/flights/date=2013-01-24/drift.html",
                "MLflow run": "http://mlflow:5000/#/runs/m1",
                "Model version": URLS.model_version("flights", 3),
            },
        ),
        ("monitor", "decide"): (
            {"report_uri": drift, "mlflow_run_id": "m1"},
            {
                "Evidently report": base + "reports/drift/flights/date=2013-01-24/drift.html",
                "MLflow run": URLS.mlflow_run("m1"),
            },
        ),
        ("monitor", "request_retrain"): ({"day": "2013-01-24"}, {}),
        ("ingest", "extract"): ({"uri": _uri(lake, "raw/flights/date=2013-01-24")}, {}),
    }
    for (kind, task), (value, expected) in cases.items():
        got = health.task_links("flights", kind, task, value, URLS, lake)
        if expected is None:
            expected = {"Model version": URLS.model_version("flights", 1), "MLflow run": URLS.mlflow_run("r2")}
        assert got == expected, (kind, task)
        assert set(got) <= set(health.LINK_NAMES)


def test_no_links_without_a_result_or_for_uris_outside_the_lake(lake, tmp_path):
    assert health.task_links("flights", "train", "evaluate", None, URLS, lake) == {}
    outside = {"uris": {"html": f"file://{tmp_path}/secret.html"}, "challenger_version": None}
    assert health.task_links("flights", "train", "evaluate", outside, URLS, lake) == {}


def test_split_dag_id_knows_only_spec_datasets_and_dag_kinds():
    assert health.split_dag_id("flights_train", ["flights"]) == ("flights", "train")
    assert health.split_dag_id("my_data_monitor", ["my_data"]) == ("my_data", "monitor")
    assert health.split_dag_id("other_train", ["flights"]) is None
    assert health.split_dag_id("flights_backfill", ["flights"]) is None


def test_public_urls_from_the_environment(monkeypatch):
    monkeypatch.delenv("MLOPS_MLFLOW_PUBLIC_URL", raising=False)
    monkeypatch.delenv("MLOPS_AIRFLOW_PUBLIC_URL", raising=False)
    assert PublicUrls.from_env() == PublicUrls("http://localhost:5000", "")
    # links relative to the page's origin: base_url's host would be another origin (no session) from 127.0.0.1
    assert PublicUrls.from_env("http://localhost:8080/").airflow == ""
    assert PublicUrls.from_env("http://localhost:8080/airflow/").report("reports/gate/f/v1/gate.html") == (
        "/airflow/mlops/reports/gate/f/v1/gate.html"
    )
    monkeypatch.setenv("MLOPS_MLFLOW_PUBLIC_URL", "https://mlflow.example.org/")
    monkeypatch.setenv("MLOPS_AIRFLOW_PUBLIC_URL", "https://airflow.example.org")
    urls = PublicUrls.from_env("http://ignored:8080")
    assert urls.model_version("flights", "2") == "https://mlflow.example.org/#/models/flights/versions/2"
    assert urls.report("reports/gate/flights/v2/gate.html") == (
        "https://airflow.example.org/mlops/reports/gate/flights/v2/gate.html"
    )
    with pytest.raises(ReportPathError, match="only files under reports/"):
        urls.report("validated/flights/date=2013-01-01/_manifest.json")
    monkeypatch.setenv("MLOPS_MLFLOW_PUBLIC_URL", "javascript:alert(1)")
    with pytest.raises(ValueError, match="MLOPS_MLFLOW_PUBLIC_URL must be an http"):
        PublicUrls.from_env()


# -- the page ---------------------------------------------------------------------------------------------
def _health(**over):
    base = {
        "dataset": "flights",
        "description": "d",
        "champion": None,
        "challenger": None,
        "last_gate": None,
        "gate_reports": [],
        "history": [],
        "monitoring": [],
        "data_docs": [],
        "thresholds": {
            "max_roc_auc_drop": 0.03,
            "max_brier_rise": 0.02,
            "max_prediction_drift": 0.12,
            "max_weighted_drift": 0.3,
            "max_drift_share": 0.5,
        },
        "errors": {},
    }
    return base | over


def test_page_escapes_every_value():
    from include.mlops.health_html import render_page

    evil = "<script>alert(1)</script>"
    entry = {
        "seq": 1, "action": "rollback", "version": "1", "from_version": "2", "to_version": "1",
        "when": "2013-03-01T00:00:00+00:00", "reason": evil, "dag_run": evil, "approver": evil, "run_id": "r",
    }  # fmt: skip
    page = render_page(_health(history=[entry], errors={"registry": evil}), ["flights"], URLS)
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the page's own framed-links helper


def test_page_links_runs_and_cards_and_folds_long_lists():
    from include.mlops.health_html import render_page

    def entry(seq, action, version, frm, to, run):
        when = "2013-03-01T00:00:00+00:00"
        return {"seq": seq, "action": action, "version": version, "from_version": frm, "to_version": to,
                "when": when, "reason": "r", "dag_run": run, "approver": None, "run_id": "a"}  # fmt: skip

    history = [entry(1, "promote", "1", None, "1", "manual__1"), entry(2, "reject", "2", "1", "1", "asset__2"),
               entry(3, "rollback", "1", "1", "1", "manual__3")]  # fmt: skip
    docs = [{"day": f"2013-01-{d:02d}", "status": "passed", "docs": None} for d in range(1, 21)]
    tags = {"window_start": "2013-01-04", "window_end": "2013-01-24", "trained_because": "manual by ana"}
    champion = {"version": "1", "run_id": "r1", "created": "2013", "tags": tags, "metrics": {}}
    page = render_page(
        _health(history=history, data_docs=docs, champion=champion, challenger=dict(champion)), ["flights"], URLS
    )
    assert 'href="http://airflow:8080/dags/flights_train/runs/manual__1"' in page  # DAG runs are links
    assert 'href="http://airflow:8080/dags/flights_rollback/runs/manual__3"' in page
    assert "stays v1" in page  # a rejection, not "v1 → v1"
    assert "v1 → v1" not in page
    assert 'href="http://airflow:8080/mlops/card/flights/2"' in page  # every version has its card
    assert "the champion itself: no open challenger" in page  # one version, one card
    assert "<summary>12 more</summary>" in page  # 20 Data Docs days: 8 shown, the rest folded
    assert "data 2013-01-04 .. 2013-01-24" in page  # the data the champion was trained on
    assert "trained: manual by ana" in page


def test_page_plots_monitoring_with_retrain_markers():
    from include.mlops.health_html import render_page

    def point(day, auc, retrain):
        metrics = {"roc_auc": auc, "baseline_roc_auc": 0.7, "brier": 0.2, "baseline_brier": 0.18,
                   "prediction_drift": 0.05, "weighted_drift": 0.1, "drift_share": 0.6}  # fmt: skip
        decision = {"retrain": retrain, "alert": retrain, "triggers": ["roc_auc_drop"] if retrain else [],
                    "blocked_by": None, "reasons": ["r"]}  # fmt: skip
        return {"day": day, "model_version": "1", "metrics": metrics, "mlflow_run_id": "m", "html": None,
                "decision": decision, "decision_json": None}  # fmt: skip

    page = render_page(_health(monitoring=[point("2013-01-01", 0.7, False), point("2013-01-08", 0.6, True)]), [], URLS)
    assert page.count('<svg class="chart"') == 3
    assert "retrain requested (roc_auc_drop)" in page
    empty = render_page(_health(), ["flights"], URLS)
    assert "No monitoring runs yet" in empty
    assert "No gate decision yet" in empty


def test_plugin_module_is_cheap_to_import():
    """Every Airflow component loads the plugins folder: the plugin must not pull in FastAPI routes, MLflow,
    pandas or the library at import."""
    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('mlflow', 'pandas', 'sklearn', 'evidently', 'great_expectations', "
        "'include.mlops.health') if m in sys.modules]; print(heavy)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "plugins" / "mlops_ui.py")],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(
    ("accept", "browser"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # Chromium/Firefox navigation
        ("application/json", False),
        ("application/json, text/html", False),
        ("*/*", False),  # curl
        (None, False),
    ],
)
def test_only_browser_navigations_are_sent_to_the_login_page(accept, browser):
    assert health.wants_html(accept) is browser


# -- the shadow challenger --------------------------------------------------------------------------------
DAYS = ("2013-04-01", "2013-04-08", "2013-04-15", "2013-04-22", "2013-04-29")


def _shadow(version, verdict, auc, brier, **over):
    """``metrics.shadow`` of monitor.json as the monitor writes it."""
    gain = round(auc - 0.684, 3)
    return {
        "version": version, "since": "2013-04-01", "window": ["2013-03-25", "2013-04-14"], "rows": 12034,
        "roc_auc": auc + 0.001, "champion_roc_auc": 0.684, "brier": brier, "champion_brier": 0.158,
        "auc_gain": gain, "auc_gain_interval": [gain - 0.007, gain + 0.007],
        "brier_change": -0.007, "brier_change_interval": [-0.010, -0.004],
        "window_roc_auc": auc, "window_brier": brier, "verdict": verdict,
        "detail": f"v{version} vs champion v3: ROC AUC {gain:+.3f}", "min_gain": 0.01, "max_brier_rise": 0.01,
        "stored": {"days": 7, "compared_rows": 5800, "max_abs_diff": 0.0},
    } | over  # fmt: skip


# Day by day: no shadow yet, v6 not better, no comparison (a gap), v7 better and proposed, v7 again.
SHADOWS = (
    None,
    _shadow("6", "not better", 0.690, 0.157),
    None,
    _shadow("7", "better", 0.710, 0.149),
    _shadow("7", "not better", 0.695, 0.152, window=["2013-04-08", "2013-04-28"], rows=9876),
)
PROPOSED = {"2013-04-22": "7"}


@pytest.fixture
def shadow_lake(tmp_path, spec):
    """A lake with five monitored days following the monitor's contract: monitor.json and the recorded decision."""
    from include.mlops import monitoring

    lake = Lake(str(tmp_path / "lake"))
    for day, shadow in zip(DAYS, SHADOWS, strict=True):
        metrics = {"roc_auc": 0.684, "baseline_roc_auc": 0.70, "brier": 0.158, "baseline_brier": 0.15,
                   "prediction_drift": 0.05, "weighted_drift": 0.1, "drift_share": 0.6, "shadow": shadow}  # fmt: skip
        lake.write_json(f"{monitoring.report_dir(spec, day)}/monitor.json", {"model_version": "3", "metrics": metrics})
        decision = {"day": day, "retrain": False, "alert": False, "triggers": [], "blocked_by": None,
                    "reasons": [], "propose_shadow": PROPOSED.get(day)}  # fmt: skip
        lake.write_json(f"{monitoring.decisions_dir(spec)}/{day}.json", decision)
    return lake


def _version(v, **tags):
    return {"version": v, "run_id": f"r{v}", "created": "2026-12-05T00:00:00+00:00",
            "tags": {"gate.decision": "rejected", **tags}, "metrics": {"test_roc_auc": 0.7}}  # fmt: skip


@pytest.fixture
def registry_with(monkeypatch):
    """``registry.current`` answering with the given champion / challenger / shadow (no MLflow)."""
    from include.mlops import feature_store, registry

    def use(**current):
        monkeypatch.setattr(registry, "current", lambda spec, uri=None: {"champion": _version("3")} | current)
        monkeypatch.setattr(registry, "history", lambda spec, uri=None: [])
        monkeypatch.setattr(feature_store, "catalog", lambda spec, lake, uri=None: None)

    return use


def test_monitoring_series_carries_the_shadow_comparison_and_the_proposal(shadow_lake, spec):
    points = health.monitoring_series(spec, shadow_lake)
    assert [p["day"] for p in points] == list(DAYS)
    assert [p["metrics"]["shadow"] for p in points] == list(SHADOWS)
    assert [p["decision"]["propose_shadow"] for p in points] == [None, None, None, "7", None]


def test_model_health_shows_the_shadow_and_its_latest_comparison(shadow_lake, spec, registry_with):
    registry_with(shadow=_version("7", **{"shadow.since": "2026-12-05T01:00:00+00:00"}))
    h = health.model_health(spec, shadow_lake)
    assert h["errors"] == {}
    assert h["shadow"]["version"] == "7"
    c = h["shadow_comparison"]
    assert (c["day"], c["verdict"], c["rows"], c["champion_version"]) == ("2013-04-29", "not better", 9876, "3")
    assert c["proposed_on"] == ["2013-04-22"]
    # v6 was compared, but is not the shadow any more; a shadow not compared yet has no comparison
    assert health.shadow_comparison(h["monitoring"], "6")["day"] == "2013-04-08"
    assert health.shadow_comparison(h["monitoring"], "8") is None
    registry_with()
    h = health.model_health(spec, shadow_lake)
    assert (h["shadow"], h["shadow_comparison"]) == (None, None)


def _chart(page, title):
    start = page.index(f'aria-label="{title}"')
    return page[start : page.index("</svg>", start)]


def test_page_draws_the_shadow_beside_the_champion_with_gaps(shadow_lake, spec, registry_with):
    from include.mlops.health_html import COLORS, render_page

    registry_with(shadow=_version("7"))
    page = render_page(health.model_health(spec, shadow_lake), ["flights"], URLS)
    teal = COLORS["teal"]
    for title, day4, champion in (
        ("ROC AUC (delayed labels)", 0.71, 0.684),
        ("Brier score (delayed labels)", 0.149, 0.158),
    ):
        chart = _chart(page, title)
        assert ">shadow v6, v7</text>" in chart  # the legend names the versions seen
        # one point per compared day, with version, value and the champion's on the same rows
        assert chart.count(f'fill="{teal}"') == 3
        assert f"shadow v7 2013-04-22: {day4:.4f} (champion v3: {champion:.4f}; better)" in chart
        assert "shadow v6 2013-04-08" in chart
        # the line breaks where no shadow was compared: v6's lone day is not joined to v7's two
        (line,) = [x for x in chart.split("<polyline")[1:] if f'stroke="{teal}"' in x]
        assert len(line.split('points="')[1].split('"')[0].split()) == 2
        assert 'stroke-dasharray="7 3"' in line
        assert "2013-04-22: shadow v7 proposed its promotion" in chart  # the proposal marked
    # no shadow ever compared: no shadow line, no legend entry
    h = health.model_health(spec, shadow_lake)
    for p in h["monitoring"]:
        p["metrics"]["shadow"] = p["decision"]["propose_shadow"] = None
    plain = render_page(h, ["flights"], URLS)
    assert "shadow v" not in _chart(plain, "ROC AUC (delayed labels)")
    assert teal not in _chart(plain, "Brier score (delayed labels)")


def _shadow_card(page):
    """The shadow's card: the last of the cards section."""
    start = page.index('data-role="shadow"')
    return page[start : page.index("<h2>", start)]


def test_shadow_card_shows_the_comparison_the_bars_the_verdict_and_the_proposal(spec, shadow_lake, registry_with):
    from include.mlops.health_html import render_page

    registry_with(shadow=_version("7", **{"shadow.reason": "rejected on a noisy test week"}))
    h = health.model_health(spec, shadow_lake)
    # the latest comparison is the proposing day's
    h["monitoring"] = h["monitoring"][:4]
    h["shadow_comparison"] = health.shadow_comparison(h["monitoring"], "7")
    card = _shadow_card(render_page(h, ["flights"], URLS))
    assert 'Shadow: <span class="version">v7</span>' in card
    assert 'href="http://airflow:8080/mlops/card/flights/7"' in card  # its model card
    assert "shadow since 2013-04-01: rejected on a noisy test week" in card
    assert "compared 2013-04-22 on 12,034 labelled rows of 2013-03-25 .. 2013-04-14" in card
    assert "<th>shadow v7</th><th>champion v3</th>" in card
    assert "<th>ROC AUC</th><td>0.711</td><td>0.684</td>" in card
    assert "<th>Brier</th><td>0.149</td><td>0.158</td>" in card
    assert "ROC AUC gain <b>+0.026</b> [+0.019, +0.033] (needs ≥ +0.010)" in card
    assert "Brier change <b>-0.007</b> [-0.010, -0.004] (needs ≤ +0.010)" in card
    assert '<span class="badge pass">better</span>' in card
    assert "proposed its promotion on 2013-04-22" in card
    assert "stored shadow scores re-checked: 7 days, 5,800 rows, max |Δ| 0.0000" in card
    # a week later, v7 compared again and not better: the card shows that, and still when it proposed
    later = _shadow_card(render_page(health.model_health(spec, shadow_lake), ["flights"], URLS))
    assert '<span class="badge none">not better</span>' in later
    assert "compared 2013-04-29 on 9,876 labelled rows of 2013-04-08 .. 2013-04-28" in later
    assert "proposed its promotion on 2013-04-22" in later


def test_shadow_card_without_a_shadow_or_a_comparison(spec, shadow_lake, registry_with):
    from include.mlops.health_html import render_page

    registry_with()
    page = render_page(health.model_health(spec, shadow_lake), ["flights"], URLS)
    assert '<h3>Shadow</h3><p class="muted">no shadow</p>' in _shadow_card(page)
    registry_with(shadow=_version("8", **{"shadow.since": "2026-12-05T01:00:00+00:00"}))
    card = _shadow_card(render_page(health.model_health(spec, shadow_lake), ["flights"], URLS))
    assert "v8" in card
    assert "shadow since 2026-12-05" in card
    assert "not compared with the champion yet" in card
    assert "proposed" not in card
    # the shadow is the open challenger: one full card, the shadow's says so and keeps its comparison
    registry_with(challenger=_version("7"), shadow=_version("7"))
    card = _shadow_card(render_page(health.model_health(spec, shadow_lake), ["flights"], URLS))
    assert "the challenger above" in card
    assert 'href="http://airflow:8080/mlops/card/flights/7"' in card
    assert "compared 2013-04-29" in card


def test_monitoring_table_has_the_shadow_verdict_and_proposal_per_day(spec, shadow_lake, registry_with):
    from include.mlops.health_html import render_page

    registry_with(shadow=_version("7"))
    page = render_page(health.model_health(spec, shadow_lake), ["flights"], URLS)
    table = page[page.index('<table id="monitoring">') :]
    table = table[: table.index("</table>")]
    assert "<th>shadow vs champion</th>" in table
    rows = {r.split("</td>")[0].removeprefix("<td>"): r for r in table.split("<tr>")[2:]}
    assert '<span class="muted">–</span>' in rows["2013-04-01"]  # no shadow that day
    assert '<span class="muted">–</span>' in rows["2013-04-15"]
    assert 'v6 <span class="badge none">not better</span>' in rows["2013-04-08"]
    assert 'v7 <span class="badge pass">better</span>' in rows["2013-04-22"]
    assert "ROC AUC +0.026 [+0.019, +0.033]" in rows["2013-04-22"]
    assert "proposed v7's promotion" in rows["2013-04-22"]
    assert "proposed" not in rows["2013-04-29"]
    assert 'title="v7 vs champion v3: ROC AUC +0.026"' in rows["2013-04-22"]  # the monitor's own words


def test_shadow_values_are_escaped(spec, shadow_lake, registry_with):
    from include.mlops.health_html import render_page

    evil = "<script>alert(1)</script>"
    registry_with(shadow=_version(evil, **{"shadow.reason": evil, "shadow.since": evil}))
    h = health.model_health(spec, shadow_lake)
    bad = _shadow(evil, evil, 0.7, 0.15, detail=f'"{evil}', window=[evil, evil], since=evil)
    for p in h["monitoring"]:
        p["metrics"]["shadow"] = bad
        p["decision"]["propose_shadow"] = evil
    h["shadow_comparison"] = health.shadow_comparison(h["monitoring"], evil)
    page = render_page(h, ["flights"], URLS)
    assert h["shadow_comparison"]["verdict"] == evil  # it is on the page, ...
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") > 10
    assert evil not in page  # ... escaped everywhere
    assert page.count("<script>") == 1


def test_history_shows_shadow_entries_with_the_champion_kept():
    from include.mlops.health_html import CSS, render_page

    def entry(seq, action, version):  # registry.set_shadow / clear_shadow: from = to = the champion
        return {"seq": seq, "action": action, "version": version, "from_version": "3", "to_version": "3",
                "when": "2013-04-01T00:00:00+00:00", "reason": "r", "dag_run": None, "approver": None,
                "run_id": "a"}  # fmt: skip

    page = render_page(_health(history=[entry(1, "shadow", "7"), entry(2, "unshadow", "7")]), ["flights"], URLS)
    history = page[page.index('<table id="history">') :]
    assert '<span class="badge shadow">shadow</span>' in history
    assert '<span class="badge unshadow">unshadow</span>' in history
    assert history.count("stays v3") == 2
    assert ".badge.shadow {" in CSS  # a coloured badge: the badge text is white
