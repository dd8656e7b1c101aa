"""
### `<dataset>_reconcile` — score validated days that have no predictions

Built once per dataset spec in `include/config/` (the flights spec gives `flights_reconcile`).

`<dataset>_score` runs on the `validated/<dataset>` Asset event; an event that starts no run (Airflow's asset
event race, apache/airflow#56050) or a run skipped before the first champion leaves a validated day without
predictions, and nothing else would notice. Every 10 minutes this DAG lists the validated days without
predictions from the first champion's first day on (the day after its training window, or the earliest stored
prediction) up to the latest validated day, scores the oldest `max_days` of them with the champion through the
same library call as `<dataset>_score` (a day another version served meanwhile is kept), and emits the
`predictions/<dataset>` Asset event. So a lost event costs minutes, not a gap. Without a champion it is skipped.

**audit_aliases** compares the registered model's `champion` alias with the champion the registry's audit history
ends with. An alias moved outside the pipeline (the MLflow UI's alias editor, a script on the MLflow API) bypassed
the gate and approval: it is written into the audit history as an `external` entry and alerted (connection
`mlops_alerts`), within 10 minutes. The pipeline does not move it back: a person decides (rollback DAG).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.mlops.airflow_adapter import asset, default_args
from include.mlops.config import DatasetSpec, load_spec_file, spec_paths


def build(spec: DatasetSpec):
    import pendulum

    predictions = asset("predictions", spec.name)

    @dag(
        dag_id=f"{spec.name}_reconcile",
        description=f"Score validated {spec.name} days that have no predictions (a lost Asset event)",
        doc_md=__doc__,
        schedule="*/10 * * * *",  # wall-clock: it checks the lake as it is now, whatever data time it holds
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec.owner) | {"execution_timeout": spec.timeouts.execution_timeout("reconcile")},
        tags=["mlops", spec.name, "score"],
        params={
            "max_days": Param(
                31, type="integer", minimum=1, title="Days per run", description="Oldest unscored days scored per run."
            ),
        },
    )
    def reconcile_dag():
        @task(outlets=[predictions])
        def reconcile(params=None, outlet_events=None, **context) -> list[dict]:
            """Find validated days without predictions and score them with the champion."""
            from airflow.sdk.exceptions import AirflowSkipException

            from include.mlops import scoring
            from include.mlops.storage import Lake

            try:
                results = scoring.reconcile(spec, Lake(), max_days=params["max_days"], run_id=context["run_id"])
            except scoring.NoChampionError as exc:
                raise AirflowSkipException(f"nothing reconciled: {exc}") from None
            if not results:
                print("every validated day since the first champion has predictions")
            for r in results:
                print(scoring.describe(r))
            outlet_events[predictions].extra = scoring.announced(results) | {"reconciled": True}
            return results

        @task
        def audit_aliases() -> dict | None:
            """Record and alert a champion alias moved outside the pipeline (audit history vs MLflow)."""
            from include.mlops import registry
            from include.mlops.airflow_adapter import send_alert

            entry = registry.reconcile_aliases(spec)
            if entry is None:
                print("champion alias matches the audit history")
                return None
            moved = f"{entry.from_version or 'none'} -> {entry.to_version or 'none'}"
            send_alert(f"[mlops] {spec.name} champion moved outside the pipeline: {moved}", entry.reason)
            return entry.as_dict()

        reconcile()
        audit_aliases()

    return reconcile_dag()


for _path in spec_paths():
    _spec = load_spec_file(_path)
    globals()[f"{_spec.name}_reconcile"] = build(_spec)
