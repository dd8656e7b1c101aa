"""A champion alias moved by hand in MLflow (as the MLflow UI's alias editor does, through the same REST call) is
found by flights_reconcile's audit_aliases task in a real dag.test run: written into the audit history as an
``external`` entry and alerted through the ``mlops_alerts`` webhook connection to a real local HTTP server."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.e2e.conftest import dagbag, state

pytestmark = pytest.mark.e2e


@pytest.fixture
def webhook():
    """A local HTTP endpoint recording the JSON bodies posted to it."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


@pytest.fixture
def two_versions(module_mlflow, spec, tmp_path):
    """Registered model ``flights`` with two versions of a tiny real model, both passed by the gate."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    from include.mlops.training import SKOPS_TRUSTED_TYPES

    client = MlflowClient(module_mlflow, module_mlflow)
    exp = client.create_experiment("flights-alias-audit", artifact_location=(tmp_path / "artifacts").as_uri())
    x = np.arange(20, dtype=float).reshape(-1, 1)
    model = LogisticRegression().fit(x, (x[:, 0] > 9).astype(int))
    mlflow.set_tracking_uri(module_mlflow)
    for _ in range(2):
        with mlflow.start_run(experiment_id=exp):
            mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=spec.name,
                serialization_format="skops",
                skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
                pip_requirements=["scikit-learn"],
            )
    for v in ("1", "2"):
        client.set_model_version_tag(spec.name, v, "gate.decision", "passed")
    return client


def test_a_manual_alias_move_is_audited_and_alerted(airflow_db, spec, two_versions, webhook, monkeypatch):
    from include.mlops import registry

    url, received = webhook
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_ALERTS", json.dumps({"conn_type": "http", "host": url}))
    registry.promote(spec, 1, reason="gate passed", dag_run="manual__1")
    two_versions.set_registered_model_alias(spec.name, "champion", "2")  # outside the pipeline

    run = dagbag().get_dag("flights_reconcile").test(logical_date=datetime(2026, 1, 1, tzinfo=UTC))
    ti = next(t for t in run.get_task_instances() if t.task_id == "audit_aliases")
    assert state(ti) == "success"

    entries = registry.history(spec)
    assert [(e.action, e.from_version, e.to_version) for e in entries] == [
        ("promote", None, "1"),
        ("external", "1", "2"),
    ]
    assert len(received) == 1
    assert "champion moved outside the pipeline: 1 -> 2" in received[0]["text"]
    assert "bypassing the gate" in received[0]["text"]

    # the next check finds nothing new: no second entry, no second alert
    dagbag().get_dag("flights_reconcile").test(logical_date=datetime(2026, 1, 1, 0, 10, tzinfo=UTC))
    assert len(registry.history(spec)) == 2
    assert len(received) == 1
