"""
### `<dataset>_train` — features → candidates (MLflow) → challenger

Built once per dataset spec in `include/config/` (the flights spec gives `flights_train`).

Scheduled on `validated/<dataset> | retrain/<dataset>`: every batch of validated days wakes it, and **plan**
decides whether training is due — at least `training.cadence_days` new validated days since the window of the
last registered version (or no model yet). A fresh retrain request from `<dataset>_monitor` (drift or degraded
performance, already debounced there) always trains, and so does a manual run, with the window, candidates,
search budget and seed from the trigger form. A request whose day is not after the last registered version's
window end is stale (that training already covered it, e.g. an old event the scheduler replays) and only the
cadence applies.

1. **plan** — the training window: the `window_days` validated days ending at `window_end` (default: the
   latest validated day). Not due → the rest is skipped, with the reason in the log.
2. **build_features** — the feature table for the window (plus 28 days of history for point-in-time delay
   rates), materialised as `features/<dataset>/version=<hash>`; the same inputs reuse the same version.
3. **train** — a time-ordered train/validation/test split; every candidate of the spec (logistic-regression
   baseline, HistGradientBoosting with a seeded randomized search) under one MLflow parent run with a nested
   run per candidate; the best becomes a new version of registered model `<dataset>` with alias `challenger`.
4. **evaluate** — the gate: challenger and current champion scored on the same held-out window; superiority
   (`gate.min_roc_auc_gain`: a champion is replaced only by a challenger shown better on the same rows); absolute
   thresholds, non-regression against the champion, slice gaps (carrier, origin), policy (signature, no
   forbidden/leaking features, model size, scoring latency). The report is written to
   `reports/gate/<dataset>/v<version>/gate.html` in the lake and logged to MLflow; the decision is tagged on
   the version.
5. **decide** → **promote** (alias `champion` moves, the previous champion is recorded, an audit entry is
   written and the `model/<dataset>@champion` Asset event is emitted) or **reject** (the version is tagged
   rejected with its reasons, the champion is untouched, an alert names the failed checks; a candidate rejected
   only for not beating the champion becomes the **shadow**: it scores every day beside the champion and
   `<dataset>_monitor` compares the two on live labels). A shadow shown better proposes itself through a
   `retrain/<dataset>` event: **plan** then skips features and training and **evaluate** gates the shadow on the
   window the monitor compared it on. When the spec
   sets `gate.require_approval`, an **approve** step (Airflow human-in-the-loop) shows the gate report and
   waits for *Approve* / *Reject* before the alias moves.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.mlops.airflow_adapter import asset, dag_dates, default_args
from include.mlops.config import DatasetSpec, load_spec_file, spec_paths


def build(spec: DatasetSpec):
    validated = asset("validated", spec.name)
    retrain = asset("retrain", spec.name)
    champion = asset("champion", spec.name)
    names = [c.name for c in spec.training.candidates]

    @dag(
        dag_id=f"{spec.name}_train",
        description=f"Build features and train {spec.name} candidates; register the best as challenger",
        doc_md=__doc__,
        schedule=validated | retrain,
        start_date=dag_dates(spec.time)["start_date"],
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec.owner) | {"execution_timeout": spec.timeouts.execution_timeout("train")},
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
                examples=names,  # the trigger form shows an array with examples as a multi-select
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
            "gate_shadow": Param(
                False,
                type="boolean",
                title="Gate the shadow instead of training",
                description="Send the current shadow (the latest candidate not promoted, scoring beside the champion) "
                "through the gate on its test split and the days since, as the monitor does when it proposes it; "
                "nothing is trained.",
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
            from include.mlops import registry, training
            from include.mlops.lineage import trigger
            from include.mlops.storage import Lake

            requests = [e.extra for e in (context.get("triggering_asset_events") or {}).get(retrain, [])]
            last_end = training.last_trained_window_end(spec)
            run = context["dag_run"]
            request = None
            shadow = registry.shadow_version(spec) if requests or params.get("gate_shadow") else None
            proposal = training.shadow_proposal(requests, shadow) if run.run_type != "manual" else None
            if params.get("gate_shadow") and run.run_type == "manual":
                proposal = _manual_shadow_proposal(spec, shadow, params.get("window_end"))
            if proposal is not None:
                start, end = proposal["window"]
                reason = f"shadow v{proposal['shadow_version']} proposes its promotion: {proposal.get('detail')}"
                print(f"{reason}\nto the gate on {start}..{end}; nothing is trained in this run")
                return {"due": True, "shadow_version": str(proposal["shadow_version"]), "start": start, "end": end,
                        "reason": reason}  # fmt: skip
            if run.run_type == "manual":
                force = "manual run"
            else:  # a request the last training already covered (an old event replayed) is stale: cadence only
                request = training.fresh_retrain_request(requests, last_end)
                force = training.retrain_request_reason(requests, last_end) or False
                if requests and not force:
                    print(f"ignored {len(requests)} stale retrain request(s): last window ends {last_end}")
            p = training.plan_training(
                spec, Lake(), window_end=params.get("window_end"), window_days=params.get("window_days"),
                force=force, last_end=None if force else last_end,
            )  # fmt: skip
            kind = "manual" if run.run_type == "manual" else "monitor" if request is not None else "schedule"
            user = getattr(run, "triggering_user_name", None)
            p["trigger"] = trigger(kind, reason=p["reason"], user=user, dag_id=run.dag_id, run_id=run.run_id,
                                   request=request)  # fmt: skip
            print(f"training plan: {p}")
            return p if p["due"] else None

        @task(multiple_outputs=False)
        def build_features(p: dict, **context) -> dict:
            """Materialise (or reuse) the feature table of the window (skipped for a shadow's proposal)."""
            from airflow.sdk.exceptions import AirflowSkipException

            from include.mlops import features
            from include.mlops.storage import Lake

            if p.get("shadow_version"):
                raise AirflowSkipException(f"nothing to train: {p['reason']}")

            return features.materialize_features(spec, Lake(), p["start"], p["end"], run_id=context["run_id"]).as_dict()

        @task(multiple_outputs=False)
        def train(p: dict, table: dict, params=None, **context) -> dict:
            """Train the candidates under MLflow; register the best as the challenger."""
            from include.mlops import features, training
            from include.mlops.storage import Lake

            lake = Lake()
            df = features.read_feature_table(spec, lake, table["version"])
            tags = {"airflow.dag_id": context["dag"].dag_id, "airflow.run_id": context["run_id"],
                    "window_start": p["start"], "window_end": p["end"]}  # fmt: skip
            result = training.train_candidates(
                spec, df, seed=params["seed"], search_iterations=params["search_iterations"],
                candidates=params["candidates"], tags=tags,
                inputs=features.feature_inputs(spec, lake, table["version"]), trigger=p.get("trigger"),
            )  # fmt: skip
            return result.as_dict()

        @task(multiple_outputs=False, trigger_rule="none_failed_min_one_success")
        def evaluate(p: dict, trained: dict | None) -> dict:
            """The gate: challenger vs champion on the same window (the new candidate's test split, or the
            shadow's comparison window when it proposed itself); report saved, logged, tagged."""
            from include.mlops import evaluation
            from include.mlops.storage import Lake

            proposed = trained is None  # a shadow's proposal: gated on the window the monitor compared it on
            window = {"start": p["start"], "end": p["end"]} if proposed else {}
            version = p["shadow_version"] if proposed else trained["model_version"]
            report = evaluation.evaluate_challenger(spec, Lake(), version=version, **window)
            print(report.to_markdown())
            return report.as_dict() | {"markdown": report.to_markdown(), "may_shadow": report.may_shadow,
                                       "proposed_shadow": proposed}  # fmt: skip

        @task.branch
        def decide(report: dict, **context) -> str:
            """Passed → promote (through approval when the spec asks: the candidate shadows the champion while it
            waits); failed → reject."""
            if report["decision"] != "passed":
                return "reject"
            if spec.gate.require_approval:
                from include.mlops import registry

                registry.set_shadow(spec, report["challenger_version"], reason="passed the gate, awaits approval",
                                    dag_run=context["run_id"])  # fmt: skip
                return "approve"
            return "promote"

        @task(multiple_outputs=False, outlets=[champion], trigger_rule="none_failed_min_one_success")
        def promote(report: dict, outlet_events=None, **context) -> dict:
            """Move alias champion to the challenger; audited; emits the champion Asset event."""
            from include.mlops import registry

            approver = _approver(context)
            entry = registry.promote(
                spec, report["challenger_version"], reason="gate passed: " + _checks_line(report),
                dag_run=context["run_id"], approver=approver,
            )  # fmt: skip
            outlet_events[champion].extra = {"version": entry.to_version, "previous": entry.from_version}
            return entry.as_dict() | {"gate_report_uri": (report.get("uris") or {}).get("html")}

        @task(multiple_outputs=False)
        def reject(report: dict, **context) -> dict:
            """Tag the version rejected with its reasons; the champion stays; alert."""
            from include.mlops import registry
            from include.mlops.airflow_adapter import send_alert

            reasons = report["failed"]
            version = report["challenger_version"]
            entry = registry.reject(spec, version, reasons, dag_run=context["run_id"])
            message = f"{spec.name} v{version} rejected by the gate: {', '.join(reasons)}"
            if report.get("may_shadow") and not report.get("proposed_shadow"):
                # not shown better than the champion, but sound: it scores beside it and may propose itself later
                shadow = registry.set_shadow(spec, version, reason="not shown better: " + ", ".join(reasons),
                                             dag_run=context["run_id"])  # fmt: skip
                message += f"; v{version} is the shadow now" if shadow else ""
            print(message + "\n" + report["markdown"])
            send_alert(f"[mlops] gate rejected {spec.name} v{version}", message)
            return entry.as_dict() | {"gate_report_uri": (report.get("uris") or {}).get("html")}

        planned = plan()
        trained = train(planned, build_features(planned))
        report = evaluate(planned, trained)
        branch = decide(report)
        promoted = promote(report)
        branch >> reject(report)
        if spec.gate.require_approval:
            from airflow.providers.standard.operators.hitl import ApprovalOperator

            approve = ApprovalOperator(
                task_id="approve",
                subject=f"Promote {spec.name} v{{{{ ti.xcom_pull(task_ids='evaluate')['challenger_version'] }}}} "
                "to champion?",
                body="{{ ti.xcom_pull(task_ids='evaluate')['markdown'] }}",
                # a human's wait: the DAG's execution_timeout would become a response timeout here (HITL)
                execution_timeout=None,
            )
            branch >> approve >> promoted
        else:
            branch >> promoted

    return train_dag()


def _manual_shadow_proposal(spec: DatasetSpec, shadow: str | None, window_end: str | None) -> dict:
    """A manual run's "gate the shadow": its comparison window ending at ``window_end`` (default: the latest
    validated day), as the monitor would propose it."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.mlops import ingest, monitoring
    from include.mlops.evaluation import training_test_window
    from include.mlops.storage import Lake

    if shadow is None:
        raise AirflowFailException(f"{spec.name}: there is no shadow to gate (registry alias 'shadow')")
    end = window_end or (ingest.ingested_days(spec, Lake()) or [None])[-1]
    start, end = monitoring.shadow_window(spec, training_test_window(spec, shadow)[0], end)
    return {"shadow_version": shadow, "window": [start.isoformat(), end.isoformat()], "detail": "asked by hand"}


def _checks_line(report: dict) -> str:
    def value(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{c['name']}={value(c['value'])}" for c in report["checks"] if c["verdict"] == "pass")[:500]


def _approver(context) -> str | None:
    """Who approved in the HITL step, if there was one."""
    if not spec_requires_approval(context):
        return None
    response = context["ti"].xcom_pull(task_ids="approve") or {}
    user = response.get("responded_by_user") or response.get("responded_by") or {}
    return user.get("name") if isinstance(user, dict) else str(user or "") or None


def spec_requires_approval(context) -> bool:
    return "approve" in context["dag"].task_ids


for _path in spec_paths():
    _spec = load_spec_file(_path)
    globals()[f"{_spec.name}_train"] = build(_spec)
