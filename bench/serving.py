"""Online serving of the champion: ``mlflow models serve`` (env-manager local, one uvicorn worker) on loopback,
single-row requests from 1 and 4 concurrent clients (each a keep-alive HTTP connection, requests back to back),
p50 / p99 latency as the client sees it; baseline: the same model's in-process single-row ``predict`` (the pyfunc
the server wraps), p50 / p99 over as many calls. Both sides run one compute thread (``OMP_NUM_THREADS=1`` for the
server, a threadpoolctl cap in process), the right setting for single-row requests: OpenMP teams of 2 threads
only add synchronisation to a one-row predict, and stall badly on a busy machine. Served and in-process
predictions of the request row must agree.

Called from bench.scoring (which trains the champion); ``serve_and_measure`` is the whole measurement.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
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

GOAL = "p99 <= 20 ms"
MAX_P99_MS = 20.0
CONCURRENCY = (1, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(model_uri: str, tracking_uri: str, log: Path, timeout: float = 180):
    """``mlflow models serve`` in its own process group; yields the port once /ping answers."""
    port = _free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_REGISTRY_URI=tracking_uri, OMP_NUM_THREADS="1")
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    cmd = [mlflow_bin, "models", "serve", "-m", model_uri, "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {proc.returncode}: see {log}")
            with contextlib.suppress(OSError):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/ping")
                if c.getresponse().status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve not ready after {timeout:.0f} s: see {log}")
            time.sleep(0.5)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _client(port: int, body: bytes, n: int, out: list[float], answers: list[Any]) -> None:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
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


def load_test(port: int, body: bytes, clients: int, requests: int) -> tuple[list[float], list[Any]]:
    """``requests`` single-row requests spread over ``clients`` concurrent connections; latencies in s."""
    per = max(1, requests // clients)
    lat: list[list[float]] = [[] for _ in range(clients)]
    answers: list[Any] = []
    threads = [threading.Thread(target=_client, args=(port, body, per, lat[i], answers)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [x for xs in lat for x in xs]
    if len(flat) != per * clients:
        raise RuntimeError(f"only {len(flat)} of {per * clients} requests answered")
    return flat, answers


def serve_and_measure(
    model_uri: str, tracking_uri: str, row: pd.DataFrame, workdir: Path, quick: bool = False
) -> tuple[list[dict], dict, list[str]]:
    """Figures, details and mismatches of the serving benchmark for one feature row."""
    import mlflow.pyfunc

    requests = 200 if quick else 2000
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    from threadpoolctl import threadpool_limits

    model = mlflow.pyfunc.load_model(model_uri)
    local = []
    with threadpool_limits(limits=1):
        for i in range(requests + 20):
            t0 = time.perf_counter()
            expected = model.predict(row)
            if i >= 20:  # the first calls warm caches
                local.append(time.perf_counter() - t0)
    body = json.dumps({"dataframe_split": json.loads(row.to_json(orient="split", index=False))}).encode()
    details: dict[str, Any] = {
        "requests": requests,
        "in_process_ms": {"p50": percentile(local, 50) * 1e3, "p99": percentile(local, 99) * 1e3},
    }
    figures, mismatches = [], []
    t0 = time.perf_counter()
    with served(model_uri, tracking_uri, workdir / "serve.log") as port:
        details["startup_s"] = round(time.perf_counter() - t0, 1)
        load_test(port, body, 1, 50)  # warm-up
        for clients in CONCURRENCY:
            lat, answers = load_test(port, body, clients, requests)
            got = np.asarray(answers[0]["predictions"]).ravel()
            if not np.array_equal(got, np.asarray(expected).ravel()):
                mismatches.append(f"serving: served prediction {got} != in-process {np.asarray(expected).ravel()}")
            p50, p99 = percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3
            base = details["in_process_ms"]["p99"]
            details[f"clients_{clients}"] = {"p50_ms": p50, "p99_ms": p99, "requests": len(lat)}
            figures.append(
                figure(
                    f"serving: `mlflow models serve` single-row p99, {clients} concurrent client(s) on loopback "
                    f"(baseline: in-process pyfunc predict p99)",
                    p99,
                    "ms",
                    base,
                    goal=GOAL,
                    met=p99 <= MAX_P99_MS,
                    digits=2,
                    p50_ms=round(p50, 2),
                    baseline_p50_ms=round(details["in_process_ms"]["p50"], 2),
                    requests=len(lat),
                )
            )
            print(f"  serving, {clients} client(s): p50 {p50:.1f} ms, p99 {p99:.1f} ms (in-process p99 {base:.1f} ms)")
    return figures, details, mismatches
