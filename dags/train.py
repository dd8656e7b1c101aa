"""
### `<dataset>_train` — features → candidates (MLflow) → challenger

Built once per dataset spec in `include/config/` (the flights spec gives `flights_train`).

Scheduled on the `validated/<dataset>` Asset: every batch of validated days wakes it, and **plan** decides
whether training is due — at least `training.cadence_days` new validated days since the window of the last
registered version (or no model yet). A manual run always trains, with the window, candidates, search
budget and seed from the trigger form.

1. **plan** — the training window: the `window_days` validated days ending at `window_end` (default: the
   latest validated day). Not due → the rest is skipped, with the reason in the log.
2. **build_features** — the feature table for the window (plus 28 days of history for point-in-time delay
   rates), materialised as `features/<dataset>/version=<hash>`; the same inputs reuse the same version.
3. **train** — a time-ordered train/validation/test split; every candidate of the spec (logistic-regression
   baseline, HistGradientBoosting with a seeded randomized search) under one MLflow parent run with a nested
   run per candidate; the best becomes a new version of registered model `<dataset>` with alias `challenger`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, task

from include.mlops.airflow_adapter import default_args
from include.mlops.config import DatasetSpec, load_spec_file, spec_paths


def build(spec: DatasetSpec):
    validated = Asset(name=f"validated/{spec.name}", uri=f"mlops://validated/{spec.name}", group="lake")
    names = [c.name for c in spec.training.candidates]

    @dag(
        dag_id=f"{spec.name}_train",
        description=f"Build features and train {spec.name} candidates; register the best as challenger",
        doc_md=__doc__,
        schedule=[validated],
        start_date=pendulum.datetime(spec.time.start.year, spec.time.start.month, spec.time.start.day, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec.owner),
        tags=["mlops", spec.name, "train"],
        params={
            "window_end": Param(
                None,
                type=["null", "string"],
                format="date",
                title="Window end (optional)",
                description="Last day (YYYY-MM-DD) of the training window; default: the latest validated day.",
            ),
            "window_days": Param(
                spec.training.window_days,
                type="integer",
                minimum=spec.training.validation_days + spec.training.test_days + 1,
                title="Window length (days)",
                description="Validated days in the window; the last test_days are the test split, the "
                "validation_days before them the validation split (time-ordered, never random).",
            ),
            "candidates": Param(
                names,
                type="array",
                items={"type": "string", "enum": names},
                title="Candidates",
                description=f"Which candidate models of the spec to train: {', '.join(names)}.",
            ),
            "search_iterations": Param(
                spec.training.search_iterations,
                type="integer",
                minimum=1,
                maximum=50,
                title="Search budget",
                description="Randomized-search settings tried per candidate (seeded).",
            ),
            "seed": Param(
                spec.training.seed,
                type="integer",
                title="Seed",
                description="Same seed + same feature version = the same metrics.",
            ),
        },
    )
    def train_dag():
        @task.short_circuit
        def plan(params=None, **context) -> dict | None:
            """Decide the window and whether training is due (scheduled runs follow the cadence)."""
            from include.mlops import training
            from include.mlops.storage import Lake

            manual = context["dag_run"].run_type == "manual"
            p = training.plan_training(
                spec, Lake(), window_end=params.get("window_end"), window_days=params.get("window_days"),
                force=manual, last_end=None if manual else training.last_trained_window_end(spec),
            )  # fmt: skip
            print(f"training plan: {p}")
            return p if p["due"] else None

        @task
        def build_features(p: dict, **context) -> dict:
            """Materialise (or reuse) the feature table of the window."""
            from include.mlops import features
            from include.mlops.storage import Lake

            return features.materialize_features(spec, Lake(), p["start"], p["end"], run_id=context["run_id"]).as_dict()

        @task
        def train(p: dict, table: dict, params=None, **context) -> dict:
            """Train the candidates under MLflow; register the best as the challenger."""
            from include.mlops import features, training
            from include.mlops.storage import Lake

            df = features.read_feature_table(spec, Lake(), table["version"])
            tags = {"airflow.dag_id": context["dag"].dag_id, "airflow.run_id": context["run_id"],
                    "window_start": p["start"], "window_end": p["end"]}  # fmt: skip
            result = training.train_candidates(
                spec, df, seed=params["seed"], search_iterations=params["search_iterations"],
                candidates=params["candidates"], tags=tags,
            )  # fmt: skip
            return result.as_dict()

        planned = plan()
        train(planned, build_features(planned))

    return train_dag()


for _path in spec_paths():
    _spec = load_spec_file(_path)
    globals()[f"{_spec.name}_train"] = build(_spec)
