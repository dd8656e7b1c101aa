"""
### `<dataset>_materialize` — the online feature store, one validated day at a time

Built once per dataset spec in `include/config/` (the flights spec gives `flights_materialize`).

Scheduled on the `validated/<dataset>` Asset: every validated day is written to the online feature store (Feast;
`include/mlops/feature_store.py`), the features computed by the same engine as training and batch scoring
(`features.features_for_dates`), keyed by the spec's `entity_keys`. The scoring server then answers requests
that carry only the entity keys and the spec's `online.request_fields` (README "Online features").

Incremental and idempotent: a run writes the days its triggering events name, and the materialized days whose
windows read them (a day validated late, e.g. by a parallel backfill, is history for the next 28 days); a day
whose stored rows already hold the lake's feature version is skipped, a re-validated day is rewritten. The
store is the embedded SQLite one unless `MLOPS_ONLINE_STORE` names a Redis (`redis://host:port/<db>`). A run
emits the `online/<dataset>` Asset event naming the days written.

**Manual:** trigger with `date` (YYYY-MM-DD) to (re)materialize one validated day.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from include.mlops.airflow_adapter import asset, dag_dates, day_param, default_args, validated_days
from include.mlops.config import DatasetSpec, load_spec_file, spec_paths


def build(spec: DatasetSpec):
    validated = asset("validated", spec.name)
    online = asset("online", spec.name)

    @dag(
        dag_id=f"{spec.name}_materialize",
        description=f"Write each validated {spec.name} day's features to the online feature store",
        doc_md=__doc__,
        schedule=[validated],
        start_date=dag_dates(spec.time)["start_date"],
        catchup=False,
        max_active_runs=1,  # one writer per store: days land in order
        default_args=default_args(spec.owner) | {"execution_timeout": spec.timeouts.execution_timeout("materialize")},
        tags=["mlops", spec.name, "features"],
        params={"date": day_param("materialize")},
    )
    def materialize_dag():
        @task(outlets=[online])
        def materialize(params=None, outlet_events=None, **context) -> list[dict]:
            """Write each validated day of the run to the online store; emit the online Asset event."""
            from airflow.sdk.exceptions import AirflowFailException

            from include.mlops import feature_store
            from include.mlops.storage import Lake

            lake = Lake()
            days = feature_store.days_to_materialize(spec, lake, validated_days(context, validated, params.get("date")))
            try:
                store = feature_store.open_store(spec, apply=True, lake_uri=lake.url)
                results = [feature_store.materialize_day(spec, lake, d, store=store) for d in days]
            except feature_store.OnlineStoreError as exc:
                raise AirflowFailException(str(exc)) from None
            for r in results:
                print(feature_store.describe(r))
            outlet_events[online].extra = {"dates": [r["date"] for r in results if r["written"]]}
            return results

        materialize()

    return materialize_dag()


for _path in spec_paths():
    _spec = load_spec_file(_path)
    globals()[f"{_spec.name}_materialize"] = build(_spec)
