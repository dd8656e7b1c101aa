"""Online serving: the ASGI app on a real version trained on real January days (temp lake, temp SQLite MLflow, the
fixtures of test_scoring), through Starlette's TestClient. Served probabilities must equal the pipeline's
``predict_proba`` bit for bit, on the fast path too (unknown, missing and infrequent categories included)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import select
import socket
import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from include.mlops import features as F
from include.mlops import scoring as S
from include.mlops import serving as V
from include.mlops import training as T
from tests.unit.test_scoring import FIRST, LAST, champion, lake, small_spec  # noqa: F401 (fixtures)

with warnings.catch_warnings():  # Starlette 1.x would rather its TestClient used httpx2; the lock has httpx
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def table(small_spec, lake) -> pd.DataFrame:  # noqa: F811
    """The real feature rows of the lake's days."""
    return F.features_for_dates(lake, small_spec, FIRST, LAST)


@pytest.fixture(scope="module")
def rows(small_spec, table) -> pd.DataFrame:  # noqa: F811
    """600 real rows, then the same rows with an unknown destination, missing categories and missing numbers."""
    x = table[small_spec.feature_names].sample(600, random_state=0).reset_index(drop=True)
    odd = x.head(60).copy()
    odd.loc[0:19, "dest"] = "ZZZ"  # a destination no model has seen
    odd.loc[20:39, ["carrier", "origin"]] = None
    odd.loc[40:59, ["temp", "wind_speed", "plane_age", "route_delay_rate"]] = np.nan
    return pd.concat([x, odd], ignore_index=True)


def _pipeline(uri: str, version: str):
    import mlflow.sklearn

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.sklearn.load_model(f"models:/flights/{version}")


def _app(spec, uri: str, **settings) -> TestClient:
    return TestClient(V.create_app(V.Settings("flights", tracking_uri=uri, **settings), spec=spec))


@pytest.fixture(scope="module")
def client(small_spec, champion):  # noqa: F811
    with _app(small_spec, champion["uri"], reload_seconds=0) as c:
        yield c


@pytest.fixture(scope="module")
def strict(small_spec, champion):  # noqa: F811
    """A server that takes at most 5 rows per request."""
    with _app(small_spec, champion["uri"], reload_seconds=0, max_rows=5) as c:
        yield c


def test_served_probabilities_equal_the_pipelines_predict_proba(client, champion, rows):  # noqa: F811
    expected = _pipeline(champion["uri"], champion["version"]).predict_proba(rows)[:, 1]
    r = client.post("/invocations", content=V.request_body(rows))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert np.array_equal(answer["predictions"], expected)
    assert answer["labels"] == (expected >= champion["threshold"]).astype(int).tolist()
    assert answer["model_version"] == champion["version"]
    # one row per request (the fast path's tree walk), in both JSON layouts
    for i in (0, 1, 2, 600, 620, 640):
        for orient in ("split", "records"):
            one = client.post("/invocations", content=V.request_body(rows.iloc[[i]], orient)).json()
            assert one["predictions"] == [expected[i]], (i, orient)


def _fitted(spec, table: pd.DataFrame, estimator: str):
    """A pipeline of the spec's candidate ``estimator`` (a short one for the trees) fitted on ``table``."""
    candidate = next(c for c in spec.training.candidates if c.estimator == estimator)
    if estimator == "hist_gradient_boosting":
        candidate = candidate.model_copy(update={"params": {"max_iter": 30}})
    pipeline = T.make_pipeline(candidate, spec, seed=0)
    train = table[table[spec.label.name].notna()]
    return pipeline.fit(train[spec.feature_names], train[spec.label.name].astype(int))


def _assert_fast_path_identical(pipeline, spec, frame: pd.DataFrame) -> None:
    fast = V.build_fast_path(pipeline, spec.feature_names)
    assert fast is not None
    assert fast.trees is not None
    kinds = V.feature_kinds(spec)
    columns = V.parse_request(V.request_body(frame), spec.feature_names, kinds, 10_000)
    expected = pipeline.predict_proba(frame)[:, 1]
    n = len(frame)
    assert np.array_equal(fast.predict_proba(columns), expected)  # the classifier on our array
    few = [fast.predict_proba([c[i : i + V.TREE_ROWS] for c in columns]) for i in range(0, n, V.TREE_ROWS)]
    assert np.array_equal(np.concatenate(few), expected)  # the trees in numpy
    probe = V.probe_columns(fast, spec.feature_names, kinds)
    assert np.array_equal(
        fast.predict_proba(probe), pipeline.predict_proba(V.to_frame(spec.feature_names, kinds, probe))[:, 1]
    )


def test_fast_path_is_bit_identical_with_unknown_missing_and_infrequent_categories(
    small_spec,  # noqa: F811
    table,
    rows,
    monkeypatch,
):
    monkeypatch.setattr(T, "_MAX_CATEGORIES", 6)  # most destinations and carriers become "infrequent"
    train = table.copy()
    train.loc[train.index[::20], "carrier"] = None  # a missing category seen in training
    pipeline = _fitted(small_spec, train, "hist_gradient_boosting")
    encoder = pipeline[0].named_transformers_["cat"]
    infrequent = dict(zip(small_spec.categorical_features, encoder.infrequent_categories_, strict=True))
    assert infrequent["dest"] is not None
    assert len(infrequent["dest"]) > 20
    assert any(c is None for c in encoder.categories_[0])  # the missing carrier is a category (an infrequent one)
    _assert_fast_path_identical(pipeline, small_spec, rows)


def test_fast_path_of_the_registered_champion_is_on_and_identical(small_spec, champion, rows):  # noqa: F811
    _assert_fast_path_identical(_pipeline(champion["uri"], champion["version"]), small_spec, rows)


def test_other_pipelines_are_served_through_pandas(spec, small_spec, table, rows):  # noqa: F811
    pipeline = _fitted(spec, table, "logistic_regression")
    assert V.build_fast_path(pipeline, small_spec.feature_names) is None
    model = S.ScoringModel("flights", "1", "models:/flights/1", pipeline, small_spec.feature_names, 0.5)
    served = V.ServedModel(model, V.feature_kinds(small_spec), None, "now")
    columns = V.parse_request(V.request_body(rows), small_spec.feature_names, served.kinds, 10_000)
    assert np.array_equal(served.predict_proba(columns), pipeline.predict_proba(rows)[:, 1])


def test_a_fast_path_that_disagrees_is_switched_off(small_spec, champion, monkeypatch):  # noqa: F811
    wrong = V._Trees.predict_proba
    monkeypatch.setattr(V._Trees, "predict_proba", lambda self, x: np.nextafter(wrong(self, x), 1.0))
    served = V.load_version(small_spec, f"models:/flights/{champion['version']}", champion["uri"])
    assert served.fast is None  # and the pandas path serves


def _body(split: dict) -> bytes:
    return json.dumps({"dataframe_split": split}).encode()


def _set(column: str, value: object):
    def change(split: dict) -> bytes:
        split["data"][0][split["columns"].index(column)] = value
        return _body(split)

    return change


def _drop(column: str):
    def change(split: dict) -> bytes:
        i = split["columns"].index(column)
        return _body({"columns": split["columns"][:i] + split["columns"][i + 1 :], "data": [split["data"][0][:i]]})

    return change


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        pytest.param(lambda s: b"", 400, "empty request body", id="empty"),
        pytest.param(lambda s: b"{not json", 400, "not JSON", id="not-json"),
        pytest.param(
            lambda s: b'{"instances": [[1]]}', 400, "with 'dataframe_split' or 'dataframe_records'", id="tensor"
        ),
        pytest.param(lambda s: _body({**s, "data": []}), 422, "the request has no rows", id="no-rows"),
        pytest.param(
            lambda s: _body({**s, "data": s["data"] * 6}), 422, "6 rows, more than the limit of 5", id="6-rows"
        ),
        pytest.param(_drop("dest"), 422, r"missing feature columns \['dest'\]$", id="no-dest"),
        pytest.param(
            lambda s: b'{"dataframe_records": [{"carrier": "UA"}]}',
            422,
            r"missing feature columns \['sched_dep_hour', 'weekday', ",
            id="records-missing",
        ),
        pytest.param(
            _set("distance", "far"), 422, "'distance' expects a number or null, row 0 has str \"far\"", id="str"
        ),
        pytest.param(_set("carrier", 7), 422, "'carrier' expects a string or null, row 0 has int 7", id="int-category"),
        pytest.param(
            _set("weekday", 2.5), 422, "'weekday' expects an integer or null, row 0 has float 2.5", id="float"
        ),
        pytest.param(_set("month", True), 422, "'month' expects an integer or null, row 0 has bool true", id="bool"),
        pytest.param(
            lambda s: _body({**s, "data": [s["data"][0][:3]]}),
            422,
            "row 0 of 'dataframe_split' has 3 values for 17 columns",
            id="short-row",
        ),
    ],
)
def test_bad_requests_get_a_named_error(strict, rows, change, status, message):
    split = json.loads(V.request_body(rows.head(1)))["dataframe_split"]
    r = strict.post("/invocations", content=change(split))
    assert r.status_code == status, r.text
    assert r.json()["error_code"] == ("BAD_REQUEST" if status == 400 else "INVALID_INPUT")
    assert re.search(message, r.json()["message"]), r.json()["message"]


def test_an_oversized_body_is_refused(small_spec, champion, rows):  # noqa: F811
    with _app(small_spec, champion["uri"], reload_seconds=0, max_body_mb=0.001) as c:
        r = c.post("/invocations", content=V.request_body(rows.head(20)))
    assert r.status_code == 413
    assert "more than the limit of 1048 bytes" in r.json()["message"]


def test_ping_health_and_version(client, champion):  # noqa: F811
    assert client.get("/ping").status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert (health["model_name"], health["model_version"]) == ("flights", champion["version"])
    assert health["threshold"] == pytest.approx(champion["threshold"], abs=1e-6)
    assert health["fast_path"] is True
    assert health["loaded_at"]
    assert health["last_error"] is None
    version = client.get("/version").json()
    assert version["model_version"] == champion["version"]
    assert version["scikit-learn"]


def test_without_the_alias_the_server_starts_and_says_why(small_spec, champion):  # noqa: F811
    with _app(small_spec, champion["uri"], alias="nope", reload_seconds=0) as c:
        assert c.get("/ping").status_code == 503
        health = c.get("/health")
        assert health.status_code == 503
        assert "no alias 'nope'" in health.json()["last_error"]
        r = c.post("/invocations", content=b'{"dataframe_records": [{}]}')
        assert r.status_code == 503
        assert "no alias 'nope'" in r.json()["message"]


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column")
def test_moving_the_alias_swaps_the_served_version(small_spec, champion, table, rows):  # noqa: F811
    """Promotion of a second version, then a rollback: the watcher (every 0.2 s) serves each in turn."""
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    uri = champion["uri"]
    registry = MlflowClient(uri, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    other = _fitted(small_spec, table, "hist_gradient_boosting")
    x = rows[small_spec.feature_names]
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            other,
            name="model",
            signature=mlflow.models.infer_signature(x.head(50), other.predict_proba(x.head(50))),
            registered_model_name="flights",
            serialization_format="skops",
            skops_trusted_types=list(T.SKOPS_TRUSTED_TYPES),
            pip_requirements=T._pip_requirements("skops"),  # inferring them takes seconds
        )
    v2 = str(info.registered_model_version)
    registry.set_model_version_tag("flights", v2, "threshold", "0.3")

    def served_version(c: TestClient, want: str) -> str:
        deadline = time.monotonic() + 20
        while (got := c.get("/health").json()["model_version"]) != want and time.monotonic() < deadline:
            time.sleep(0.1)
        return got

    try:
        with _app(small_spec, uri, reload_seconds=0.2) as c:
            assert served_version(c, champion["version"]) == champion["version"]
            registry.set_registered_model_alias("flights", "champion", v2)  # promotion
            assert served_version(c, v2) == v2
            answer = c.post("/invocations", content=V.request_body(x)).json()
            assert answer["model_version"] == v2
            assert np.array_equal(answer["predictions"], other.predict_proba(x)[:, 1])
            assert answer["labels"] == (other.predict_proba(x)[:, 1] >= 0.3).astype(int).tolist()
            registry.set_registered_model_alias("flights", "champion", champion["version"])  # rollback
            assert served_version(c, champion["version"]) == champion["version"]
    finally:
        registry.set_registered_model_alias("flights", "champion", champion["version"])


def test_settings_travel_to_worker_processes_through_the_environment():
    settings = V.Settings("flights", alias="staging", tracking_uri="sqlite:///x.db", reload_seconds=5, max_rows=7)
    assert V.Settings.from_env(settings.to_env()) == settings
    with pytest.raises(RuntimeError, match="MLOPS_SERVING_DATASET is not set"):
        V.Settings.from_env({})


# -- attacks on a real server on loopback ------------------------------------------------------------------
# Each test runs uvicorn with the server's own protocol class on 127.0.0.1 (a thread of this process) and speaks
# raw HTTP to it, with socket timeouts that bound the test. Every one of them failed on the server before the
# hardening: no auth, a chunked body read whole, connections with unfinished headers or bodies kept for ever,
# NaN / Infinity / 1e999 / 10**30 scored or a 500, a deep body a 500, big bodies parsed on the event loop.
@contextlib.contextmanager
def loopback(spec, uri: str, monkeypatch, header_timeout: float = 10.0, **settings):
    """The app served by uvicorn on 127.0.0.1 (a free port); yields the port."""
    import uvicorn

    monkeypatch.setenv("MLOPS_SERVING_HEADER_TIMEOUT", str(header_timeout))  # read by the protocol class
    app = V.create_app(V.Settings("flights", tracking_uri=uri, reload_seconds=0, **settings), spec=spec)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=V.HeaderTimeoutProtocol, log_level="warning", limit_concurrency=1000)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "the loopback server stopped"
        assert time.monotonic() < deadline, "the loopback server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def _request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def _closed_by_server(s: socket.socket, within: float) -> bool:
    """True when the server closes ``s`` (EOF or reset, whatever it sent first) within ``within`` seconds."""
    s.settimeout(within)
    try:
        while s.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_token_guards_everything_but_ping(small_spec, champion, rows, monkeypatch):  # noqa: F811
    token = secrets.token_urlsafe(24)
    body = V.request_body(rows.head(1))
    with loopback(small_spec, champion["uri"], monkeypatch, token=token) as port:
        for method, path in (("POST", "/invocations"), ("GET", "/health"), ("GET", "/version")):
            for auth in ({}, {"Authorization": f"Bearer {token}x"}, {"Authorization": token}):
                status, data = _request(port, method, path, body if method == "POST" else None, auth)
                assert status == 401, (path, auth, data)
                assert json.loads(data)["error_code"] == "UNAUTHORIZED"
            status, data = _request(
                port, method, path, body if method == "POST" else None, {"Authorization": f"Bearer {token}"}
            )
            assert status == 200, (path, data)
        assert _request(port, "GET", "/ping")[0] == 200  # the liveness probe stays open


def test_the_server_refuses_to_serve_other_hosts_without_a_token(monkeypatch, capsys):
    monkeypatch.delenv("MLOPS_SERVING_TOKEN", raising=False)
    with pytest.raises(SystemExit):
        V.main(["--dataset", "flights", "--host", "192.0.2.1"])  # TEST-NET: never bound, even by a regression
    assert "refusing to serve 192.0.2.1 without authentication" in capsys.readouterr().err


def test_a_chunked_body_is_cut_off_at_the_limit_not_read_whole(small_spec, champion, monkeypatch):  # noqa: F811
    limit = 2**20
    chunk = b"x" * 65536
    with loopback(small_spec, champion["uri"], monkeypatch, max_body_mb=1) as port:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n")
        s.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
        sent, answered = 0, False
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 256 * limit:  # 256 MiB, as in the review
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if select.select([s], [], [], 0)[0]:
                    answered = True
                    break
        head = s.recv(65536)
        s.close()
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    # the answer came while the client was still sending: the server stopped reading near the limit
    assert answered or sent < 256 * limit
    assert sent < 32 * limit, f"the server read {sent / 2**20:.0f} MiB before answering"


def test_connections_with_unfinished_headers_are_closed(small_spec, champion, monkeypatch):  # noqa: F811
    with loopback(small_spec, champion["uri"], monkeypatch, header_timeout=1.0) as port:
        slow = []
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /invocations HTTP/1.1\r\nHost: t\r\n")  # the head never ends
            slow.append(s)
        trickle = socket.create_connection(("127.0.0.1", port), timeout=5)
        trickle.sendall(b"GET /ping HTTP/1.1\r\n")
        t0 = time.monotonic()
        with contextlib.suppress(OSError):  # one header byte every 0.3 s does not keep it open
            for _ in range(10):
                trickle.sendall(b"X")
                time.sleep(0.3)
        assert _closed_by_server(trickle, max(0.1, 4 - (time.monotonic() - t0)))
        assert all(_closed_by_server(s, 4) for s in slow)
        for s in [*slow, trickle]:
            s.close()
        assert _request(port, "GET", "/ping")[0] == 200  # and the server still serves


def test_a_body_that_stops_arriving_gets_408(small_spec, champion, monkeypatch):  # noqa: F811
    with loopback(small_spec, champion["uri"], monkeypatch, body_timeout=1.0) as port:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b'POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n{"dataframe_split"')
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 408"), head[:200]
        assert _closed_by_server(s, 4)
        s.close()


def _with_value(rows, column: str, literal: str) -> bytes:
    """A one-row body whose ``column`` holds the raw JSON ``literal``."""
    split = json.loads(V.request_body(rows.head(1)))["dataframe_split"]
    split["data"][0][split["columns"].index(column)] = "@@"
    return json.dumps({"dataframe_split": split}).replace('"@@"', literal).encode()


@pytest.mark.parametrize(
    ("column", "literal", "status", "message"),
    [
        ("distance", "NaN", 422, "non-finite number NaN"),
        ("distance", "Infinity", 422, "non-finite number Infinity"),
        ("distance", "-Infinity", 422, "non-finite number -Infinity"),
        ("distance", "1e999", 422, "not a finite number within"),
        ("distance", "1e400", 422, "not a finite number within"),
        ("distance", "1e30", 422, "not a finite number within"),
        ("month", "1000000000000000000000000000000", 422, "not a finite number within"),
        ("month", "1e30", 422, "not a finite number within"),
        ("month", "-" + "9" * 40, 422, "not a finite number within"),
        ("month", "9" * 5000, 400, "not JSON"),  # beyond Python's int digit limit
    ],
)
def test_non_finite_and_out_of_range_numbers_are_refused(
    client,
    rows,
    column,
    literal,
    status,
    message,
):
    r = client.post("/invocations", content=_with_value(rows, column, literal))
    assert r.status_code == status, r.text
    assert message in r.json()["message"]


def test_a_deeply_nested_body_is_a_400_not_a_500(small_spec, champion, monkeypatch):  # noqa: F811
    deep = b'{"dataframe_split": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with loopback(small_spec, champion["uri"], monkeypatch) as port:
        status, data = _request(port, "POST", "/invocations", deep, {"Content-Type": "application/json"})
    assert status == 400, data[:300]
    assert "nested too deeply" in json.loads(data)["message"]


def test_large_bodies_are_parsed_off_the_event_loop(small_spec, champion, rows, monkeypatch):  # noqa: F811
    threads: list[int] = []
    parse = V.parse_request

    def recording(*args, **kwargs):
        threads.append(threading.get_ident())
        return parse(*args, **kwargs)

    monkeypatch.setattr(V, "parse_request", recording)
    big = V.request_body(pd.concat([rows] * 8, ignore_index=True))  # 5,280 rows, ~2 MiB
    small = V.request_body(rows.head(1))
    assert len(big) > V.INLINE_BYTES >= len(small)
    with loopback(small_spec, champion["uri"], monkeypatch) as port:
        loop_thread = [t.ident for t in threading.enumerate() if t.name != threading.current_thread().name]
        assert _request(port, "POST", "/invocations", small)[0] == 200
        on_loop = threads[-1]
        assert on_loop in loop_thread
        assert _request(port, "POST", "/invocations", big)[0] == 200
    assert threads[-1] != on_loop, "a 2 MiB body was parsed on the event loop"


# -- no pickle from the registry ---------------------------------------------------------------------------
class _Boom:
    """Unpickling this runs code: it creates the folder ``marker`` (a real attack would do anything it likes)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_the_champion_is_stored_as_skops_and_loads_with_our_trusted_types(small_spec, champion):  # noqa: F811
    from mlflow import MlflowClient
    from mlflow.models import Model

    client = MlflowClient(champion["uri"], champion["uri"])
    source = client.get_model_version("flights", champion["version"]).source
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(source, tracking_uri=champion["uri"])
    flavor = Model.load(local).flavors["sklearn"]
    assert flavor["serialization_format"] == "skops"
    assert flavor["pickled_model"].endswith(".skops")
    assert S.load_model_dir(local).predict_proba is not None


def _log_version(uri: str, model, fmt: str, **kwargs) -> str:
    import mlflow
    import mlflow.sklearn

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name="flights",
            serialization_format=fmt,
            pip_requirements=T._pip_requirements(fmt),
            **kwargs,
        )
    return str(info.registered_model_version)


def test_a_pickled_version_is_not_loaded_by_scoring_or_the_server(small_spec, champion, monkeypatch, tmp_path):  # noqa: F811
    """Whoever can register a version and move @champion must not get code run in workers or the server."""
    from mlflow import MlflowClient

    uri = champion["uri"]
    monkeypatch.delenv(S.ALLOW_PICKLE_ENV, raising=False)
    marker = tmp_path / "code-ran"
    evil = _log_version(uri, {"payload": _Boom(str(marker))}, "cloudpickle")
    assert not marker.exists()
    with pytest.raises(S.UnsafeModelError, match="cloudpickle model file: refused"):
        S.load_model(small_spec, f"models:/flights/{evil}", tracking_uri=uri)
    registry = MlflowClient(uri, uri)
    try:
        registry.set_registered_model_alias("flights", "champion", evil)
        with _app(small_spec, uri, reload_seconds=0) as c:
            assert c.get("/ping").status_code == 503
            assert "UnsafeModelError" in c.get("/health").json()["last_error"]
    finally:
        registry.set_registered_model_alias("flights", "champion", champion["version"])
    assert not marker.exists()
    monkeypatch.setenv(S.ALLOW_PICKLE_ENV, "1")  # the documented opt-in does load it: the payload would run
    S.clear_cache()
    with contextlib.suppress(Exception):
        S.load_model(small_spec, f"models:/flights/{evil}", tracking_uri=uri)
    assert marker.exists()


def test_a_skops_file_whose_mlmodel_trusts_more_types_is_refused(small_spec, champion, table, monkeypatch):  # noqa: F811
    """MLflow would load a skops model with the trusted-type list its own MLmodel file declares; we use ours."""
    from sklearn.preprocessing import FunctionTransformer

    sneaky = FunctionTransformer(func=os.getcwd)  # any callable a model file should not get to name
    version = _log_version(champion["uri"], sneaky, "skops", skops_trusted_types=["posix.getcwd"])
    with pytest.raises(S.UnsafeModelError, match="types outside our trusted list"):
        S.load_model(small_spec, f"models:/flights/{version}", tracking_uri=champion["uri"])
