"""The Airflow UI integration in a real browser: headless Chromium (Debian's package) driven by Playwright against
an ``airflow api-server`` this module starts (tests/ui/conftest.py), with content made by the real DAGs: a
champion promoted by flights_train's gate, an ingested day with Data Docs, two monitoring runs.

Log in through the login form, open the "Model health" view from the navigation, open a task's extra link,
and check what a person would see; screenshots go to a pytest tmp folder and docs/screenshots/. Without a
token the plugin answers 401/403, and nothing outside the lake's reports is ever served."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def _links(stack, token: str, dag_id: str, run_id: str, task_id: str) -> dict:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/links"
    status, body, _ = stack.get(path, token)
    assert status == 200, body
    return {k: v for k, v in json.loads(body)["extra_links"].items() if v}


# -- HTTP: authentication and path validation ---------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/mlops/health/",
        "/mlops/health/flights",
        "/mlops/api/health/flights",
        "/mlops/{gate}/gate.html",
        "/mlops/card/flights/1",
    ],
)
def test_plugin_refuses_requests_without_a_valid_token(stack, path):
    path = path.format(gate=stack.gate)
    status, body, _ = stack.get(path)
    assert status == 401, body
    status, body, _ = stack.get(path, token="not-a-jwt")
    assert status in (401, 403), body
    assert b"Gate report" not in body
    assert b"Model health" not in body


@pytest.mark.parametrize("path", ["/mlops/health/flights", "/mlops/{gate}/gate.html?x=1"])
def test_an_anonymous_browser_lands_on_the_login_page_and_an_api_client_gets_401(stack, path):
    path = path.format(gate=stack.gate)
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    status, body, headers = stack.get(path, accept=browser)
    assert status == 303, body
    assert headers["location"] == "/auth/login?" + urlencode({"next": path})
    assert stack.get(headers["location"], accept=browser)[0] == 200  # Airflow's login page
    status, body, _ = stack.get(path, accept="application/json")
    assert status == 401, body
    assert b"Not authenticated" in body


def test_plugin_serves_health_json_with_a_bearer_token(stack):
    status, body, _ = stack.get("/mlops/api/health/flights", stack.token())
    assert status == 200, body
    h = json.loads(body)
    assert h["champion"]["version"] == "1"
    assert h["last_gate"]["report"]["decision"] == "passed"
    assert [e["action"] for e in h["history"]] == ["promote"]
    assert [p["day"] for p in h["monitoring"]] == ["2013-01-22", "2013-01-24"]
    assert all(p["decision"] is not None for p in h["monitoring"])
    # one version, promoted: nothing for a shadow to be, nothing compared
    assert (h["shadow"], h["shadow_comparison"]) == (None, None)
    assert all(p["metrics"].get("shadow") is None for p in h["monitoring"])
    assert [d["day"] for d in h["data_docs"]] == ["2013-01-24"]
    assert h["errors"] == {}


@pytest.mark.parametrize(
    "path",
    [
        "/mlops/{gate}/../../../../../etc/passwd",
        "/mlops/reports/../../../etc/passwd",
        "/mlops/reports/gate/flights/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/mlops/reports/gate%2fflights%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/mlops/reports/gate/flights/%252e%252e/%252e%252e/%252e%252e/etc/passwd",
        "/mlops/reports//etc/passwd",
        "/mlops/reports/%2Fetc%2Fpasswd",
        "/mlops/reports/../validated/flights/date=2013-01-01/_manifest.json",
        "/mlops/{gate}/leak.html",  # a symlink to a file outside the lake
        "/mlops/reports/gate/nosuchdataset/v1/gate.html",
    ],
)
def test_nothing_outside_the_lake_reports_is_served(stack, path):
    path = path.replace("{gate}", stack.gate)
    status, body, _ = stack.get(path, stack.token())
    assert status in (400, 404), (status, body[:200])
    assert stack.outside_secret.encode() not in body
    assert b"root:" not in body


def test_extra_links_come_from_the_tasks_results(stack):
    token = stack.token()
    runs = stack.runs
    ingest = _links(stack, token, "flights_ingest", runs["ingest"].run_id, "validate")
    assert set(ingest) == {"Data Docs"}
    assert ingest["Data Docs"] == "/mlops/reports/gx/flights/date=2013-01-24/docs/index.html"  # relative
    train = _links(stack, token, "flights_train", runs["train"].run_id, "train")
    assert set(train) == {"MLflow run", "Model version"}
    assert re.fullmatch(r"http://127\.0\.0\.1:5000/#/experiments/\d+/runs/[0-9a-f]{32}", train["MLflow run"])
    assert train["Model version"] == "http://127.0.0.1:5000/#/models/flights/versions/1"
    evaluate = _links(stack, token, "flights_train", runs["train"].run_id, "evaluate")
    assert evaluate["Gate report"] == f"/mlops/{stack.gate}/gate.html"
    promote = _links(stack, token, "flights_train", runs["train"].run_id, "promote")
    assert promote["Model version"].endswith("/versions/1")
    monitor = _links(stack, token, "flights_monitor", runs["monitor 2013-01-24"].run_id, "monitor")
    assert monitor["Evidently report"] == "/mlops/reports/drift/flights/date=2013-01-24/drift.html"
    assert "MLflow run" in monitor
    assert _links(stack, token, "flights_monitor", runs["monitor 2013-01-24"].run_id, "request_retrain") == {}
    # every report link (with the token) redirects to its signed URL, served sandboxed as HTML without a token
    for url in (ingest["Data Docs"], evaluate["Gate report"], monitor["Evidently report"]):
        status, body, headers = stack.get(url, token)
        assert status == 303, (url, body[:200])
        signed = headers["location"]
        assert re.fullmatch(r"/mlops/r/\d+\.[\w-]{43}/reports/.+", signed), signed
        assert signed.endswith(url.removeprefix("/mlops/"))
        status, body, headers = stack.get(signed)
        assert status == 200, signed
        assert headers["content-type"].startswith("text/html")
        assert headers["content-security-policy"].startswith("sandbox allow-scripts allow-popups allow-downloads;")
        assert "allow-same-origin" not in headers["content-security-policy"]
        assert b"<html" in body[:2000].lower()


def test_a_signed_report_url_opens_only_its_own_folder(stack):
    _, _, headers = stack.get(f"/mlops/{stack.gate}/gate.html", stack.token())
    token = headers["location"].split("/")[3]
    assert stack.get(f"/mlops/r/{token}/{stack.gate}/gate.json")[0] == 200  # same folder
    for other in (
        "reports/gx/flights/date=2013-01-24/docs/index.html",  # another report
        f"{stack.gate}/leak.html",  # a symlink out of the lake, in the signed folder
    ):
        status, body, _ = stack.get(f"/mlops/r/{token}/{other}")
        assert status in (400, 403), (other, status)
        assert stack.outside_secret.encode() not in body
    forged = token.split(".")[0] + "." + "A" * 43
    assert stack.get(f"/mlops/r/{forged}/{stack.gate}/gate.html")[0] == 403
    later = f"{int(token.split('.')[0]) + 3600}.{token.split('.')[1]}"  # a longer life is another signature
    assert stack.get(f"/mlops/r/{later}/{stack.gate}/gate.html")[0] == 403


# -- the browser ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def page(stack, browser):
    """A logged-in page: through the SimpleAuthManager login form, as a person would."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # Offline machine: requests to public CDNs (GX Data Docs load Bootstrap/jQuery from them) would hang until a TCP
    # timeout and hold up page loads on a busy machine; refuse anything that is not loopback at once.
    context.route(re.compile(r"^https?://(?!(127\.0\.0\.1|localhost)[:/])"), lambda route: route.abort())
    p = context.new_page()
    p.set_default_timeout(60_000)
    p.goto(stack.url + "/")
    p.wait_for_url(re.compile(r".*/auth/login.*"))
    p.get_by_label(re.compile("username", re.I)).fill(stack.user)
    p.get_by_label(re.compile("password", re.I)).fill(stack.password)
    p.get_by_role("button", name=re.compile("sign in|log ?in", re.I)).click()
    p.wait_for_url(lambda url: "/auth/login" not in url)
    yield p
    context.close()


def test_model_health_view_in_the_navigation(stack, page, shots):
    page.get_by_role("link", name="Model health").first.click()
    page.wait_for_url(re.compile(r".*/plugin/model-health"))
    frame = page.frame_locator("iframe")
    frame.locator("h1").wait_for()
    assert frame.locator("h1").inner_text() == "Model health: flights"
    champion = frame.locator('[data-role="champion"]')
    assert champion.locator(".version").inner_text() == "v1"
    assert "passed" in champion.inner_text()
    shadow = frame.locator('[data-role="shadow"]')  # one version, promoted: nothing to shadow
    assert shadow.locator("h3").inner_text() == "Shadow"
    assert "no shadow" in shadow.inner_text()
    assert "PASS" in frame.locator("#last-gate").inner_text().upper()
    history = frame.locator("#history").inner_text()
    assert "promote" in history
    assert "none → v1" in history
    assert frame.locator("svg.chart").count() == 3
    monitoring = frame.locator("#monitoring").inner_text()
    assert "2013-01-24" in monitoring
    assert "2013-01-22" in monitoring
    assert "shadow vs champion" in monitoring
    reports = frame.locator("#reports")
    for text in ("v1", "2013-01-24"):
        assert reports.get_by_role("link", name=text).count() >= 1
    shots(page, "model-health", full_page=False)
    # MLflow links open a new tab even from inside the UI's sandboxed iframe (MLflow itself is not running
    # here: the request is only recorded).
    opened = []
    page.context.route("http://127.0.0.1:5000/**", lambda route: (opened.append(route.request.url), route.abort()))
    with page.context.expect_page() as new_tab:
        champion.get_by_role("link", name="MLflow model version").click()
    new_tab.value.close()
    assert opened == ["http://127.0.0.1:5000/"] or opened[0].startswith("http://127.0.0.1:5000/")
    # A report opened from the view is served inside the same authenticated UI.
    frame.locator("#last-gate").get_by_role("link", name="gate report").click()
    frame.locator("h1").filter(has_text="Gate report: flights v1").wait_for()
    assert "PASSED" in frame.locator(".banner").inner_text()
    # The whole view as a page of its own (the iframe above scrolls inside the UI).
    page.goto(f"{stack.url}/mlops/health/flights")
    page.locator("svg.chart").first.wait_for()
    shots(page, "model-health-full")


def test_model_card_opens_from_model_health(stack, page, shots, spec):
    """The champion's card, from the Model health view inside the UI: what it was built from, why, how the gate
    judged it, who approved it; served sandboxed like a report, long lists folded."""
    page.goto(f"{stack.url}/plugin/model-health")
    frame = page.frame_locator("iframe")
    frame.locator('[data-role="champion"]').get_by_role("link", name="model card").click()
    frame.locator("h1").filter(has_text="Model card: flights v1").wait_for()
    assert frame.locator("#status").inner_text() == "champion"
    body = frame.locator("body").inner_text()
    route = next(f for f in spec.features if f.name == "route_delay_rate")
    for text in (
        "Purpose",
        spec.description.split()[0],
        route.description,  # features with their descriptions from the spec as trained
        spec.known_limits[0][:50],  # known limits from the spec
        "ROC AUC [95 % CI]",
        "Gate record",
        "check min_roc_auc",
        "Approvals and registry events",
        stack.runs["train"].run_id[:20],  # why trained: the DAG run that did it
    ):
        assert text in body, text
    partitions = frame.locator('[data-section="partitions"] details')
    assert re.fullmatch(r"2\d rows", partitions.locator("summary").inner_text())  # 21 days + 3 of history: folded
    assert not partitions.get_attribute("open")
    status, body, headers = stack.get("/mlops/card/flights/1", stack.token())
    assert status == 200
    assert headers["content-security-policy"].startswith("sandbox ")
    assert b"<script" not in body.lower()
    assert stack.get("/mlops/card/flights/99", stack.token())[0] == 404
    assert stack.get("/mlops/card/flights/..%2f1", stack.token())[0] == 404
    page.goto(f"{stack.url}/mlops/card/flights/1")
    page.locator("h1").wait_for()
    shots(page, "model-card")


def test_task_extra_link_opens_the_gate_report(stack, page, shots):
    run_id = stack.runs["train"].run_id
    # The task instance's Details tab lists its extra links.
    page.goto(f"{stack.url}/dags/flights_train/runs/{quote(run_id, safe='')}/tasks/evaluate/details")
    link = page.get_by_role("link", name="Gate report")
    link.wait_for()
    assert link.get_attribute("href") == f"/mlops/{stack.gate}/gate.html"  # relative: any host works
    assert page.get_by_role("link", name="Model version").get_attribute("href").endswith("/models/flights/versions/1")
    shots(page, "extra-links", full_page=False)
    link.click()
    page.wait_for_url("**/gate.html")
    assert page.locator("h1").inner_text() == "Gate report: flights v1"
    assert "PASSED" in page.locator(".banner").inner_text()
    shots(page, "gate-report")


def test_from_localhost_an_anonymous_report_link_goes_through_the_login_page_to_the_report(stack, browser):
    """The UI opened as localhost (the api-server's base_url says 127.0.0.1): an anonymous browser asking for a
    report link lands on Airflow's login page, and after logging in on the report itself."""
    context = browser.new_context()
    try:
        p = context.new_page()
        p.set_default_timeout(60_000)
        p.goto(stack.url.replace("127.0.0.1", "localhost") + f"/mlops/{stack.gate}/gate.html")
        p.wait_for_url(re.compile(r"^http://localhost:\d+/auth/login\?next=.*gate\.html"))
        p.get_by_label(re.compile("username", re.I)).fill(stack.user)
        p.get_by_label(re.compile("password", re.I)).fill(stack.password)
        p.get_by_role("button", name=re.compile("sign in|log ?in", re.I)).click()
        p.wait_for_url(re.compile(r"^http://localhost:\d+/mlops/r/.*/gate\.html$"))
        assert p.locator("h1").inner_text() == "Gate report: flights v1"
    finally:
        context.close()


def test_data_docs_and_evidently_reports_render_inside_the_ui(stack, page, shots):
    page.goto(f"{stack.url}/plugin/model-health")
    frame = page.frame_locator("iframe")
    frame.locator("#reports").get_by_role("link", name="2013-01-24").last.click()  # the GX Data Docs card
    frame.get_by_text("Expectation Suites").first.wait_for()
    # A page of the Data Docs reached from their own index, still inside the UI's iframe. (Their menus are drawn by
    # scripts from CDNs this offline machine cannot load, so the navigation is started from the page itself.)
    docs = next(f for f in page.frames if f.url.endswith("/docs/index.html"))
    docs.evaluate("url => location.assign(url)", docs.url.rsplit("/", 1)[0] + "/expectations/flights/flights.html")
    frame.get_by_text("Expectation Suite Name").first.wait_for()
    assert "Must have greater than or equal to 300" in frame.locator("body").inner_text()
    assert "Not authenticated" not in frame.locator("body").inner_text()
    shots(page, "data-docs", publish=False)
    page.goto(f"{stack.url}/mlops/reports/drift/flights/date=2013-01-24/drift.html")
    page.get_by_text(re.compile("drift", re.I)).first.wait_for()
    shots(page, "evidently-report", publish=False)


# -- reports cannot run script in the Airflow origin (docs/security.md) -----------------------------------------
def _dag_runs(stack, token: str, dag_id: str) -> int:
    status, body, _ = stack.get(f"/api/v2/dags/{dag_id}/dagRuns", token)
    assert status == 200, body
    return json.loads(body)["total_entries"]


ATTRS = "() => Object.fromEntries([...document.documentElement.attributes].map(a => [a.name, a.value]))"


def _open_report(page, stack, rel: str, dialogs: list) -> object:
    """``rel`` opened in the logged-in browser (``page``: a new tab of the session) through the authenticated
    route; the frame it ends in. Every dialog the page opens is recorded in ``dialogs``."""
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{stack.url}/mlops/{rel}")
    page.wait_for_url(re.compile(r".*/mlops/r/\d+\.[\w-]+/reports/.*"))
    page.wait_for_load_state("load")
    page.wait_for_timeout(1500)  # time for any fetch the page starts to finish
    return page.main_frame


@pytest.fixture
def tab(page):
    """A new tab of the logged-in session."""
    p = page.context.new_page()
    p.set_default_timeout(60_000)
    yield p
    p.close()


def test_xss_in_a_validated_value_is_escaped_in_the_real_evidently_report(stack, tab, shots):
    """The payload passed validation (dest has only a not-null check) and went through flights_monitor: the
    drift report carries it as data, nothing runs, and the report still draws."""
    from tests.ui.conftest import XSS_DAY

    rel = f"reports/drift/flights/date={XSS_DAY}/drift.html"
    raw = stack.lake.fs.cat_file(stack.lake.path(*rel.split("/"))).decode()
    assert "</script><script>alert('xss')" not in raw
    assert "\\u003c/script>\\u003cscript>alert('xss')" in raw  # it is there, escaped: the monitor saw the payload
    token = stack.token()
    before = _dag_runs(stack, token, "flights_train")
    dialogs: list[str] = []
    frame = _open_report(tab, stack, rel, dialogs)
    tab.get_by_text(re.compile("drift", re.I)).first.wait_for()
    attrs = frame.evaluate(ATTRS)
    assert not {"data-leak", "data-blocked", "data-post", "data-post-blocked"} & set(attrs), attrs  # never ran
    assert dialogs == []
    assert _dag_runs(stack, token, "flights_train") == before
    shots(tab, "xss-evidently-escaped", publish=False)


@pytest.mark.parametrize("kind", ["evidently", "data-docs"])
def test_script_that_does_run_in_a_report_cannot_reach_the_airflow_session(stack, tab, shots, kind):
    """The second wall, for markup that gets into a report anyway: the same Evidently page without our escaping
    (what Evidently writes), and a real Data Docs page with the payload where GX renders an upload's column header
    raw. Served sandboxed, the script runs in an opaque origin: no dialog, the API read and the DAG trigger both
    fail (before the sandbox, the read returned the DAG list and the POST went through)."""
    from tests.ui.conftest import XSS, XSS_DAY

    lake = stack.lake
    if kind == "evidently":
        escaped = lake.fs.cat_file(lake.path("reports", "drift", "flights", f"date={XSS_DAY}", "drift.html")).decode()
        rel = f"reports/drift/flights/date={XSS_DAY}/drift-unescaped.html"
        page_html = escaped.replace("\\u003c", "<")  # what Evidently itself writes (our escaping undone)
    else:
        docs = lake.fs.cat_file(lake.path("reports", "gx", "flights", "date=2013-01-24", "docs", "index.html")).decode()
        rel = "reports/gx/flights/date=2013-01-24/docs/xss-header.html"
        page_html = docs.replace("<body>", f"<body><td>{XSS}</td>", 1)
    assert "</script><script>alert('xss')" in page_html
    lake.write_bytes(rel, page_html.encode())
    token = stack.token()
    before = _dag_runs(stack, token, "flights_train")
    dialogs: list[str] = []
    frame = _open_report(tab, stack, rel, dialogs)
    tab.wait_for_function("() => document.documentElement.hasAttribute('data-blocked')", timeout=30_000)
    tab.wait_for_function(
        "() => ['data-post', 'data-post-blocked'].some(a => document.documentElement.hasAttribute(a))",
        timeout=30_000,
    )
    attrs = frame.evaluate(ATTRS)
    assert "data-leak" not in attrs, attrs  # the script ran (data-blocked) but could not read the API
    assert "data-post" not in attrs, attrs  # nor send an authenticated POST
    assert dialogs == []  # alert() is ignored in a sandbox without allow-modals
    assert _dag_runs(stack, token, "flights_train") == before
    assert frame.evaluate("() => window.origin") == "null"
    shots(tab, f"xss-sandboxed-{kind}", publish=False)


def test_an_upload_with_markup_in_its_header_is_refused_by_the_pipeline(stack, nyc, spec):
    """The GX class at its source: flights_ingest refuses the file before GX (and its Data Docs) see it."""
    from tests.e2e.conftest import dagbag, state
    from tests.ui.conftest import XSS

    landing = os.environ["MLOPS_INGEST_ALLOWED_ROOTS"].split(os.pathsep)[0]
    rows = nyc["flights"][nyc["flights"]["flight_date"] == "2013-01-25"].head(20)
    path = os.path.join(landing, "xss-header.csv")
    rows.rename(columns={"dest": XSS}).to_csv(path, index=False)
    dr = (
        dagbag()
        .get_dag("flights_ingest")
        .test(logical_date=datetime(2013, 1, 25, tzinfo=UTC), run_conf={"source_uri": path, "date": "2013-01-25"})
    )
    assert state(dr) == "failed"
    assert not stack.lake.exists("reports/gx/flights/date=2013-01-25/docs/index.html")
    found = [p for p in stack.lake.fs.find(stack.lake.path("reports")) if XSS.encode() in stack.lake.fs.cat_file(p)]
    assert found == [] or all(p.endswith(("drift-unescaped.html", "xss-header.html")) for p in found), found
