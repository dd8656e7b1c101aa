"""Online serving of the champion: the project's server (``python -m include.mlops.serving``, one uvicorn worker)
on loopback, single-row requests from 1 and 4 concurrent clients (each a keep-alive HTTP connection, requests
back to back), p50 / p99 latency as the client sees it, with authentication on as in compose (every request carries
the bearer token the server checks). Goal: p99 <= 20 ms. Baseline: the same model's in-process
single-row ``predict`` (the pyfunc ``mlflow models serve`` wraps), p50 / p99 over as many calls. For contrast,
``mlflow models serve`` (env-manager local, one worker) answers the same row from the same clients (no goal).

Both servers run one compute thread (``OMP_NUM_THREADS=1``), the in-process side a threadpoolctl cap: OpenMP teams
of 2 threads only add synchronisation to a one-row predict, and stall badly on a busy machine. Our server's
probabilities must equal the in-process ``predict_proba`` of the native pipeline, ``mlflow models serve``'s the
pyfunc ``predict``, bit for bit; a difference is a mismatch.

Online features (README "Online features"): the same row asked of our server by its entity keys and the spec's
request fields only, the features looked up in the embedded (SQLite) online store the bench materialized for the
day. Goal: p99 <= 20 ms at 1 and 4 clients; baselines: the same request with full features (what the lookup
adds) and ``mlflow models serve`` answering the full-feature request (at the same concurrency). The looked-up
answer must equal the full-feature one bit for bit.

Called from bench.scoring (which trains the champion); ``serve_and_measure`` is the whole measurement.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import figure, percentile

REPO = Path(__file__).resolve().parents[1]
GOAL = "p99 <= 20 ms"
MAX_P99_MS = 20.0
CONCURRENCY = (1, 4)
# requests per concurrency level (full, --quick): ours is fast, mlflow's ~15-60 ms requests bound the run time
REQUESTS = {"ours": (2000, 200), "mlflow": (1000, 100), "in_process": (1000, 100)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(cmd: list[str], port: int, env: dict[str, str], log: Path, timeout: float = 180):
    """``cmd`` (a server on ``port``) in its own process group; yields once /ping answers 200."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
                raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}; the end of {log}:\n{tail}")
            with contextlib.suppress(OSError):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/ping")
                if c.getresponse().status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[:3]} not ready after {timeout:.0f} s: see {log}")
            time.sleep(0.5)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _client(port: int, body: bytes, n: int, out: list[float], answers: list[Any], auth: dict[str, str]) -> None:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", **auth}
    for _ in range(n):
        t0 = time.perf_counter()
        c.request("POST", "/invocations", body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        out.append(time.perf_counter() - t0)
        if r.status != 200:
            raise RuntimeError(f"/invocations answered {r.status}: {data[:300]!r}")
    answers.append(json.loads(data))
    c.close()


def _status(port: int, body: bytes) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def load_test(
    port: int, body: bytes, clients: int, requests: int, auth: dict[str, str] | None = None
) -> tuple[list[float], list[Any]]:
    """``requests`` single-row requests spread over ``clients`` concurrent connections (each sending the ``auth``
    headers); latencies in s."""
    per = max(1, requests // clients)
    lat: list[list[float]] = [[] for _ in range(clients)]
    answers: list[Any] = []
    threads = [
        threading.Thread(target=_client, args=(port, body, per, lat[i], answers, auth or {})) for i in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [x for xs in lat for x in xs]
    if len(flat) != per * clients:
        raise RuntimeError(f"only {len(flat)} of {per * clients} requests answered")
    return flat, answers


def server_commands(model_uri: str, port: int) -> dict[str, list[str]]:
    """The command of each server for ``models:/<name>@<alias>`` on ``port``: ours and ``mlflow models serve``."""
    name, alias = model_uri.removeprefix("models:/").split("@", 1)
    ours = [sys.executable, "-m", "include.mlops.serving", "--dataset", name, "--alias", alias]
    ours += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    theirs = [mlflow_bin, "models", "serve", "-m", model_uri, "--env-manager", "local"]
    theirs += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    return {"ours": ours, "mlflow": theirs}


def in_process(model: Any, row: pd.DataFrame, calls: int) -> tuple[Any, list[float]]:
    """The pyfunc's single-row ``predict`` ``calls`` times (after 20 warm-up calls): its answer and latencies."""
    from threadpoolctl import threadpool_limits

    times = []
    with threadpool_limits(limits=1):
        for i in range(calls + 20):
            t0 = time.perf_counter()
            answer = model.predict(row)
            if i >= 20:  # the first calls warm caches
                times.append(time.perf_counter() - t0)
    return answer, times


def serve_and_measure(
    model_uri: str,
    tracking_uri: str,
    row: pd.DataFrame,
    workdir: Path,
    quick: bool = False,
    keyed: pd.DataFrame | None = None,
) -> tuple[list[dict], dict, list[str]]:
    """Figures, details and mismatches of the serving benchmark for one feature row (``model_uri`` is
    ``models:/<dataset>@<alias>``); with ``keyed`` (that row's entity keys and request fields, its features
    materialized in the online store of this process's environment) also the online-lookup requests."""
    import mlflow.pyfunc
    import mlflow.sklearn

    from include.mlops.serving import request_body

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    which = 1 if quick else 0
    pyfunc_answer, local = in_process(mlflow.pyfunc.load_model(model_uri), row, REQUESTS["in_process"][which])
    expected = {
        "ours": mlflow.sklearn.load_model(model_uri).predict_proba(row)[:, 1],
        "mlflow": np.asarray(pyfunc_answer),
    }
    base_p50, base = percentile(local, 50) * 1e3, percentile(local, 99) * 1e3
    body = request_body(row)  # exact values (pandas' to_json would round them)
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_REGISTRY_URI=tracking_uri, OMP_NUM_THREADS="1")
    token = secrets.token_urlsafe(32)  # ours runs with authentication on, as compose runs it
    server_env = {"ours": env | {"MLOPS_SERVING_TOKEN": token}, "mlflow": env}
    auth = {"ours": {"Authorization": f"Bearer {token}"}, "mlflow": {}}
    details: dict[str, Any] = {"in_process_ms": {"p50": base_p50, "p99": base, "calls": len(local)}}
    titles = {
        "ours": "serving: our server (`python -m include.mlops.serving`)",
        "mlflow": "serving (contrast): `mlflow models serve`",
    }
    figures, mismatches = [], []
    p99s: dict[str, dict[int, float]] = {}
    for server in ("ours", "mlflow"):
        port = _free_port()
        requests = REQUESTS[server][which]
        t0 = time.perf_counter()
        log = workdir / f"serve-{server}.log"
        with served(server_commands(model_uri, port)[server], port, server_env[server], log):
            side: dict[str, Any] = {"startup_s": round(time.perf_counter() - t0, 1)}
            if server == "ours":  # the token is really checked: without it, 401
                refused, _ = _status(port, body)
                if refused != 401:
                    raise RuntimeError(f"our server answered {refused} to a request without its token")
            load_test(port, body, 1, 50, auth[server])  # warm-up
            for clients in CONCURRENCY:
                lat, answers = load_test(port, body, clients, requests, auth[server])
                got, want = np.asarray(answers[0]["predictions"]).ravel(), expected[server].ravel()
                if not np.array_equal(got, want):
                    mismatches.append(f"serving ({server}): served prediction {got} != in-process {want}")
                p50, p99 = percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3
                p99s.setdefault(server, {})[clients] = p99
                side[f"clients_{clients}"] = {"p50_ms": p50, "p99_ms": p99, "requests": len(lat)}
                goal = GOAL if server == "ours" else None
                figures.append(
                    figure(
                        f"{titles[server]} single-row p99, {clients} concurrent client(s) on loopback"
                        + (", auth on " if server == "ours" else " ")
                        + "(baseline: in-process pyfunc predict p99)",
                        p99,
                        "ms",
                        base,
                        goal=goal,
                        met=p99 <= MAX_P99_MS,
                        digits=2,
                        p50_ms=round(p50, 2),
                        baseline_p50_ms=round(base_p50, 2),
                        requests=len(lat),
                    )
                )
                print(
                    f"  serving {server}, {clients} client(s): p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                    f"(in-process p99 {base:.1f} ms)",
                    flush=True,
                )
            if server == "ours" and keyed is not None:
                side["lookup"] = _lookup(port, request_body(keyed, "records"), requests, auth[server], expected[server])
                mismatches += side["lookup"].pop("mismatches")
        details[server] = side
    if keyed is not None:
        figures += _lookup_figures(details["ours"]["lookup"], p99s)
    return figures, details, mismatches


def _lookup(port: int, body: bytes, requests: int, auth: dict[str, str], expected: np.ndarray) -> dict[str, Any]:
    """Latencies of the keyed request (features looked up online) at each concurrency level."""
    out: dict[str, Any] = {"mismatches": []}
    load_test(port, body, 1, 50, auth)  # warm-up: the store's connection and registry
    for clients in CONCURRENCY:
        lat, answers = load_test(port, body, clients, requests, auth)
        got = np.asarray(answers[0]["predictions"]).ravel()
        if not np.array_equal(got, expected.ravel()):
            out["mismatches"].append(f"serving (lookup): {got} != the full-feature answer {expected.ravel()}")
        p50, p99 = percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3
        out[f"clients_{clients}"] = {"p50_ms": p50, "p99_ms": p99, "requests": len(lat)}
        print(f"  serving ours, online lookup, {clients} client(s): p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
    return out


def _lookup_figures(lookup: dict[str, Any], p99s: dict[str, dict[int, float]]) -> list[dict]:
    figures = []
    for clients in CONCURRENCY:
        m = lookup[f"clients_{clients}"]
        for against, title in (
            ("ours", "the same row with full features, our server"),
            ("mlflow", "the full-feature row, `mlflow models serve`"),
        ):
            figures.append(
                figure(
                    f"serving with online lookup (entity keys + request fields), single-row p99, {clients} "
                    f"concurrent client(s), auth on (baseline: {title} p99)",
                    m["p99_ms"],
                    "ms",
                    p99s[against][clients],
                    goal=GOAL if against == "ours" else None,
                    met=m["p99_ms"] <= MAX_P99_MS,
                    digits=2,
                    p50_ms=round(m["p50_ms"], 2),
                    requests=m["requests"],
                )
            )
    return figures
