"""Lineage from MLflow alone: a champion and a rejected version, trained from real validated partitions of a real
lake, gated and moved by the registry; every lineage question asked of MLflow (with the lake moved away) gets its
answer; the model card carries it; ``python -m include.mlops train --from-version`` reproduces the metrics."""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml

from include.mlops import evaluation as E
from include.mlops import features as F
from include.mlops import lineage as L
from include.mlops import registry as R
from include.mlops import training as T
from include.mlops.config import spec_hash
from tests.e2e.conftest import write_validated

START, END = "2013-01-05", "2013-01-20"
REQUEST = {"day": "2013-01-21", "triggers": ["roc_auc_drop"], "decision_uri": "file:///lake/decisions/2013-01-21.json"}


@pytest.fixture(scope="module")
def gated_spec(small_spec):
    """The small training spec with gate thresholds for a 16-day January window (as tests/e2e/test_gate_dag.py)."""
    relaxed = {"min_roc_auc": 0.55, "max_brier": 0.25, "max_slice_gap": 0.6, "min_slice_rows": 300}
    return small_spec.model_copy(update={"gate": small_spec.gate.model_copy(update=relaxed)})


@pytest.fixture(scope="module")
def world(gated_spec, nyc, tmp_path_factory):
    """v1 trained by hand (user alice), gated and promoted by alice; v2 trained on a monitor's request, gated and
    rejected by bob. Returns the lake, the tracking URI and the trained results."""
    from include.mlops.storage import Lake

    root = tmp_path_factory.mktemp("lineage")
    lake = write_validated(Lake(str(root / "lake")), nyc, gated_spec, [(date(2013, 1, 1), date(2013, 1, 20))])
    uri = f"sqlite:///{root}/mlflow.db"
    table = F.materialize_features(gated_spec, lake, START, END, run_id="test")
    df = F.read_feature_table(gated_spec, lake, table.version)
    inputs = F.feature_inputs(gated_spec, lake, table.version)
    tags = {"window_start": START, "window_end": END}

    manual = L.trigger("manual", reason="manual run", user="alice", dag_id="flights_train", run_id="manual__1")
    v1 = T.train_candidates(gated_spec, df, seed=3, tracking_uri=uri, tags=tags, inputs=inputs, trigger=manual)
    gate1 = E.evaluate_challenger(gated_spec, lake, version=v1.model_version, tracking_uri=uri)
    assert gate1.passed, gate1.to_markdown()
    R.promote(gated_spec, v1.model_version, reason="gate passed", dag_run="manual__1", approver="alice",
              tracking_uri=uri)  # fmt: skip

    monitor = L.trigger("monitor", reason="retrain requested", dag_id="flights_train", run_id="asset__2",
                        request=REQUEST)  # fmt: skip
    v2 = T.train_candidates(gated_spec, df, seed=4, candidates=["logreg"], tracking_uri=uri, tags=tags,
                            inputs=inputs, trigger=monitor)  # fmt: skip
    gate2 = E.evaluate_challenger(gated_spec, lake, version=v2.model_version, tracking_uri=uri)
    R.reject(gated_spec, v2.model_version, gate2.failed or ["reviewer: no better than v1"], dag_run="asset__2",
             approver="bob", tracking_uri=uri)  # fmt: skip
    return {"lake": lake, "uri": uri, "table": table, "v1": v1, "v2": v2, "root": root}


@pytest.fixture(scope="module")
def answers(world, gated_spec):
    """Every question asked of MLflow alone: the lake is moved away while asking."""
    lake_dir = world["root"] / "lake"
    away = world["root"] / "lake-away"
    shutil.move(lake_dir, away)
    try:
        return {v: L.explain(gated_spec, v, world["uri"]) for v in ("1", "2")}
    finally:
        shutil.move(away, lake_dir)


@pytest.mark.parametrize("version", ["1", "2"], ids=["champion", "rejected"])
def test_mlflow_answers_every_lineage_question(world, answers, gated_spec, version):
    lake, a = world["lake"], answers[version]
    # which validated partitions (and their content hashes), history days of the point-in-time windows included
    expected = [
        {"partition": p, "sha256": lake.manifest("validated", "flights", p).sha256}
        for p in lake.partitions("validated", "flights")
    ]
    assert [{k: p[k] for k in ("partition", "sha256")} for p in a["partitions"]] == expected
    assert all(p["rows"] > 300 for p in a["partitions"])
    assert a["window"] == {"start": START, "end": END}
    assert a["feature_version"] == world["table"].version
    assert a["inputs"]["feature_sha256"] == lake.manifest("features", "flights", world["table"].partition).sha256
    # the spec text as trained (it loads, and hashes to the recorded hash)
    trained = L.trained_spec(a)
    assert spec_hash(trained) == spec_hash(gated_spec) == a["spec_hash"]
    assert yaml.safe_load(a["spec_text"])["gate"]["min_roc_auc"] == 0.55
    # the search space and the search settings
    names = ["hgb", "logreg"] if version == "1" else ["logreg"]
    assert sorted(a["search_space"]) == names
    declared = {c.name: c for c in gated_spec.training.candidates}
    for n in names:
        assert a["search_space"][n]["search_space"] == json.loads(json.dumps(declared[n].search_space))
    assert a["training"]["seed"] == (3 if version == "1" else 4)
    # code: git sha and dirty flag
    assert a["git_sha"] == T.git_sha() != "unknown"
    assert a["git_dirty"] in (True, False)
    # the gate record under a portable URI, readable through MLflow
    gate = a["gate"]
    assert gate["report_uri"] == f"runs:/{a['run_id']}/gate/gate.html"
    assert gate["report"]["challenger_version"] == version
    assert gate["report_path"] == f"reports/gate/flights/v{version}-{a['run_id'][:8]}/gate.html"


def test_why_who_and_what_came_before(answers):
    champion, rejected = answers["1"], answers["2"]
    assert champion["status"] == "champion"
    assert champion["aliases"] == ["champion"]
    assert champion["trigger"] == {"kind": "manual", "reason": "manual run", "user": "alice",
                                   "dag_id": "flights_train", "run_id": "manual__1"}  # fmt: skip
    assert champion["why_trained"] == "manual by alice (flights_train manual__1)"
    assert champion["gate"]["decision"] == "passed"
    assert champion["approver"] == "alice"
    assert champion["previous_champion"] is None  # the first champion
    assert [e["action"] for e in champion["events"]] == ["promote"]

    assert rejected["status"] == "rejected"
    assert rejected["aliases"] == []  # the challenger alias left the rejected version
    assert rejected["trigger"]["kind"] == "monitor"
    assert rejected["trigger"]["decision_uri"] == REQUEST["decision_uri"]
    assert rejected["why_trained"] == "monitor retrain request of 2013-01-21: roc_auc_drop (flights_train asset__2)"
    assert rejected["gate"]["decision"] == "rejected"
    assert rejected["approver"] == "bob"
    assert rejected["previous_champion"] == "1"  # the champion that stayed
    assert rejected["run_name"].endswith("(rejected)")
    assert START in rejected["run_name"]


def test_the_model_card_is_logged_and_says_it_all(world, gated_spec):
    from mlflow import MlflowClient

    client = MlflowClient(world["uri"], world["uri"])
    run_id = world["v1"].parent_run_id
    page = Path(client.download_artifacts(run_id, L.CARD_HTML, str(world["root"]))).read_text(encoding="utf-8")
    md = Path(client.download_artifacts(run_id, L.CARD_MD, str(world["root"]))).read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    route = next(f for f in gated_spec.features if f.name == "route_delay_rate")
    for text in (
        "Model card: flights v1",
        gated_spec.description.strip()[:60],
        route.description,
        gated_spec.known_limits[0][:60],
        "manual by alice (flights_train manual__1)",
        "| approver | alice |",
        world["table"].version,
        "| decision | passed at",
    ):
        assert text in md, text
    assert "ROC AUC [95 % CI]" in md
    assert 'id="status">champion<' in page
    assert "Known limits" in page
    # the interval brackets the point estimate
    auc = client.get_run(run_id).data.metrics["test_roc_auc"]
    line = next(x for x in md.splitlines() if x.startswith("| ROC AUC [95 % CI]"))
    lo, hi = (float(v) for v in line.split("[")[2].rstrip("] |").split(", "))
    assert lo < auc < hi


@pytest.mark.parametrize(
    ("auc", "rows", "rate", "expected"),
    [(0.5, 1000, 0.5, (0.464, 0.536)), (0.8, 200, 0.2, (0.713, 0.887)), (0.7, 10, 0.0, None), (None, 10, 0.5, None)],
)
def test_auc_interval_hanley_mcneil(auc, rows, rate, expected):
    """Worked by hand from Hanley & McNeil's formula (e.g. 0.8 on 40 positives / 160 negatives: SE 0.0442)."""
    got = L.auc_interval(auc, rows, rate)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=2e-3)


def test_retrain_from_recorded_inputs_reproduces_the_metrics(world, gated_spec, monkeypatch, capsys):
    from mlflow import MlflowClient

    from include.mlops.__main__ import main

    uri = world["uri"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLOPS_DATA_ROOT", str(world["root"] / "lake"))
    assert main(["train", "flights", "--from-version", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    client = MlflowClient(uri, uri)
    original = client.get_run(world["v1"].parent_run_id).data.metrics
    again = client.get_run(out["parent_run_id"]).data.metrics
    keys = [k for k in original if k.startswith(("test_", "valid_"))]
    assert len(keys) >= 18
    assert {k: again[k] for k in keys} == {k: original[k] for k in keys}  # exactly, not approximately
    mv = client.get_model_version("flights", out["model_version"])
    assert mv.tags["retrain_of"] == "1"
    assert L.explain(gated_spec, out["model_version"], uri)["trigger"]["kind"] == "cli"


def test_train_help_names_the_dags_params():
    import subprocess
    import sys

    from tests.conftest import REPO

    r = subprocess.run([sys.executable, "-m", "include.mlops", "train", "--help"], capture_output=True, text=True,
                       cwd=REPO, env=os.environ, check=True)  # fmt: skip
    for option in ("--window-end", "--window-days", "--candidates", "--search-iterations", "--seed", "--from-version"):
        assert option in r.stdout
