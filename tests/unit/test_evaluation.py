"""Evaluation: every gate check with both verdicts, the no-champion case, the report formats, evidence from a
real registered model, the shared evaluation window and the gate step end to end on a temp lake + MLflow."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from include.mlops import evaluation as E
from include.mlops import features as F
from include.mlops import training as T
from include.mlops.storage import Lake
from include.mlops.training import SKOPS_TRUSTED_TYPES


@pytest.fixture(scope="module")
def gspec(spec):
    """The flights spec with explicit gate thresholds, so each test knows where the lines are."""
    gate = spec.gate.model_copy(
        update={
            "min_roc_auc": 0.65,
            "max_brier": 0.20,
            "max_roc_auc_drop": 0.02,
            "max_brier_rise": 0.01,
            "min_roc_auc_gain": None,  # tested on its own below
            "slice_columns": ["carrier", "origin"],
            "min_slice_rows": 200,
            "max_slice_gap": 0.15,
            "max_latency_ms_per_1k": 500,
            "max_model_mb": 50,
            "forbidden_features": ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"],
        }
    )
    return spec.model_copy(update={"gate": gate})


def _slices(carrier: dict | None = None, origin: dict | None = None) -> dict:
    good_carrier = {"AA": (900, 0.70), "B6": (800, 0.72), "UA": (700, 0.68)}
    good_origin = {"EWR": (800, 0.71), "JFK": (800, 0.70), "LGA": (800, 0.69)}

    def table(d):
        return {k: {"rows": n, "roc_auc": auc, "positive_rate": 0.2} for k, (n, auc) in d.items()}

    return {"carrier": table(carrier or good_carrier), "origin": table(origin or good_origin)}


def evidence(spec, **changes) -> E.ModelEvidence:
    """Evidence that passes every check of ``gspec``; ``changes`` override fields or metrics (``metrics__x``)."""
    metrics = {"roc_auc": 0.70, "brier": 0.15, "rows": 2400.0}
    for k in [k for k in changes if k.startswith("metrics__")]:
        metrics[k.removeprefix("metrics__")] = changes.pop(k)
    base = E.ModelEvidence(
        metrics=metrics,
        slices=_slices(),
        features=list(spec.feature_names),
        signature=True,
        size_mb=1.5,
        latency_ms_per_1k=20.0,
        version="2",
    )
    return replace(base, **changes)


def champion(spec, **changes) -> E.ModelEvidence:
    return replace(evidence(spec, **changes), version="1")


# -- the gate: every check, both verdicts ----------------------------------------------------------------
CASES = [
    # (check, challenger changes, champion changes (None: no champion), expected verdict)
    ("min_roc_auc", {"metrics__roc_auc": 0.66}, {"metrics__roc_auc": 0.66}, "pass"),
    ("min_roc_auc", {"metrics__roc_auc": 0.65}, {"metrics__roc_auc": 0.65}, "pass"),  # the threshold itself
    ("min_roc_auc", {"metrics__roc_auc": 0.64}, {"metrics__roc_auc": 0.64}, "fail"),
    ("max_brier", {"metrics__brier": 0.19}, {"metrics__brier": 0.19}, "pass"),
    ("max_brier", {"metrics__brier": 0.21}, {"metrics__brier": 0.21}, "fail"),
    ("max_roc_auc_drop", {"metrics__roc_auc": 0.70}, {"metrics__roc_auc": 0.715}, "pass"),
    ("max_roc_auc_drop", {"metrics__roc_auc": 0.70}, {"metrics__roc_auc": 0.73}, "fail"),
    ("max_brier_rise", {"metrics__brier": 0.155}, {"metrics__brier": 0.15}, "pass"),
    ("max_brier_rise", {"metrics__brier": 0.17}, {"metrics__brier": 0.15}, "fail"),
    ("max_slice_gap[carrier]", {}, {}, "pass"),
    ("max_slice_gap[carrier]", {"slices": _slices(carrier={"AA": (900, 0.80), "B6": (800, 0.62)})}, {}, "fail"),
    ("max_slice_gap[origin]", {"slices": _slices(origin={"EWR": (900, 0.55), "JFK": (800, 0.75)})}, {}, "fail"),
    ("signature_present", {"signature": True}, {}, "pass"),
    ("signature_present", {"signature": False}, {}, "fail"),
    ("no_forbidden_features", {"features": ["distance", "route_delay_rate", "carrier_delay_rate"]}, {}, "pass"),
    ("no_forbidden_features", {"features": ["distance", "dep_delay"]}, {}, "fail"),
    ("no_forbidden_features", {"features": ["distance", "arr_delay"]}, {}, "fail"),  # the label column
    ("no_forbidden_features", {"features": ["distance", "delayed"]}, {}, "fail"),  # the label itself
    ("no_forbidden_features", {"features": ["distance", "was_delayed_flag"]}, {}, "fail"),  # named like the label
    ("max_model_mb", {"size_mb": 49.9}, {}, "pass"),
    ("max_model_mb", {"size_mb": 50.1}, {}, "fail"),
    ("max_model_mb", {"size_mb": None}, {}, "fail"),  # not measured is not a pass
    ("max_latency_ms_per_1k", {"latency_ms_per_1k": 499.0}, {}, "pass"),
    ("max_latency_ms_per_1k", {"latency_ms_per_1k": 501.0}, {}, "fail"),
]


@pytest.mark.parametrize(("name", "chall", "champ", "verdict"), CASES)
def test_each_check_passes_and_fails_on_its_threshold(gspec, name, chall, champ, verdict):
    report = E.evaluate_gate(gspec, evidence(gspec, **chall), champion(gspec, **champ))
    check = report.check(name)
    assert check.verdict == verdict, check
    assert check.threshold is not None
    # Every other check passes on this evidence, so the decision hinges on this one.
    others = [c for c in report.checks if c.name != name]
    assert all(c.verdict == "pass" for c in others), [c for c in others if c.verdict != "pass"]
    assert report.passed is (verdict == "pass")
    assert report.failed == ([] if verdict == "pass" else [name])
    assert report.decision == ("passed" if verdict == "pass" else "rejected")


def test_check_values_are_what_was_measured(gspec):
    report = E.evaluate_gate(
        gspec,
        evidence(gspec, metrics__roc_auc=0.70, metrics__brier=0.16, size_mb=3.0, latency_ms_per_1k=42.0),
        champion(gspec, metrics__roc_auc=0.71, metrics__brier=0.155),
    )
    assert report.check("min_roc_auc").value == pytest.approx(0.70)
    assert report.check("max_brier").value == pytest.approx(0.16)
    assert report.check("max_roc_auc_drop").value == pytest.approx(0.01)
    assert report.check("max_brier_rise").value == pytest.approx(0.005)
    assert report.check("max_slice_gap[carrier]").value == pytest.approx(0.72 - 0.68)
    assert report.check("max_model_mb").value == 3.0
    assert report.check("max_latency_ms_per_1k").value == 42.0
    assert report.champion_version == "1"
    assert report.challenger_version == "2"


def test_small_and_one_class_slices_are_ignored(gspec):
    carrier = {"AA": (900, 0.70), "B6": (800, 0.72), "OO": (199, 0.20), "HA": (5000, None)}
    report = E.evaluate_gate(gspec, evidence(gspec, slices=_slices(carrier=carrier)), None)
    check = report.check("max_slice_gap[carrier]")
    assert check.verdict == "pass"
    assert check.value == pytest.approx(0.02)
    assert "2 ignored" in check.detail
    assert report.slices["carrier"]["OO"]["gated"] is False
    assert report.slices["carrier"]["HA"]["gated"] is False
    assert report.slices["carrier"]["AA"]["gated"] is True


def test_a_slice_column_with_fewer_than_two_big_slices_is_skipped(gspec):
    carrier = {"AA": (900, 0.90), "B6": (100, 0.40)}
    report = E.evaluate_gate(gspec, evidence(gspec, slices=_slices(carrier=carrier)), None)
    assert report.check("max_slice_gap[carrier]").verdict == "skip"
    assert report.passed


def test_a_slice_column_without_metrics_fails(gspec):
    slices = {"origin": _slices()["origin"]}
    report = E.evaluate_gate(gspec, evidence(gspec, slices=slices), None)
    assert report.check("max_slice_gap[carrier]").verdict == "fail"
    assert not report.passed


def test_without_a_champion_non_regression_is_skipped_and_the_rest_decides(gspec):
    report = E.evaluate_gate(gspec, evidence(gspec), None)
    assert report.check("max_roc_auc_drop").verdict == "skip"
    assert report.check("max_brier_rise").verdict == "skip"
    assert report.champion_version is None
    assert report.champion_metrics is None
    assert report.passed

    # The same challenger against a much better champion fails: the skip above is what let it pass.
    assert not E.evaluate_gate(gspec, evidence(gspec), champion(gspec, metrics__roc_auc=0.80)).passed
    # With no champion, an absolute or policy failure still rejects.
    assert not E.evaluate_gate(gspec, evidence(gspec, metrics__roc_auc=0.60), None).passed
    assert not E.evaluate_gate(gspec, evidence(gspec, signature=False), None).passed


def test_brier_rise_is_not_checked_when_not_configured(gspec):
    spec = gspec.model_copy(update={"gate": gspec.gate.model_copy(update={"max_brier_rise": None})})
    report = E.evaluate_gate(spec, evidence(spec, metrics__brier=0.19), champion(spec, metrics__brier=0.10))
    assert "max_brier_rise" not in [c.name for c in report.checks]
    assert report.passed


def test_the_gate_is_pure_and_deterministic(gspec):
    chall, champ = evidence(gspec), champion(gspec)
    before = (json.dumps(chall.as_dict(), sort_keys=True), json.dumps(champ.as_dict(), sort_keys=True))
    a = E.evaluate_gate(gspec, chall, champ, window={"start": "a"}, decided_at="2013-03-01T00:00:00+00:00")
    b = E.evaluate_gate(gspec, chall, champ, window={"start": "a"}, decided_at="2013-03-01T00:00:00+00:00")
    assert a.as_dict() == b.as_dict()
    assert (json.dumps(chall.as_dict(), sort_keys=True), json.dumps(champ.as_dict(), sort_keys=True)) == before


# -- report formats ------------------------------------------------------------------------------------
@pytest.fixture
def mixed_report(gspec) -> E.GateReport:
    return E.evaluate_gate(
        gspec,
        evidence(gspec, signature=False, features=["distance", "dep_delay"], latency_ms_per_1k=900.0),
        champion(gspec),
        window={"start": "2013-03-01", "end": "2013-03-07", "rows": 2400},
    )


def test_markdown_and_html_show_every_check_with_value_threshold_and_verdict(mixed_report):
    md, page = mixed_report.to_markdown(), mixed_report.to_html()
    assert "REJECTED" in md
    assert "REJECTED" in page
    assert page.startswith("<!doctype html>")
    for c in mixed_report.checks:
        row = next(line for line in md.splitlines() if line.startswith(f"| {c.name} |"))
        assert c.verdict.upper() in row
        assert f"<td>{c.name}</td>" in page
    assert "| max_latency_ms_per_1k | 900 | - | 500 | FAIL |" in md
    assert "<td>max_latency_ms_per_1k</td><td>900</td><td>-</td><td>500</td>" in page
    assert "2013-03-01 .. 2013-03-07, 2400 rows" in md
    for value in ("AA", "B6", "UA", "EWR", "JFK", "LGA"):  # the slice tables
        assert f"| {value} |" in md
        assert f"<td>{value}</td>" in page


def test_a_passing_report_says_passed_and_names_no_reasons(gspec):
    report = E.evaluate_gate(gspec, evidence(gspec), None)
    assert "**Decision: PASSED**" in report.to_markdown()
    assert ">PASSED</div>" in report.to_html()
    assert "none (first model)" in report.to_markdown()


def test_report_dict_is_json_and_names_failures(mixed_report):
    d = json.loads(json.dumps(mixed_report.as_dict()))
    assert d["decision"] == "rejected"
    assert d["failed"] == ["signature_present", "no_forbidden_features", "max_latency_ms_per_1k"]
    assert [c["name"] for c in d["checks"]] == [c.name for c in mixed_report.checks]


def test_html_escapes_what_it_shows(gspec):
    report = E.evaluate_gate(gspec, evidence(gspec, features=["<script>x</script>"]), None)
    assert "<script>x</script>" not in report.to_html()


# -- evidence from real registered models --------------------------------------------------------------
def _days(nyc: dict, first: str, last: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    f, w = nyc["flights"], nyc["weather"]
    return (
        f[(f["flight_date"] >= first) & (f["flight_date"] <= last)].reset_index(drop=True),
        w[(w["flight_date"] >= first) & (w["flight_date"] <= last)].reset_index(drop=True),
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory, nyc) -> Lake:
    """Validated real days 2013-01-01 … 2013-01-12 and the reference tables."""
    lake = Lake(str(tmp_path_factory.mktemp("eval") / "lake"))
    flights, weather = _days(nyc, "2013-01-01", "2013-01-12")
    for d, fd in flights.groupby("flight_date"):
        tables = {"flights": fd.reset_index(drop=True), "weather": weather[weather["flight_date"] == d]}
        lake.write_partition("validated", "flights", f"date={d}", tables, source="test")
    ref = {k: nyc[k] for k in ("airlines", "airports", "planes")}
    lake.write_partition("reference", "flights", "snapshot=current", ref, source="test")
    return lake


@pytest.fixture(scope="module")
def table(spec, nyc) -> pd.DataFrame:
    flights, weather = _days(nyc, "2013-01-01", "2013-01-12")
    df = F.build_features(spec, {"flights": flights, "weather": weather, "planes": nyc["planes"]})
    return df[df["delayed"].notna()].reset_index(drop=True)


def _log_model(uri: str, spec, pipe, x: pd.DataFrame, *, signature: bool = True, params: dict | None = None) -> str:
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    client = MlflowClient(uri, uri)
    exp = client.get_experiment_by_name("flights")
    exp_id = exp.experiment_id if exp else client.create_experiment("flights", T.artifact_location(uri, "flights"))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with warnings.catch_warnings(), mlflow.start_run(experiment_id=exp_id):
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        mlflow.log_params(params or {})
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            signature=infer_signature(x.head(50), pipe.predict_proba(x.head(50))) if signature else None,
            registered_model_name=spec.name,
            serialization_format="skops",  # what training logs; scoring refuses pickle
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            pip_requirements=["scikit-learn"],
        )
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def models(tmp_path_factory, spec, table) -> dict:
    """Two registered logistic regressions trained on 2013-01-01 … 05: v1 (strongly regularised), v2."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    train = table[table["flight_date"] <= "2013-01-05"]
    x, y = train[spec.feature_names], train["delayed"].astype(int)
    window = {"test_start": "2013-01-06", "test_end": "2013-01-12"}
    pipes, versions = {}, {}
    for name, c in (("weak", 0.001), ("strong", 1.0)):
        cand = spec.training.candidates[0].model_copy(update={"params": {"C": c, "max_iter": 300}})
        pipes[name] = T.make_pipeline(cand, spec, seed=0).fit(x, y)
        versions[name] = _log_model(uri, spec, pipes[name], x, params=window)
    from mlflow import MlflowClient

    MlflowClient(uri, uri).set_model_version_tag(spec.name, versions["strong"], "threshold", "0.3")
    return {"uri": uri, "pipes": pipes, "versions": versions}


def test_collect_evidence_scores_the_registered_model(spec, models, table):
    frame = table[table["flight_date"] >= "2013-01-06"].copy()
    frame.loc[frame.index[:10], "delayed"] = np.nan  # unlabelled rows are dropped
    v = models["versions"]["strong"]
    ev = E.collect_evidence(spec, f"models:/flights/{v}", frame, tracking_uri=models["uri"], latency_repeats=3)

    labelled = frame[frame["delayed"].notna()]
    p = models["pipes"]["strong"].predict_proba(labelled[spec.feature_names])[:, 1]
    expected = T.binary_metrics(labelled["delayed"].to_numpy().astype(int), p, 0.3)  # the version's threshold
    assert ev.metrics == pytest.approx(expected)
    assert ev.version == v
    assert ev.threshold == 0.3
    assert ev.signature is True
    assert ev.features == spec.feature_names
    assert 0 < ev.size_mb < 5
    assert ev.latency_ms_per_1k > 0
    assert set(ev.slices) == {"carrier", "origin"}
    assert set(ev.slices["origin"]) == {"EWR", "JFK", "LGA"}
    assert sum(s["rows"] for s in ev.slices["carrier"].values()) == len(labelled)
    jfk = labelled["origin"] == "JFK"
    from sklearn.metrics import roc_auc_score

    assert ev.slices["origin"]["JFK"]["roc_auc"] == pytest.approx(roc_auc_score(labelled["delayed"][jfk], p[jfk]))


def test_collect_evidence_resolves_aliases_and_finds_a_missing_signature(spec, models, table, tmp_path):
    from mlflow import MlflowClient

    uri = models["uri"]
    MlflowClient(uri, uri).set_registered_model_alias("flights", "challenger", models["versions"]["weak"])
    frame = table[table["flight_date"] >= "2013-01-10"]
    ev = E.collect_evidence(spec, "models:/flights@challenger", frame, tracking_uri=uri, latency_repeats=2)
    assert ev.version == models["versions"]["weak"]
    assert ev.threshold == 0.5  # no threshold tag on this version

    x = table[spec.feature_names]
    unsigned = _log_model(uri, spec, models["pipes"]["weak"], x, signature=False)
    ev = E.collect_evidence(spec, f"models:/flights/{unsigned}", frame, tracking_uri=uri, latency_repeats=2)
    assert ev.signature is False
    assert ev.features == spec.feature_names  # from the fitted pipeline
    assert E.evaluate_gate(spec, ev, None).check("signature_present").verdict == "fail"


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda df: df.drop(columns=["distance"]), "distance"),
        (lambda df: df.assign(delayed=0.0), "single class"),
        (lambda df: df.drop(columns=["delayed"]), "label"),
    ],
    ids=["missing-feature", "one-class", "no-label"],
)
def test_collect_evidence_refuses_a_frame_it_cannot_score(spec, models, table, mutate, match):
    frame = mutate(table.head(500))
    with pytest.raises(E.EvaluationError, match=match):
        E.collect_evidence(spec, "models:/flights/1", frame, tracking_uri=models["uri"], latency_repeats=1)


def test_latency_is_the_p95_per_thousand_rows():
    calls = []

    def predict(x):
        calls.append(len(x))

    ms = E.measure_latency(predict, pd.DataFrame({"a": range(10)}), repeats=5)
    assert calls == [1000] * 6  # one warm-up, five timed, each on 1,000 rows (sampled with replacement)
    assert ms >= 0


# -- window, report files, MLflow tags, the whole step ---------------------------------------------------
def test_evaluation_window_is_the_last_test_days_up_to_end(spec, lake):
    w = E.evaluation_window(spec, lake, "2013-01-10")
    assert (w.start, w.end) == ("2013-01-04", "2013-01-10")  # test_days = 7
    assert sorted(w.frame["flight_date"].unique()) == [f"2013-01-{d:02d}" for d in range(4, 11)]
    assert w.frame["delayed"].notna().all()
    assert w.describe()["rows"] == len(w.frame)

    w2 = E.evaluation_window(spec, lake, "2013-01-12", start="2013-01-11")
    assert sorted(w2.frame["flight_date"].unique()) == ["2013-01-11", "2013-01-12"]
    with pytest.raises(E.EvaluationError, match="no validated"):
        E.evaluation_window(spec, lake, "2012-12-31")


def test_save_and_log_report(spec, models, lake):
    import mlflow
    from mlflow import MlflowClient

    uri, v = models["uri"], models["versions"]["strong"]
    report = E.evaluate_gate(spec, replace(evidence(spec, signature=False), version=v), None)
    uris = E.save_report(report, lake)
    assert set(uris) == {"json", "md", "html"}
    assert lake.read_json(f"reports/gate/flights/v{v}/gate.json") == json.loads(json.dumps(report.as_dict()))
    assert lake.exists(f"reports/gate/flights/v{v}/gate.html")
    assert uris["html"].endswith(f"reports/gate/flights/v{v}/gate.html")

    E.log_report(report, uri)
    client = MlflowClient(uri, uri)
    mv = client.get_model_version("flights", v)
    assert mv.tags["gate.decision"] == "rejected"
    assert mv.tags["gate.reasons"] == "signature_present"
    assert mv.tags["gate.report_uri"] == f"runs:/{mv.run_id}/gate/gate.html"  # portable: MLflow, not a local path
    assert mv.tags["gate.report_path"] == f"reports/gate/flights/v{v}/gate.html"  # the lake copy, lake-relative
    assert {a.path for a in client.list_artifacts(mv.run_id, "gate")} == {
        "gate/gate.json",
        "gate/gate.md",
        "gate/gate.html",
    }
    logged = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/gate/gate.json")
    assert logged["failed"] == ["signature_present"]


def test_evaluate_challenger_scores_both_models_on_the_same_rows(spec, models, lake):
    from mlflow import MlflowClient

    uri, vs = models["uri"], models["versions"]
    client = MlflowClient(uri, uri)
    client.set_registered_model_alias("flights", "champion", vs["weak"])
    client.set_registered_model_alias("flights", "challenger", vs["strong"])

    report = E.evaluate_challenger(spec, lake, tracking_uri=uri)
    assert (report.challenger_version, report.champion_version) == (vs["strong"], vs["weak"])
    assert (report.window["start"], report.window["end"]) == ("2013-01-06", "2013-01-12")  # its test split
    assert report.challenger_metrics["rows"] == report.champion_metrics["rows"] == report.window["rows"]
    assert report.challenger_metrics["roc_auc"] != report.champion_metrics["roc_auc"]
    assert report.check("max_roc_auc_drop").verdict in ("pass", "fail")
    assert report.check("max_roc_auc_drop").value == pytest.approx(
        report.champion_metrics["roc_auc"] - report.challenger_metrics["roc_auc"]
    )
    mv = client.get_model_version("flights", vs["strong"])
    # keyed by the run id too: v<n> of another MLflow store (another uuid) never shares the folder
    assert lake.exists(f"reports/gate/flights/v{vs['strong']}-{mv.run_id[:8]}/gate.md")
    tags = mv.tags
    assert tags["gate.decision"] == report.decision
    assert tags["gate.reasons"] == ",".join(report.failed)
    assert tags["gate.champion_version"] == vs["weak"]

    # An explicit end evaluates on the last test_days up to it instead.
    other = E.evaluate_challenger(spec, lake, tracking_uri=uri, end="2013-01-11")
    assert (other.window["start"], other.window["end"]) == ("2013-01-05", "2013-01-11")


# -- the gate on enough data: paired bootstrap, floors that never keep a worse champion --------------------
def _scores(n: int = 4000, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a good model's scores and a weaker model's scores on the same rows."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    good = 1 / (1 + np.exp(-(2.0 * y - 1.0 + rng.normal(0, 1.2, n))))
    weak = 1 / (1 + np.exp(-(0.6 * y - 1.0 + rng.normal(0, 1.2, n))))
    return y, good, weak


def test_paired_bootstrap_brackets_the_difference_and_is_seeded():
    y, good, weak = _scores()
    cmp = E.paired_bootstrap(y, weak, good, samples=100, seed=3)
    drop, low, high = cmp.roc_auc_drop
    assert 0 < low <= drop <= high, "a clearly weaker challenger: its AUC drop is significantly above zero"
    assert cmp.brier_rise[1] > 0
    assert (cmp.rows, cmp.samples) == (len(y), 100)
    assert E.paired_bootstrap(y, weak, good, samples=100, seed=3) == cmp
    same = E.paired_bootstrap(y, good, good, samples=50)
    assert same.roc_auc_drop == (0.0, 0.0, 0.0)
    with pytest.raises(E.EvaluationError, match="single class"):
        E.paired_bootstrap(np.zeros(10), good[:10], weak[:10])


@pytest.mark.parametrize(
    ("drop", "verdict"),
    [
        ((0.005, -0.004, 0.015), "pass"),  # within the threshold at the interval's upper end
        ((0.005, -0.01, 0.025), "fail"),  # point value within 0.02, but the interval reaches beyond it
        ((-0.03, -0.04, -0.02), "pass"),  # better
    ],
)
def test_with_a_paired_comparison_the_upper_end_must_be_within_the_threshold(gspec, drop, verdict):
    paired = E.PairedComparison(2400, 200, 0.95, drop, (0.0, -0.001, 0.001))
    report = E.evaluate_gate(gspec, evidence(gspec), champion(gspec), paired=paired)
    check = report.check("max_roc_auc_drop")
    assert (check.value, check.interval, check.verdict) == (drop[0], drop[1:], verdict)
    assert report.check("max_brier_rise").interval == (-0.001, 0.001)
    assert "interval" in report.to_markdown().split("## Checks")[1].splitlines()[2]


@pytest.mark.parametrize(
    ("chall", "champ", "verdict", "alert"),
    [
        (0.64, 0.60, "pass", "the better one, the challenger, may serve"),  # both below: the better serves
        (0.62, 0.64, "fail", "both models are below min_roc_auc"),  # both below, champion better: it stays
        (0.64, 0.70, "fail", None),  # only the challenger is below
    ],
)
def test_an_absolute_floor_never_keeps_a_worse_champion(gspec, chall, champ, verdict, alert):
    report = E.evaluate_gate(
        gspec,
        evidence(gspec, metrics__roc_auc=chall),
        champion(gspec, metrics__roc_auc=champ),
        paired=E.PairedComparison(
            2400, 200, 0.95, (champ - chall, champ - chall - 0.01, champ - chall + 0.01), (0, 0, 0)
        ),
    )
    assert report.check("min_roc_auc").verdict == verdict
    if alert:
        assert any(alert in a for a in report.alerts)
        assert "alert" in report.to_markdown()
        assert "Alert:" in report.to_html()
    else:
        assert report.alerts == []


# -- superiority and enough days: a champion is replaced only by a challenger shown better ---------------------
@pytest.mark.parametrize(
    ("drop", "verdict"),
    [
        ((-0.03, -0.04, -0.012), "pass"),  # gain 0.03, interval [0.012, 0.04]: shown better by 0.01
        ((-0.03, -0.05, -0.008), "fail"),  # a larger gain, but its interval reaches below 0.01
        ((0.0, -0.01, 0.01), "fail"),  # not worse is not enough
    ],
)
def test_min_roc_auc_gain_judges_the_lower_end_of_the_gain(gspec, drop, verdict):
    spec = gspec.model_copy(update={"gate": gspec.gate.model_copy(update={"min_roc_auc_gain": 0.01})})
    paired = E.PairedComparison(2400, 200, 0.95, drop, (0.0, -0.001, 0.001))
    report = E.evaluate_gate(spec, evidence(spec), champion(spec), paired=paired)
    check = report.check("min_roc_auc_gain")
    assert check.verdict == verdict
    assert check.value == pytest.approx(-drop[0])
    assert check.interval == pytest.approx((-drop[2], -drop[1]))
    assert report.passed is (verdict == "pass")
    # turned down only for not beating the champion: a sound candidate that may run as the shadow
    assert report.may_shadow is (verdict == "fail")
    no_champion = E.evaluate_gate(spec, evidence(spec), None)
    assert no_champion.check("min_roc_auc_gain").verdict == "skip"
    assert no_champion.passed


def test_a_candidate_failing_a_policy_check_is_no_shadow(gspec):
    spec = gspec.model_copy(update={"gate": gspec.gate.model_copy(update={"min_roc_auc_gain": 0.01})})
    paired = E.PairedComparison(2400, 200, 0.95, (0.0, -0.01, 0.01), (0.0, -0.001, 0.001))
    report = E.evaluate_gate(spec, evidence(spec, signature=False), champion(spec), paired=paired)
    assert set(report.failed) == {"min_roc_auc_gain", "signature_present"}
    assert not report.may_shadow
    assert not E.evaluate_gate(spec, evidence(spec), champion(spec), paired=paired.__class__(
        2400, 200, 0.95, (-0.03, -0.04, -0.02), (0.0, -0.001, 0.001))).may_shadow  # fmt: skip


@pytest.mark.parametrize(
    ("window", "verdict"), [(("2013-03-08", "2013-03-21"), "pass"), (("2013-03-15", "2013-03-21"), "fail")]
)
def test_min_window_days_needs_enough_days_of_rows(gspec, window, verdict):
    spec = gspec.model_copy(update={"gate": gspec.gate.model_copy(update={"min_window_days": 14})})
    report = E.evaluate_gate(
        spec, evidence(spec), champion(spec), window={"start": window[0], "end": window[1], "rows": 9000}
    )
    assert report.check("min_window_days").verdict == verdict
    assert report.may_shadow is (verdict == "fail")
    assert "min_window_days" not in {c.name for c in E.evaluate_gate(spec, evidence(spec), None).checks}
