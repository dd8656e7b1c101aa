"""
### `<dataset>_score` — batch scoring with the champion

Built once per dataset spec in `include/config/` (the flights spec gives `flights_score`).

Scheduled on the `validated/<dataset>` Asset: every validated day published by `<dataset>_ingest` is scored
with the registered model's `champion` alias (`models:/<dataset>@champion`). When several validated events
queue behind one run, every day they name (the event's `partition`) is scored, each once. Features are built
by the same code as training (`features.features_for_dates`), so scoring cannot skew from training.

Each day lands in `predictions/<dataset>/date=…` of the lake: entity keys, `probability`, `prediction` (0/1
at the version's tuned `threshold`), `model_version` and `role` (`champion`); outcomes are joined later by the
monitor from the validated zone. A run then emits the `predictions/<dataset>` Asset event.

**The shadow:** when the registered model has a `shadow` alias (a version newer than the champion, rejected or
awaiting approval), the same feature rows are scored by it too, into `shadow/<dataset>/version=<v>/date=…`
(same columns, `role` = `shadow`). Nothing is served from it and no Asset event names it: the monitor compares
it with the champion on the labels. A kept day (below) still gets the shadow's rows when they are missing; a
re-score never runs the shadow. A shadow that cannot be scored is logged (the day's log line names the shadow's
result) and never fails the run.

Before the first promotion there is no champion: a scheduled run is **skipped** with that reason (the days
can be scored later by hand); a manual run with a `date` fails with it.
**Served history is a record:** a day whose predictions were written by another model version is kept as it
was (the log names the version that served it), so a scheduled run woken by old validated events cannot rewrite
history; a re-run by the same version rewrites identical content.

**Manual:** trigger with `date` (YYYY-MM-DD) to score one validated day; add `rescore: true` to score it with
the current champion into `rescored/<dataset>/version=<v>/date=…`, a separate labelled output that never
touches `predictions/`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.mlops.airflow_adapter import asset, dag_dates, day_param, default_args
from include.mlops.config import DatasetSpec, load_spec_file, spec_paths


def build(spec: DatasetSpec):
    validated = asset("validated", spec.name)
    predictions = asset("predictions", spec.name)

    @dag(
        dag_id=f"{spec.name}_score",
        description=f"Score validated {spec.name} days with the champion; write predictions to the lake",
        doc_md=__doc__,
        schedule=[validated],
        start_date=dag_dates(spec.time)["start_date"],
        catchup=False,
        max_active_runs=4,
        default_args=default_args(spec.owner) | {"execution_timeout": spec.timeouts.execution_timeout("score")},
        tags=["mlops", spec.name, "score"],
        params={
            "date": day_param("score"),
            "rescore": Param(
                False,
                type="boolean",
                title="Re-score (separate output)",
                description="Score with the current champion into rescored/<dataset>/version=<v>/date=… "
                "instead of predictions/: what was served stays as it was.",
            ),
        },
    )
    def score_dag():
        @task(outlets=[predictions])
        def score(params=None, outlet_events=None, **context) -> list[dict]:
            """Score each validated day of the run with the champion; emit the predictions Asset event."""
            from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

            from include.mlops import scoring
            from include.mlops.airflow_adapter import validated_days
            from include.mlops.storage import Lake

            days = validated_days(context, validated, params.get("date"))
            rescore = bool(params.get("rescore"))
            if not params.get("date") and (context.get("triggering_asset_events") or {}).get(validated):
                days, early = scoring.before_first_scoring_day(spec, Lake(), days)
                if early:
                    print(f"not scored: {len(early)} day(s) {early[0]}..{early[-1]}, before the first champion served")
            try:
                results = [
                    scoring.score_partition(spec, Lake(), d, run_id=context["run_id"], rescore=rescore) for d in days
                ]
            except scoring.NoChampionError as exc:
                if params.get("date"):
                    raise AirflowFailException(str(exc)) from None
                raise AirflowSkipException(f"nothing scored: {exc}") from None
            except scoring.ScoringError as exc:
                raise AirflowFailException(str(exc)) from None
            for r in results:
                print(scoring.describe(r))
            outlet_events[predictions].extra = scoring.announced(results)
            return results

        score()

    return score_dag()


for _path in spec_paths():
    _spec = load_spec_file(_path)
    globals()[f"{_spec.name}_score"] = build(_spec)
