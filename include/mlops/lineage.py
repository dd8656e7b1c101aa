"""Lineage and model cards: what a registered version was built from, why it was trained, how the gate judged it
and who moved it — answered from MLflow alone.

At training, :func:`training_record` becomes the run's ``lineage/lineage.json`` (the validated partitions with
their sha256, the feature table, the search space, seed and budget, git sha and dirty flag, what caused the run)
beside ``lineage/spec.yaml`` (the spec exactly as trained). The gate logs ``gate/gate.json`` on the same run and
tags the version with a ``runs:/`` URI; the registry's audit runs name approver and previous champion.
:func:`explain` gathers those answers for one version; :func:`render_card` turns them into a model card (Markdown
and a self-contained HTML page without scripts), which :func:`log_model_card` logs as ``model_card/`` artifacts
after training, after the gate and after every registry event, and which Model health serves.
"""

from __future__ import annotations

import html
import json
import math
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from include.mlops.config import DatasetSpec
from include.mlops.tracking import client as _client

LINEAGE_ARTIFACT = "lineage/lineage.json"
SPEC_ARTIFACT = "lineage/spec.yaml"
GATE_ARTIFACT = "gate/gate.json"
CARD_HTML = "model_card/model_card.html"
CARD_MD = "model_card/model_card.md"
TRIGGER_KINDS = ("manual", "schedule", "monitor", "cli", "library")


class LineageError(LookupError):
    """A version whose lineage cannot be read (unknown version, or not trained by training.py)."""


# -- recorded at training ----------------------------------------------------------------------------------
def git_dirty() -> bool | None:
    """Whether the checkout has uncommitted changes to tracked files (``MLOPS_GIT_DIRTY`` wins: ``0``/``1``);
    None when it cannot be told (no git binary, not a checkout: e.g. an image built without .git)."""
    env = os.environ.get("MLOPS_GIT_DIRTY")
    if env is not None:
        return env.strip().lower() in ("1", "true", "yes")
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


def trigger(
    kind: str,
    *,
    reason: str = "",
    user: str | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    request: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Why a training run happened, as recorded in its lineage: ``kind`` (manual / schedule / monitor / cli /
    library), who (``user``), the Airflow run, and for a monitor's request its day, triggers and decision record."""
    if kind not in TRIGGER_KINDS:
        raise ValueError(f"trigger kind must be one of {TRIGGER_KINDS}, got {kind!r}")
    req = dict(request or {})
    t = {
        "kind": kind,
        "reason": reason,
        "user": user,
        "dag_id": dag_id,
        "run_id": run_id,
        "decision_uri": req.get("decision_uri"),
        "decision_day": req.get("day"),
        "triggers": list(req.get("triggers") or []),
    }
    return {k: v for k, v in t.items() if v not in (None, "", [])}


def trigger_summary(t: Mapping[str, Any] | None) -> str:
    """One line for a trigger (the version's ``trained_because`` tag and the card)."""
    if not t:
        return "unknown"
    kind = t.get("kind", "unknown")
    who = f" by {t['user']}" if t.get("user") else ""
    run = f" ({t.get('dag_id') or 'run'} {t['run_id']})" if t.get("run_id") else ""
    if kind == "monitor":
        on = f" of {t['decision_day']}" if t.get("decision_day") else ""
        return f"monitor retrain request{on}: {', '.join(t.get('triggers') or []) or t.get('reason') or '?'}{run}"
    why = f": {t['reason']}" if t.get("reason") and t.get("reason") != "manual run" else ""
    return f"{kind}{who}{why}{run}"


def search_spaces(spec: DatasetSpec, names: Sequence[str]) -> dict[str, Any]:
    """Estimator, fixed params and search space of each trained candidate, as the spec declared them."""
    return {
        c.name: {"estimator": c.estimator, "params": dict(c.params), "search_space": dict(c.search_space)}
        for c in spec.training.candidates
        if c.name in names
    }


def training_record(
    spec: DatasetSpec,
    *,
    inputs: Mapping[str, Any] | None,
    trigger_: Mapping[str, Any] | None,
    feature_version: str,
    feature_uri: str | None,
    split: Mapping[str, Any],
    params: Mapping[str, Any],
    candidates: Sequence[str],
    git_sha: str,
    spec_hash: str,
    retrain_of: str | None = None,
) -> dict[str, Any]:
    """The ``lineage/lineage.json`` of a training run (see the module docstring). ``inputs`` is
    :func:`include.mlops.features.feature_inputs` (None when the frame did not come from the lake)."""
    ins = dict(inputs or {"feature_version": feature_version, "feature_uri": feature_uri, "partitions": []})
    return {
        "schema": 1,
        "dataset": spec.name,
        "trigger": dict(trigger_ or trigger("library", reason="train_candidates called directly")),
        "window": {"start": ins.get("start") or split["train"]["start"], "end": ins.get("end") or split["test"]["end"]},
        "inputs": ins,
        "split": dict(split),
        "training": {**dict(params), "candidates": list(candidates), "search_space": search_spaces(spec, candidates)},
        "spec": {"name": spec.name, "hash": spec_hash, "artifact": SPEC_ARTIFACT},
        "code": {"git_sha": git_sha, "git_dirty": git_dirty()},
        "retrain_of": retrain_of,
    }


def spec_text(spec: DatasetSpec) -> str:
    """The spec as trained, as YAML (its canonical content: what ``spec_hash`` hashes, plus the prose)."""
    import yaml

    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)


# -- read back from MLflow ---------------------------------------------------------------------------------
def _artifact(client: Any, run_id: str, path: str) -> str | None:
    import tempfile

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return Path(local).read_text(encoding="utf-8")


def _json_artifact(client: Any, run_id: str, path: str) -> Any | None:
    text = _artifact(client, run_id, path)
    return None if text is None else json.loads(text)


def explain(spec: DatasetSpec, version: str | int, tracking_uri: str | None = None) -> dict[str, Any]:
    """Every lineage question about one registered version, answered from MLflow: partitions with sha256, spec
    text, search space, git sha and dirty flag, feature version, why it was trained, the gate record, approver,
    previous champion, its registry events and its status (champion / shadow / challenger / rejected / candidate)."""
    from mlflow.exceptions import MlflowException

    from include.mlops import registry

    client = _client(tracking_uri)
    version = str(version)
    try:
        mv = client.get_model_version(spec.name, version)
    except MlflowException:
        raise LineageError(f"model {spec.name!r} has no version {version}") from None
    record = _json_artifact(client, mv.run_id, LINEAGE_ARTIFACT)
    if record is None:
        raise LineageError(f"{spec.name} v{version} (run {mv.run_id}) has no {LINEAGE_ARTIFACT}")
    run = client.get_run(mv.run_id)
    tags = mv.tags or {}
    gate = _json_artifact(client, mv.run_id, GATE_ARTIFACT)
    events = [e.as_dict() for e in registry.history(spec, client.tracking_uri) if e.version == version]
    aliases = list(mv.aliases or [])
    promoted = [e for e in events if e["action"] in ("promote", "rollback") and e["to_version"] == version]
    rejected = [e for e in events if e["action"] == "reject"]
    if registry.CHAMPION in aliases:
        status = "champion"
    elif registry.SHADOW in aliases:
        status = "shadow"  # rejected on comparison only, or awaiting approval: scored beside the champion
    elif tags.get("gate.decision") == "rejected":
        status = "rejected"
    elif registry.CHALLENGER in aliases:
        status = "challenger"
    else:
        status = "former champion" if promoted else "candidate"
    if promoted:
        approver = promoted[-1].get("approver") or tags.get("promoted_by") or "pipeline"
        previous = promoted[-1].get("from_version")
    elif rejected:
        approver = rejected[-1].get("approver") or tags.get("rejected_by") or "pipeline"
        previous = rejected[-1].get("from_version")  # the champion that stayed
    else:
        approver, previous = None, tags.get("gate.champion_version")
    return {
        "dataset": spec.name,
        "version": version,
        "status": status,
        "aliases": aliases,
        "run_id": mv.run_id,
        "experiment_id": run.info.experiment_id,
        "run_name": run.data.tags.get("mlflow.runName"),
        "created": mv.creation_timestamp,
        "window": record.get("window"),
        "partitions": (record.get("inputs") or {}).get("partitions") or [],
        "inputs": record.get("inputs") or {},
        "feature_version": (record.get("inputs") or {}).get("feature_version") or tags.get("feature_version"),
        "spec_hash": (record.get("spec") or {}).get("hash"),
        "spec_text": _artifact(client, mv.run_id, SPEC_ARTIFACT),
        "training": record.get("training") or {},
        "search_space": (record.get("training") or {}).get("search_space") or {},
        "split": record.get("split") or {},
        "git_sha": (record.get("code") or {}).get("git_sha"),
        "git_dirty": (record.get("code") or {}).get("git_dirty"),
        "trigger": record.get("trigger") or {},
        "why_trained": trigger_summary(record.get("trigger")),
        "retrain_of": record.get("retrain_of"),
        "candidate": tags.get("candidate"),
        "threshold": tags.get("threshold"),
        "metrics": dict(run.data.metrics),
        "gate": {
            "decision": tags.get("gate.decision"),
            "reasons": [r for r in (tags.get("gate.reasons") or "").split(",") if r],
            "report_uri": tags.get("gate.report_uri"),
            "report_path": tags.get("gate.report_path"),
            "decided_at": tags.get("gate.decided_at"),
            "champion_version": tags.get("gate.champion_version"),
            "report": gate,
        },
        "approver": approver,
        "previous_champion": previous,
        "rejected_reasons": tags.get("rejected_reasons"),
        "events": events,
    }


# -- the model card ----------------------------------------------------------------------------------------
def auc_interval(auc: float | None, rows: float | None, positive_rate: float | None) -> tuple[float, float] | None:
    """A 95 % interval for a ROC AUC from its positives and negatives (Hanley & McNeil, 1982); None when the
    AUC is missing or a class is absent (a one-class slice has no AUC)."""
    if auc is None or rows is None or positive_rate is None or (isinstance(auc, float) and math.isnan(auc)):
        return None
    n_pos = round(float(rows) * float(positive_rate))
    n_neg = round(float(rows)) - n_pos
    if n_pos < 1 or n_neg < 1:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    half = 1.96 * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        if isinstance(v, float) and math.isnan(v):
            return "–"
        return f"{v:,.0f}" if float(v).is_integer() and abs(v) >= 10 else f"{v:.{digits}f}"
    return str(v)


def _auc_text(auc: Any, rows: Any, rate: Any) -> str:
    if auc is None:
        return "n/a (one class)" if rows else "–"
    ci = auc_interval(auc, rows, rate)
    return f"{_f(auc)} [{_f(ci[0])}, {_f(ci[1])}]" if ci else _f(auc)


def card_sections(spec: DatasetSpec, ex: Mapping[str, Any]) -> list[tuple[str, list[list[str]] | str]]:
    """The card's content as (title, table rows or text) sections, shared by the Markdown and HTML renderings."""
    trained = _trained_spec(ex) or spec
    m = ex.get("metrics") or {}
    win = ex.get("window") or {}
    parts = ex.get("partitions") or []
    gate = ex.get("gate") or {}
    report = gate.get("report") or {}
    sections: list[tuple[str, list[list[str]] | str]] = [
        ("Purpose", trained.description.strip()),
        (
            "Status",
            [
                ["status", ex["status"]],
                ["aliases", ", ".join(ex.get("aliases") or []) or "none"],
                ["candidate", f"{ex.get('candidate') or '?'} (threshold {_f(_num(ex.get('threshold')), 4)})"],
                ["why trained", ex.get("why_trained") or "unknown"],
                ["approver", ex.get("approver") or "– (not promoted or rejected yet)"],
                ["previous champion", f"v{ex['previous_champion']}" if ex.get("previous_champion") else "none"],
            ],
        ),
        (
            "Data",
            [
                ["window", f"{win.get('start', '?')} .. {win.get('end', '?')}"],
                *[
                    [f"{name} split", f"{s.get('start')} .. {s.get('end')}, {_f(s.get('rows'))} rows"]
                    for name, s in (ex.get("split") or {}).items()
                ],
                ["validated partitions", f"{len(parts)} (history days included)"],
                ["feature version", str(ex.get("feature_version"))],
                ["feature table sha256", str((ex.get("inputs") or {}).get("feature_sha256") or "–")],
            ],
        ),
        ("Partitions", [[p["partition"], str(p.get("rows", "–")), p["sha256"]] for p in parts]),
        ("Features", [[f.name, f.dtype, f.description] for f in trained.features]),
        (
            "Metrics on the test split",
            [
                [
                    "ROC AUC [95 % CI]",
                    _auc_text(m.get("test_roc_auc"), m.get("test_rows"), m.get("test_positive_rate")),
                ],
                *[[k, _f(m.get(f"test_{k}"))] for k in ("brier", "pr_auc", "log_loss", "f1", "precision", "recall")],
                ["rows / positive rate", f"{_f(m.get('test_rows'))} / {_f(m.get('test_positive_rate'))}"],
            ],
        ),
    ]
    if report:
        cm = report.get("challenger_metrics") or {}
        w = report.get("window") or {}
        sections.append(
            (
                "Gate record",
                [
                    [
                        "decision",
                        f"{gate.get('decision') or report.get('decision')} at {gate.get('decided_at') or '?'}",
                    ],
                    ["window", f"{w.get('start', '?')} .. {w.get('end', '?')}, {_f(w.get('rows'))} rows"],
                    [
                        "against champion",
                        f"v{report['champion_version']}" if report.get("champion_version") else "none",
                    ],
                    ["ROC AUC [95 % CI]", _auc_text(cm.get("roc_auc"), cm.get("rows"), cm.get("positive_rate"))],
                    ["report", gate.get("report_uri") or "–"],
                    *[
                        [
                            f"check {c['name']}",
                            f"{c['verdict']}: {_f(c.get('value'), 4)} vs {_f(c.get('threshold'), 4)}",
                        ]
                        for c in report.get("checks") or []
                    ],
                ],
            )
        )
        slices = [
            [col, val, _f(s.get("rows")), _auc_text(s.get("roc_auc"), s.get("rows"), s.get("positive_rate"))]
            for col, values in (report.get("slices") or {}).items()
            for val, s in sorted(values.items(), key=lambda kv: -(kv[1].get("rows") or 0))
        ]
        sections.append(("Slices (gate window)", slices))
    else:
        sections.append(("Gate record", "not evaluated by the gate yet"))
    limits = list(getattr(trained, "known_limits", None) or [])
    sections.append(("Known limits", [[x] for x in limits] if limits else "none declared in the spec"))
    sections.append(
        (
            "Lineage",
            [
                ["MLflow run", f"{ex.get('run_name') or ''} ({ex['run_id']})"],
                ["git", f"{ex.get('git_sha')} ({_dirty(ex.get('git_dirty'))})"],
                ["spec hash", str(ex.get("spec_hash"))],
                [
                    "seed / search budget",
                    f"{(ex.get('training') or {}).get('seed')} / {(ex.get('training') or {}).get('search_iterations')}",
                ],
                *[
                    [f"search space {name}", json.dumps(s.get("search_space") or {}, sort_keys=True)]
                    for name, s in (ex.get("search_space") or {}).items()
                ],
                ["retrain of", f"v{ex['retrain_of']}" if ex.get("retrain_of") else "–"],
            ],
        )
    )
    sections.append(
        (
            "Approvals and registry events",
            [
                [
                    str(e["seq"]),
                    e["when"][:19].replace("T", " "),
                    e["action"],
                    _move(e),
                    e.get("approver") or "pipeline",
                    (e.get("reason") or "")[:200],
                ]
                for e in ex.get("events") or []
            ],
        )
    )
    return sections


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _dirty(d: Any) -> str:
    return {True: "uncommitted changes", False: "clean"}.get(d, "dirty state unknown")


def _move(e: Mapping[str, Any]) -> str:
    frm, to = e.get("from_version"), e.get("to_version")
    if e.get("action") in ("reject", "shadow", "unshadow"):
        return f"champion stays {'v' + frm if frm else 'none'}"
    return f"{'v' + frm if frm else 'none'} → {'v' + to if to else 'none'}"


def _trained_spec(ex: Mapping[str, Any]) -> DatasetSpec | None:
    try:
        return trained_spec(ex)
    except LineageError:  # a spec of an older schema: the current one describes the features instead
        return None


def trained_spec(ex: Mapping[str, Any]) -> DatasetSpec:
    """The spec a version was trained with, from its ``lineage/spec.yaml`` (an :func:`explain` result)."""
    import yaml
    from pydantic import ValidationError

    text = ex.get("spec_text")
    if not text:
        raise LineageError(f"{ex.get('dataset')} v{ex.get('version')} has no {SPEC_ARTIFACT}")
    try:
        return DatasetSpec.model_validate(yaml.safe_load(text))
    except (ValidationError, yaml.YAMLError) as exc:
        raise LineageError(f"the recorded spec of v{ex.get('version')} no longer loads: {exc}") from None


def retrain_plan(spec: DatasetSpec, version: str | int, tracking_uri: str | None = None) -> dict[str, Any]:
    """What to repeat to retrain ``version`` exactly, from its recorded lineage: the spec as trained, the window,
    seed, search budget, candidates and the feature version the lake must reproduce."""
    ex = explain(spec, version, tracking_uri)
    t = ex["training"]
    return {
        "spec": trained_spec(ex),
        "start": ex["window"]["start"],
        "end": ex["window"]["end"],
        "seed": t["seed"],
        "search_iterations": t["search_iterations"],
        "candidates": t["candidates"],
        "feature_version": ex["feature_version"],
        "version": ex["version"],
    }


_HEADERS = {
    "Partitions": ["partition", "rows", "sha256"],
    "Features": ["feature", "dtype", "description"],
    "Slices (gate window)": ["column", "value", "rows", "ROC AUC [95 % CI]"],
    "Approvals and registry events": ["seq", "when (UTC)", "action", "champion", "approver", "reason"],
}
_COLLAPSED = {"Partitions", "Slices (gate window)"}  # long lists start folded


def render_card(spec: DatasetSpec, ex: Mapping[str, Any], back: str | None = None) -> tuple[str, str]:
    """The model card of an :func:`explain` result as (Markdown, HTML). The HTML is one self-contained page: no
    script, no external resource; every value is escaped. ``back``: a link to Model health for the page."""
    title = f"Model card: {ex['dataset']} v{ex['version']}"
    md, body = [f"# {title}", ""], []
    e = html.escape
    for name, content in card_sections(spec, ex):
        md += [f"## {name}", ""]
        head = _HEADERS.get(name)
        if isinstance(content, str):
            md += [content, ""]
            body.append(f"<h2>{e(name)}</h2><p>{e(content)}</p>")
            continue
        if not content:
            md += ["none", ""]
            body.append(f"<h2>{e(name)}</h2><p class='muted'>none</p>")
            continue
        if head:
            md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in content] + [""]
        ths = "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>" if head else ""
        rows = "".join(
            "<tr>"
            + "".join(
                (f"<th>{e(c)}</th>" if not head and i == 0 and len(row) > 1 else f"<td>{e(c)}</td>")
                for i, c in enumerate(row)
            )
            + "</tr>"
            for row in content
        )
        table = f"<table>{ths}{rows}</table>"
        if name in _COLLAPSED and len(content) > 8:
            table = f"<details><summary>{len(content)} rows</summary>{table}</details>"
        slug = name.lower().split(" ")[0]
        body.append(f'<section data-section="{e(slug)}"><h2>{e(name)}</h2>{table}</section>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
th, td {{ border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; vertical-align: top; font-size: .9rem; }}
th {{ background: #f3f3f3; }} .muted {{ color: #777; }} summary {{ cursor: pointer; color: #1a5fb4; }}
.status {{ display: inline-block; padding: .1rem .6rem; border-radius: 4px; background: #eef; }}
</style></head><body>
{f'<p><a href="{e(back)}">&larr; Model health</a></p>' if back else ""}
<h1>{e(title)} <span class="status" id="status">{e(ex["status"])}</span></h1>
{"".join(body)}
</body></html>
"""
    return "\n".join(md), page


def log_model_card(spec: DatasetSpec, version: str | int, tracking_uri: str | None = None) -> dict[str, Any]:
    """Render the version's card from MLflow and log it on its run (``model_card/model_card.{md,html}``,
    replacing the previous rendering); returns the :func:`explain` result it was made from."""
    client = _client(tracking_uri)
    ex = explain(spec, version, client.tracking_uri)
    md, page = render_card(spec, ex)
    client.log_text(ex["run_id"], md, CARD_MD)
    client.log_text(ex["run_id"], page, CARD_HTML)
    return ex


def card_html(spec: DatasetSpec, version: str | int, tracking_uri: str | None = None, back: str | None = None) -> str:
    """The card of a version as HTML, rendered now from MLflow (what Model health serves)."""
    return render_card(spec, explain(spec, version, tracking_uri), back)[1]
