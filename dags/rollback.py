"""
### `<dataset>_rollback` — move `champion` back, audited

Built once per dataset spec in `include/config/` (the flights spec gives `flights_rollback`). Manual only.

Moves the registered model's `champion` alias to `version` — by default the previous champion from the
audit history (repeated rollbacks walk further back instead of bouncing between two versions). A version
that does not exist or was never approved (never champion, gate never passed) is refused with a named
error. Every rollback is an audit entry in MLflow (from, to, when, why, DAG run, who triggered it), and emits
the `model/<dataset>@champion` Asset event so scoring picks the change up.

History from the shell: `python -m include.mlops audit <dataset> [--at 2013-03-01T00:00]`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.mlops.airflow_adapter import asset, dag_dates, default_args
from include.mlops.config import DatasetSpec, load_spec_file, spec_paths


def build(spec: DatasetSpec):
    champion = asset("champion", spec.name)

    @dag(
        dag_id=f"{spec.name}_rollback",
        description=f"Move the {spec.name} champion alias back to an approved version (audited)",
        doc_md=__doc__,
        schedule=None,
        start_date=dag_dates(spec.time)["start_date"],
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec.owner)
        | {"retries": 1, "execution_timeout": spec.timeouts.execution_timeout("rollback")},
        tags=["mlops", spec.name, "registry"],
        params={
            "version": Param(
                None,
                type=["null", "string", "integer"],
                title="Version (optional)",
                description="Registered model version to make champion again; default: the previous champion.",
            ),
            "reason": Param(
                "manual rollback",
                type="string",
                minLength=3,
                title="Reason",
                description="Why: kept in the audit history.",
            ),
        },
    )
    def rollback_dag():
        @task(multiple_outputs=False, outlets=[champion])
        def rollback(params=None, outlet_events=None, **context) -> dict:
            """Move champion back; refuse unknown or never-approved versions."""
            from airflow.sdk.exceptions import AirflowFailException

            from include.mlops import registry

            who = getattr(context["dag_run"], "triggering_user_name", None)
            version = None if params.get("version") in (None, "") else str(params["version"])
            try:
                entry = registry.rollback(
                    spec, version, reason=params["reason"], dag_run=context["run_id"], approver=who
                )
            except registry.RegistryError as exc:
                raise AirflowFailException(f"rollback refused: {exc}") from None
            outlet_events[champion].extra = {"version": entry.to_version, "previous": entry.from_version}
            print(f"champion {entry.from_version} -> {entry.to_version} ({entry.reason})")
            return entry.as_dict()

        rollback()

    return rollback_dag()


for _path in spec_paths():
    _spec = load_spec_file(_path)
    globals()[f"{_spec.name}_rollback"] = build(_spec)
