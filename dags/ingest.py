"""
### `<dataset>_ingest` — land, validate and publish one day

Built once per dataset spec in `include/config/` (the flights spec gives `flights_ingest`).

Each run covers one day (its data interval): **extract** that day's rows of every source table from the
spec's Airflow connection into the lake's `raw/` zone (always kept), then **validate** them with the Great
Expectations suite built from the spec. A `critical` failure quarantines the whole day and fails the run
with the failed expectations named; `warning` failures quarantine only the offending rows (with reasons in
`quarantine/<dataset>/date=…/reasons.json`) and the rest lands in `validated/`, which emits the
`validated/<dataset>` Asset event that scoring and training are scheduled on. GX Data Docs of every run
are under `reports/gx/<dataset>/date=…/docs/index.html` in the lake.

**Replay 2013:** `airflow backfill create --dag-id flights_ingest --from-date 2013-01-01 --to-date 2013-01-31`.
**Manual ingest of a file:** trigger with `source_uri` (CSV or Parquet under an allowed root) and `date`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.mlops.airflow_adapter import asset, dag_dates, daily_schedule, default_args
from include.mlops.config import DatasetSpec, load_spec_file, spec_paths


def build(spec: DatasetSpec):
    validated = asset("validated", spec.name)

    @dag(
        dag_id=f"{spec.name}_ingest",
        description=f"Extract, validate (GX) and publish one day of {spec.name}",
        doc_md=__doc__,
        schedule=daily_schedule(spec),  # real [day, day + 1) intervals; the replay clock for a past year
        **dag_dates(spec.time),
        catchup=False,
        max_active_runs=8,
        default_args=default_args(spec.owner) | {"execution_timeout": spec.timeouts.execution_timeout("ingest")},
        tags=["mlops", spec.name, "ingest"],
        params={
            "source_uri": Param(
                None,
                type=["null", "string"],
                title="File to ingest (optional)",
                description="CSV or Parquet file path/URL under an allowed root (MLOPS_INGEST_ALLOWED_ROOTS). "
                "Its rows replace the primary table for the day and go through exactly the same validation.",
            ),
            "date": Param(
                None,
                type=["null", "string"],
                format="date",
                title="Day (optional)",
                description="The day (YYYY-MM-DD) the rows belong to; default: the run's data interval (for a "
                "manual run of a replayed year, the next day not yet ingested).",
            ),
        },
    )
    def ingest():
        @task(multiple_outputs=False)
        def extract(params=None, **context) -> dict:
            """Land the day's source rows (or the given file) in raw/."""
            from airflow.sdk.exceptions import AirflowFailException

            from include.mlops import ingest, sources
            from include.mlops.airflow_adapter import run_interval, source_url
            from include.mlops.storage import Lake

            lake = Lake()
            start, end = run_interval(context, params.get("date"), spec.time, lambda: ingest.next_day(spec, lake))
            try:
                raw = ingest.extract_to_raw(
                    spec, lake, source_url(spec.source.connection_id), start, end,
                    run_id=context["run_id"], source_uri=params.get("source_uri"),
                )  # fmt: skip
            except sources.InputRefused as exc:
                raise AirflowFailException(f"input refused - {exc}") from None
            return raw.as_dict() | {"start": start.isoformat(), "end": end.isoformat()}

        @task(multiple_outputs=False, outlets=[validated])
        def validate(raw: dict, outlet_events=None, **context) -> dict:
            """Validate with GX; publish validated rows, quarantine the rest with reasons."""
            from datetime import date

            from airflow.sdk.exceptions import AirflowFailException

            from include.mlops import ingest, validation
            from include.mlops.airflow_adapter import send_alert
            from include.mlops.storage import Lake

            start, end = date.fromisoformat(raw["start"]), date.fromisoformat(raw["end"])
            try:
                result = ingest.validate_raw(spec, Lake(), start, end, run_id=context["run_id"])
            except (validation.ValidationFailed, ingest.InputRejected) as exc:
                raise AirflowFailException(str(exc)) from None  # bad data: a retry cannot help
            if result["rows_quarantined"]:
                send_alert(f"[mlops] quarantine: {spec.name} {result['partition']}", "\n".join(result["warnings"]))
            keep = ("partition", "uri", "rows", "sha256", "status", "rows_quarantined", "docs_uri")
            outlet_events[validated].extra = {k: result[k] for k in keep}
            return result

        validate(extract())

    return ingest()


for _path in spec_paths():
    _spec = load_spec_file(_path)
    globals()[f"{_spec.name}_ingest"] = build(_spec)
