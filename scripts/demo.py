"""`make demo [DATASET=<name>]`: seed the dataset's source from its spec, then replay its days through the real
Airflow DAGs (dag.test: real DAG runs in the metadata DB, tasks in-process) and end with a summary of what
happened. Any spec in include/config with a ``source.seed`` works; the default is flights (January-July 2013).

The story (flights): a champion trained on the winter (Jan-Feb) scores every day from March on; a weekly Evidently
drift + delayed-label check compares it with what it saw at training; when the summer moves the data and the
model's accuracy beyond the spec's limits, the monitor requests a retrain (debounced), the retrain goes through
the gate and the new version is promoted, or, not shown better, becomes the shadow: scored beside the champion, compared
by the monitor, and sent through the gate when it proves better. A control check on the champion's own test week shows
that the reference period does not trigger.

Another dataset tells the same story on its own data: the first champion is trained on the spec's first
``training.window_days`` days and serves about five months after them.

Ingestion runs ahead in two worker processes (both cores), one day per `<dataset>_ingest` run; this process
scores, monitors and trains as the days become validated, never looking past the day it replays.
Each task's log goes where the Airflow UI reads it ($AIRFLOW_HOME/logs/dag_id=.../attempt=1.log), everything else
Airflow prints to $AIRFLOW_HOME/demo.log; this script prints one line per stage and day.
Override the window with MLOPS_DEMO_START / MLOPS_DEMO_END / MLOPS_DEMO_SCORE_FROM (ISO dates, inclusive).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

DATASET = os.environ.get("MLOPS_DEMO_DATASET") or "flights"
SERVE_DAYS = 152  # how long the first champion serves before the replay ends (flights: March to July)
MONITOR_EVERY = 7  # days between drift checks (each covers the spec's monitoring.window_days)
WORKERS = 2
LOG = Path(os.environ["AIRFLOW_HOME"]) / "demo.log"
_out = os.fdopen(os.dup(1), "w", buffering=1)
T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{_clock()}] {msg}", file=_out)


def _clock() -> str:
    s = int(time.perf_counter() - T0)
    return f"{s // 60:2d}:{s % 60:02d}"


def quiet():
    """Send everything Airflow, GX and MLflow print (fd 1 and 2) to the demo log."""
    return output_to(LOG)


@contextlib.contextmanager
def output_to(path: Path):
    """Send fd 1 and 2 (print, logging, child processes) to ``path`` (appended) while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _log_path(ti) -> Path:
    """Where the Airflow UI reads a task's log: ``[logging] base_log_folder`` / ``log_filename_template``."""
    import jinja2
    from airflow.configuration import conf

    template = conf.get("logging", "log_filename_template")
    rel = jinja2.Template(template).render(ti=ti, try_number=ti.try_number)
    return Path(conf.get("logging", "base_log_folder")) / rel


def give_tasks_their_logs() -> None:
    """dag.test runs each task in this process, its log going to stdout (the demo log); send each task's output
    to the file the UI reads instead, so that the demo's runs have task logs in the UI like scheduler runs."""
    from airflow.sdk.execution_time import supervisor

    run_in_process = supervisor.run_task_in_process

    def run_with_log_file(ti, task, client=None):
        path = _log_path(ti)
        path.parent.mkdir(parents=True, exist_ok=True)
        with output_to(path):
            return run_in_process(ti=ti, task=task, client=client)

    supervisor.run_task_in_process = run_with_log_file


def _state(dr) -> str:
    return str(getattr(dr, "state", "unknown")).rsplit(".", 1)[-1]


def run_dag(dagbag, dag_id: str, day: date, conf: dict | None = None) -> str:
    """One DAG run through Airflow (``dag.test``); returns the run's final state."""
    dag = dagbag.dags[dag_id]
    started = datetime.now(UTC)
    with quiet():
        dr = dag.test(logical_date=datetime(day.year, day.month, day.day, tzinfo=UTC), run_conf=conf)
        _record_real_start(dr, started, f"make demo: data day {day}")
    return _state(dr)


def _record_real_start(dr, started: datetime, note: str) -> None:
    """dag.test records a run's start as its logical date (2013), so the UI showed runs lasting 4,900 days;
    store when it really started, and a note naming the data day (the run id is wall-clock time)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    if dr is None:
        return
    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dr.dag_id, DagRun.run_id == dr.run_id).one()
        run.start_date = started
        run.note = note


def load_dagbag():
    give_tasks_their_logs()
    with quiet():
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


# -- the ingest workers (separate processes: they only run flights_ingest) -----------------------------
def window(spec) -> tuple[date, date, date]:
    """(first day, first scored day, last day) of the replay: the spec's time range, the first champion trained on
    its first ``training.window_days`` days; each overridable from the environment."""
    start = date.fromisoformat(os.environ.get("MLOPS_DEMO_START") or spec.time.start.isoformat())
    score_from = os.environ.get("MLOPS_DEMO_SCORE_FROM")
    first_scored = date.fromisoformat(score_from) if score_from else start + timedelta(days=spec.training.window_days)
    end = os.environ.get("MLOPS_DEMO_END")
    last = date.fromisoformat(end) if end else min(spec.time.end, first_scored + timedelta(days=SERVE_DAYS))
    return start, first_scored, last


def ingest_worker(days: list[date]) -> int:
    """Run ``<dataset>_ingest`` for each day; print one JSON line per day on the real stdout."""
    from include.mlops.config import load_spec
    from include.mlops.storage import Lake

    spec = load_spec(DATASET)
    primary = spec.source.primary_table
    dagbag = load_dagbag()
    lake = Lake()
    for day in days:
        t = time.perf_counter()
        state = run_dag(dagbag, f"{DATASET}_ingest", day)
        m = lake.manifest("validated", DATASET, f"date={day}")
        q = lake.manifest("quarantine", DATASET, f"date={day}")
        line = {
            "day": day.isoformat(),
            "state": state,
            "validated": m.files[primary].rows if m and primary in m.files else 0,
            "quarantined": q.rows if q else 0,
            "seconds": round(time.perf_counter() - t, 1),
        }
        print(json.dumps(line), file=_out)
    return 0


class Ingest:
    """Starts the workers (days dealt round-robin) and hands out each day's result in order."""

    def __init__(self, days: list[date], workers: int = WORKERS) -> None:
        self.results: dict[str, dict] = {}
        self.events: queue.Queue = queue.Queue()
        self.procs = []
        for w in range(workers):
            mine = [d.isoformat() for d in days[w::workers]]
            proc = subprocess.Popen(
                [sys.executable, __file__, "--ingest-worker", *mine],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc) -> None:
        for line in proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.events.put(json.loads(line))
        self.events.put({"eof": proc.wait()})

    def wait(self, day: date) -> dict:
        """The result of ``day``'s ingest run (blocks until a worker has finished it)."""
        key = day.isoformat()
        while key not in self.results:
            if all(p.poll() is not None for p in self.procs) and self.events.empty():
                return {"day": key, "state": "missing", "validated": 0, "quarantined": 0, "seconds": 0}
            with contextlib.suppress(queue.Empty):
                e = self.events.get(timeout=1)
                if "day" in e:
                    self.results[e["day"]] = e
        return self.results[key]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()


# -- the replay ------------------------------------------------------------------------------------------
class Story:
    def __init__(self, spec) -> None:
        self.spec = spec
        self.rows = spec.source.primary_table  # what a row is called in the story ("flights", "orders")
        self.runs: dict[str, list[str]] = {}
        self.validated_rows = 0
        self.quarantined_rows = 0
        self.quarantined_days: list[str] = []
        self.scored_rows = 0
        self.checks: list[dict] = []
        self.trainings: list[dict] = []
        self.control: dict | None = None

    def run(self, dag_id: str, state: str) -> str:
        self.runs.setdefault(dag_id, []).append(state)
        return state


def main() -> int:
    from include.mlops.config import load_spec
    from include.mlops.storage import Lake, data_root

    spec = load_spec(DATASET)
    start, score_from, end = window(spec)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    LOG.write_text("")
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    first_train_end = score_from - timedelta(days=1)
    if spec.source.seed is None:
        say(f"{DATASET}: its spec has no source.seed: the demo cannot fill its source (README: Add your own dataset)")
        return 1
    if end <= first_train_end:
        say(f"{DATASET}: {start}..{spec.time.end} leaves no day to score after {spec.training.window_days} days")
        return 1
    say(
        f"airflow-mlops demo ({DATASET}: {spec.description.strip()[:90]}...): replay {start} .. {end} "
        f"({len(days)} days) through Airflow  (task logs: {LOG})"
    )
    seed = spec.source.seed
    say(f"stage 1/4  seed the source database from the spec ({seed.loader or seed.package_files or seed.files})")
    from include.mlops.sources import default_source_url, seed_source

    with quiet():
        seeded = seed_source(spec, default_source_url(spec.name))
    say(f"           {seeded.url}: " + ", ".join(f"{n:,} {t} rows" for t, n in seeded.rows.items()))

    dagbag = load_dagbag()
    if dagbag.import_errors:
        say(f"DAG import errors: {dagbag.import_errors}")
        return 1
    story, lake = Story(spec), Lake()
    ingest = Ingest(days)
    ds = DATASET
    try:
        say(
            f"stage 2/4  {ds}_ingest {start} .. {first_train_end}: extract -> GX validate -> validated / "
            f"quarantine ({WORKERS} worker processes, one DAG run per day)"
        )
        for i, day in enumerate(d for d in days if d <= first_train_end):
            _ingested(story, ingest.wait(day), i + 1, len(days))
        candidates = " + ".join(c.name for c in spec.training.candidates)
        say(
            f"stage 3/4  {ds}_train on {first_train_end - timedelta(days=spec.training.window_days - 1)}"
            f" .. {first_train_end}: features -> {candidates} search (MLflow) -> gate -> champion"
        )
        _train(story, dagbag, first_train_end, "first model")
        control = _monitor(story, dagbag, lake, first_train_end, label="control (the champion's own test week)")
        story.control = control
        say(
            f"stage 4/4  replay {score_from} .. {end}: ingest -> {ds}_score daily, {ds}_monitor every "
            f"{MONITOR_EVERY} days ({spec.monitoring.window_days}-day window), {ds}_train on a retrain request"
        )
        for i, day in enumerate(days):
            if day < score_from:
                continue
            result = ingest.wait(day)
            scored = None
            if result["state"] == "success":
                t = time.perf_counter()
                state = story.run(f"{ds}_score", run_dag(dagbag, f"{ds}_score", day, {"date": day.isoformat()}))
                p = lake.manifest("predictions", ds, f"date={day}")
                scored = (
                    state,
                    p.rows if p else 0,
                    p.extra.get("model_version") if p else None,
                    time.perf_counter() - t,
                )
                story.scored_rows += p.rows if p else 0
            _ingested(story, result, i + 1, len(days), scored)
            if (day - score_from).days % MONITOR_EVERY == MONITOR_EVERY - 1:
                decision = _monitor(story, dagbag, lake, day)
                if decision and decision.get("propose_shadow"):  # as the retrain/<ds> event it emits does
                    shadow = decision["propose_shadow"]
                    why = f"shadow v{shadow} shown better by {ds}_monitor: to the gate, nothing trained"
                    _train(story, dagbag, day, why, {"gate_shadow": True}, version=shadow)
                if decision and decision.get("retrain"):
                    _train(story, dagbag, day, f"retrain requested by {ds}_monitor: " + ", ".join(decision["triggers"]))
    finally:
        ingest.close()
    return _summary(story, spec, data_root())


def _ingested(story: Story, r: dict, i: int, n: int, scored: tuple | None = None) -> None:
    story.run(f"{DATASET}_ingest", r["state"])
    story.validated_rows += r["validated"]
    story.quarantined_rows += r["quarantined"]
    if r["quarantined"]:
        story.quarantined_days.append(f"{r['day']}: {r['quarantined']}")
    note = f"ingest {r['state']:<7} {r['validated']:>5} {story.rows}" + (
        f", {r['quarantined']} quarantined" if r["quarantined"] else ""
    )
    if scored:
        state, rows, version, secs = scored
        note += f" | score {state} {rows:>5} by v{version} ({secs:.1f}s)" if rows else f" | score {state}"
    say(f"  [{i:>3}/{n}] {r['day']}  {note}  (ingest {r['seconds']}s)")


def _train(story: Story, dagbag, end: date, why: str, conf: dict | None = None, version: str | None = None) -> None:
    t = time.perf_counter()
    say(f"           {DATASET}_train ({why}), window ending {end} ...")
    # every Param this demo sets, set on every run: in one process, dag.test's run conf outlives its run (Airflow's
    # process_params updates the DAG's own Param objects), so a gate_shadow=True would carry into the next run
    conf = {"window_end": str(end), "gate_shadow": False, **(conf or {})}
    state = story.run(f"{DATASET}_train", run_dag(dagbag, f"{DATASET}_train", end + timedelta(days=1), conf))
    model = _latest_version(version)
    record = {"end": str(end), "why": why, "state": state, **model}
    story.trainings.append(record)
    say(f"           -> {state}: {model.get('line', 'no model registered')}  ({time.perf_counter() - t:.0f}s)")


def _monitor(story: Story, dagbag, lake, day: date, label: str = "") -> dict | None:
    t = time.perf_counter()
    state = story.run(
        f"{DATASET}_monitor", run_dag(dagbag, f"{DATASET}_monitor", day + timedelta(days=1), {"date": str(day)})
    )
    try:
        decision = lake.read_json(f"reports/drift/{DATASET}/decisions/{day}.json")
    except FileNotFoundError:
        say(f"           {DATASET}_monitor {day}: {state}, no decision recorded (see {LOG})")
        return None
    checks = {c["name"]: c for c in decision.get("checks", [])}

    def show(name: str, digits: int = 3) -> str:
        c = checks.get(name) or {}
        v = c.get("value")
        mark = "!" if c.get("verdict") == "fail" else ""
        return f"{name} {'-' if v is None else round(v, digits)}{mark}"

    verdict = (
        "RETRAIN requested"
        if decision["retrain"]
        else (f"trigger fired, {decision['blocked_by']}" if decision["alert"] else "no trigger")
    )
    try:
        shadow = (lake.read_json(f"reports/drift/{DATASET}/date={day}/monitor.json")["metrics"] or {}).get("shadow")
    except (FileNotFoundError, KeyError):
        shadow = None
    if shadow:
        gain = shadow.get("auc_gain")
        verdict += f"; shadow v{shadow['version']} {shadow['verdict']}" + (
            f" (ROC AUC {gain:+.3f} on {shadow['window'][0]}..{shadow['window'][1]})" if gain is not None else ""
        )
    story.checks.append(decision | {"label": label})
    say(
        f"           drift check {decision['window'][0]}..{decision['window'][1]} v{decision['model_version']}"
        f"{' ' + label if label else ''}: {show('roc_auc_drop')}, {show('brier_rise')}, "
        f"{show('weighted_drift', 2)}, {show('prediction_drift')}, {show('drift_share', 2)} -> {verdict}"
        f"  ({time.perf_counter() - t:.0f}s)"
    )
    return decision


def _latest_version(version: str | None = None) -> dict:
    """The newest registered version (or ``version``), described in one line."""
    from mlflow import MlflowClient

    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        versions = client.search_model_versions(f"name='{DATASET}'")
    except Exception:
        return {}
    if not versions:
        return {}
    mv = max(versions, key=lambda v: int(v.version) if version is None else int(v.version == str(version)))
    tags = mv.tags or {}
    aliases = {}
    for alias in ("champion", "shadow"):
        try:
            aliases[alias] = client.get_model_version_by_alias(DATASET, alias).version
        except Exception:
            aliases[alias] = None
    champion, shadow = aliases["champion"], aliases["shadow"]
    metrics = {k: round(float(tags[f"test_{k}"]), 3) for k in ("roc_auc", "brier") if f"test_{k}" in tags}
    gate = tags.get("gate.decision", "not evaluated")
    reasons = f" ({tags['gate.reasons']})" if tags.get("gate.reasons") else ""
    return {
        "version": mv.version,
        "window": f"{tags.get('window_start')}..{tags.get('window_end')}",
        "metrics": ", ".join(f"test {k} {v}" for k, v in metrics.items()),
        "gate": gate + reasons,
        "champion": champion,
        "shadow": shadow,
        "line": f"v{mv.version} trained on {tags.get('window_start')}..{tags.get('window_end')} "
        f"({', '.join(f'{k} {v}' for k, v in metrics.items())}), gate {gate}{reasons}, champion v{champion}"
        + (f", shadow v{shadow}" if shadow else ""),
    }


def _debounce_rule(m) -> str:
    """The spec's debounce in words: counted from promotions when a cool-down after a rejection is set."""
    if m.retrain_cooldown_days is None:
        return f"at most one request per {m.retrain_debounce_days} days"
    return (
        f"no request within {m.retrain_debounce_days} days of a promotion, "
        f"nor within {m.retrain_cooldown_days} days of a rejected retrain"
    )


def _summary(story: Story, spec, root: str) -> int:
    say("summary")
    for dag_id, states in story.runs.items():
        bad = [s for s in states if s != "success"]
        say(
            f"  {dag_id:<16} {len(states):>4} runs, {len(states) - len(bad)} succeeded"
            + (f", {len(bad)} not: {sorted(set(bad))}" if bad else "")
        )
    say(
        f"  data: {story.validated_rows:,} {story.rows} validated; quarantined with reasons: {story.quarantined_rows} "
        f"row(s) {', '.join(story.quarantined_days)}; {story.scored_rows:,} {story.rows} scored"
    )
    say("  the story:")
    for t in story.trainings:
        say(f"    {t['end']}  {t['why']}: {t.get('line', t['state'])}")
    if story.control:
        c = story.control
        say(
            f"    control: the champion on its own test week {c['window'][0]}..{c['window'][1]} -> "
            f"{'RETRAIN' if c['retrain'] else 'no trigger'} ({'; '.join(c['reasons'])[:160]})"
        )
    fired = [c for c in story.checks if c["alert"] and not c.get("label")]
    say(
        f"    {len(story.checks) - 1} weekly drift checks: {len(fired)} fired a trigger, "
        f"{sum(bool(c['retrain']) for c in fired)} requested a retrain, "
        f"{sum(c['blocked_by'] in ('debounce', 'cooldown') for c in fired)} held back "
        f"({_debounce_rule(spec.monitoring)})"
    )
    for c in fired:
        if c["retrain"]:
            say(f"    {c['day']}: v{c['model_version']} -> {c['reasons'][0][:150]}")
    runs = [t for t in story.trainings[1:] if t["state"] == "success"]
    retrains = [t for t in runs if not t["why"].startswith("shadow")]
    proposals = [t for t in runs if t["why"].startswith("shadow")]
    promoted = [t for t in runs if t.get("gate", "").startswith("passed")]
    shadows = sorted({t["shadow"] for t in story.trainings if t.get("shadow")}, key=int)
    say(
        f"    drift-triggered retrains: {len(retrains)}; shadows (candidates not shown better, scored beside the "
        f"champion): {', '.join(f'v{v}' for v in shadows) or 'none'}; shadows that proposed themselves: "
        f"{len(proposals)}; passed the gate and promoted: {len(promoted)}; "
        f"champion now v{story.trainings[-1].get('champion') if story.trainings else '?'}"
    )
    say("  where to look:")
    say(f"    lake:            {root}/  (validated/, quarantine/*/reasons.json, features/, predictions/)")
    say(
        f"    drift reports:   {root}/reports/drift/{DATASET}/date=*/drift.html, decisions/*.json;"
        f"  history: evidently ui --workspace {root}/evidently"
    )
    say(f"    gate reports:    {root}/reports/gate/{DATASET}/v*-*/gate.html   Data Docs: {root}/reports/gx/{DATASET}/")
    say(f"    registry:        python -m include.mlops audit {DATASET}")
    say(f"    serving:         make serve DATASET={DATASET} -> POST http://127.0.0.1:5001/invocations")
    say(
        f"    MLflow:          {os.environ['MLFLOW_TRACKING_URI']} -> make up -> http://localhost:5000 "
        f"(experiments {DATASET}, {DATASET}-monitoring, {DATASET}-registry-audit)"
    )
    say(
        "    Airflow UI:      make up -> http://localhost:8080 (user admin, password in "
        "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)"
    )
    say(f"    full logs:       {LOG}")
    failed_ingest = [s for s in story.runs.get(f"{DATASET}_ingest", []) if s != "success"]
    ingested = story.runs.get(f"{DATASET}_ingest", [])
    ok = bool(story.trainings) and story.trainings[0]["state"] == "success" and len(failed_ingest) < len(ingested)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ingest-worker":
        sys.exit(ingest_worker([date.fromisoformat(d) for d in sys.argv[2:]]))
    sys.exit(main())
