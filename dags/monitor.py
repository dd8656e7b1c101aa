"""
### `<dataset>_monitor` — drift, delayed-label performance and the retrain decision

Built once per dataset spec in `include/config/` (the flights spec gives `flights_monitor`). Daily over the
dataset's time range (real `[day, day + 1)` data intervals, as `<dataset>_ingest`); manual runs take `date`.

1. **monitor** — the champion on the `monitoring.window_days` validated days ending at the run's day, against
   the reference sample logged with it at training: Evidently data drift per feature (the share of drifted
   columns is recorded, never acted on: a week of weather is always "drifted" against a season), drift weighted
   by the champion's feature importance, prediction drift, and ROC AUC / Brier on the window's labelled flights
   against the champion's test metrics at training. Reports: `reports/drift/<dataset>/date=…/drift.html` in
   the lake, an MLflow run in experiment `<dataset>-monitoring`, and the Evidently workspace
   `<lake root>/evidently` (`evidently ui --workspace <lake root>/evidently`).
2. **decide** — the retrain policy (thresholds in the spec's `monitoring:` section): a trigger fires on a ROC AUC
   drop or Brier-skill drop (significant, with its bootstrap interval) beyond the limits, or prediction /
   importance-weighted drift beyond theirs. At most one retrain per `retrain_debounce_days` (with
   `retrain_cooldown_days` set, debounced on promotions instead), never while a `<dataset>_train` run is in
   progress. The shadow, if any, is compared with the champion here too (step 5).
   Every decision is recorded with its reasons: `reports/drift/<dataset>/decisions/<day>.json` and `decision.*`
   tags on the MLflow run.
3. **alert** — any trigger (requested, debounced or blocked) is sent through the `mlops_alerts` connection.
4. **request_retrain** — emits the `retrain/<dataset>` Asset event (with the reasons) that `<dataset>_train` is
   scheduled on; skipped when the decision is not to retrain.
5. **propose_shadow** — the shadow (registry alias `shadow`: the latest candidate the gate did not promote, which
   scores every day beside the champion) is compared with the champion on the same labelled rows, its test split
   and the days since (`monitoring.shadow_window_days`), by a paired bootstrap against the gate's own bars; a
   shadow shown better emits a `retrain/<dataset>` event naming it, and `<dataset>_train` sends it through the
   gate on that window instead of training (a retrain requested the same day is then answered by the cadence).

Without a champion or without validated days in the window, the run is skipped with that reason.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.mlops.airflow_adapter import asset, dag_dates, daily_schedule, default_args
from include.mlops.config import DatasetSpec, load_spec_file, spec_paths


def build(spec: DatasetSpec):
    retrain = asset("retrain", spec.name)
    train_dag_id = f"{spec.name}_train"

    @dag(
        dag_id=f"{spec.name}_monitor",
        description=f"Evidently drift + delayed-label performance of the {spec.name} champion; debounced retrain",
        doc_md=__doc__,
        schedule=daily_schedule(spec, lag_days=1),  # on the replay clock: the day before the one ingested
        **dag_dates(spec.time),
        catchup=False,
        max_active_runs=1,  # decisions are debounced against each other: one at a time, in order
        default_args=default_args(spec.owner) | {"execution_timeout": spec.timeouts.execution_timeout("monitor")},
        tags=["mlops", spec.name, "monitor"],
        params={
            "date": Param(
                None,
                type=["null", "string"],
                format="date",
                title="Day (optional)",
                description="Last day (YYYY-MM-DD) of the monitored window; default: the run's data interval "
                "(for a manual run of a replayed year, the latest validated day).",
            ),
            "window_days": Param(
                spec.monitoring.window_days,
                type="integer",
                minimum=1,
                maximum=366,
                title="Window (days)",
                description="Validated days in the monitored window, ending at the day.",
            ),
        },
    )
    def monitor_dag():
        @task(multiple_outputs=False)
        def monitor(params=None, **context) -> dict:
            """Drift and delayed-label performance of the champion; reports to the lake, MLflow, Evidently."""
            from airflow.sdk.exceptions import AirflowSkipException

            from include.mlops import ingest, monitoring, scoring
            from include.mlops.airflow_adapter import run_interval
            from include.mlops.storage import Lake

            lake = Lake()
            latest = lambda: (ingest.ingested_days(spec, lake) or [None])[-1]  # noqa: E731
            day = run_interval(context, params.get("date"), spec.time, latest)[0]
            tags = {"airflow.dag_id": context["dag"].dag_id, "airflow.run_id": context["run_id"]}
            try:
                result = monitoring.run_monitor(spec, lake, day, window_days=params["window_days"], tags=tags)
            except (scoring.NoChampionError, monitoring.MonitoringError) as exc:
                raise AirflowSkipException(str(exc)) from None
            print(f"monitor {day}: {result.metrics}\nreport: {result.uris.get('html')}")
            return result.as_dict()

        @task(multiple_outputs=False)
        def decide(result: dict, **context) -> dict:
            """The retrain policy (debounced; blocked while training runs); the decision is recorded."""
            from include.mlops import monitoring
            from include.mlops.storage import Lake

            running = context["ti"].get_dr_count(dag_id=train_dag_id, states=["queued", "running"]) > 0
            record = monitoring.decide_and_record(
                spec, Lake(), result, training_running=running, extra={"airflow.run_id": context["run_id"]}
            )
            print(("RETRAIN: " if record["retrain"] else "no retrain: ") + "\n".join(record["reasons"]))
            return record

        @task
        def alert(decision: dict) -> str | None:
            """Alert on any trigger, requested or not."""
            from include.mlops.airflow_adapter import send_alert

            if not decision["alert"]:
                return None
            blocked = {"debounce": "retrain debounced", "cooldown": "retrain cooling down after a rejection"}
            what = {**blocked, "training_running": "training already running"}.get(
                decision["blocked_by"], "retrain requested"
            )
            subject = f"[mlops] {spec.name} monitor {decision['day']}: {', '.join(decision['triggers'])} ({what})"
            return send_alert(subject, "\n".join(decision["reasons"]) + f"\nreport: {decision.get('report_uri')}")

        @task(multiple_outputs=False, outlets=[retrain])
        def request_retrain(decision: dict, outlet_events=None) -> dict:
            """Emit the retrain Asset event that the training DAG is scheduled on (only when decided)."""
            from airflow.sdk.exceptions import AirflowSkipException

            if not decision["retrain"]:
                raise AirflowSkipException("no retrain: " + " | ".join(decision["reasons"]))
            extra = {
                "day": decision["day"],
                "triggers": decision["triggers"],
                "reasons": decision["reasons"],
                "champion_version": decision["model_version"],
                "decision_uri": decision["uri"],
            }
            outlet_events[retrain].extra = extra
            return extra

        @task(multiple_outputs=False, outlets=[retrain])
        def propose_shadow(result: dict, decision: dict, outlet_events=None) -> dict:
            """A shadow shown better than the champion proposes its promotion: to the gate in the train DAG."""
            from airflow.sdk.exceptions import AirflowSkipException

            if not decision.get("propose_shadow"):
                shadow = (result.get("metrics") or {}).get("shadow")
                raise AirflowSkipException(
                    f"no proposal: {shadow['verdict']}: {shadow.get('detail', '')}" if shadow else "no shadow"
                )
            shadow = result["metrics"]["shadow"]
            extra = {
                "day": decision["day"],
                "shadow_version": decision["propose_shadow"],
                "window": shadow["window"],
                "champion_version": decision["model_version"],
                "detail": shadow.get("detail"),
                "decision_uri": decision["uri"],
            }
            outlet_events[retrain].extra = extra
            print(f"shadow v{extra['shadow_version']} proposes its promotion: {extra['detail']}")
            return extra

        result = monitor()
        decision = decide(result)
        alert(decision) >> request_retrain(decision)
        propose_shadow(result, decision)

    return monitor_dag()


for _path in spec_paths():
    _spec = load_spec_file(_path)
    globals()[f"{_spec.name}_monitor"] = build(_spec)
