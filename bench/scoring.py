"""Scoring and monitoring speed on the real 2013 data.

1. **Scoring throughput** — :func:`scoring.score_frame`, the predict path of ``score_partition`` (the model's
   input columns, the thread cap, ``predict_proba``, the thresholded 0/1 and the output frame), against the same
   model's raw ``predict_proba`` on the same, already column-selected rows, at one day, one month and one year.
   Both sides run under the same thread budget (``MLOPS_TRAIN_THREADS``, default 1); raw ``predict_proba`` with
   scikit-learn's default OpenMP threads is measured too, for information. The model is loaded twice, by
   ``scoring.load_model`` and by ``mlflow.sklearn.load_model``, and the two sides must give identical
   probabilities. Goal: at least 0.9x the raw throughput (same threads).
2. **Drift check** — :func:`monitoring.run_monitor` end to end (features, scoring, Evidently, HTML, lake reports,
   MLflow run, Evidently workspace) over 7 days, 30 days and one year ending 2013-12-31, with its time per stage;
   and the Evidently computation against plain scipy/numpy computations of the same per-column scores (normed
   Wasserstein, Jensen-Shannon over the same bins), which must agree with Evidently's to 1e-5. Windows longer
   than ``monitoring.max_drift_rows`` reach Evidently as a seeded sample (``monitoring.drift_sample``): scipy
   scores the same sample, and the largest change of a column's score against the full window is recorded.
3. **Shadow cost** — :func:`scoring.score_partition` end to end (registry look-ups, features, predictions, lake
   writes) for the same day, with a ``shadow`` alias set (the champion's predictions and the shadow's, from one
   feature build) against champion only (a copy of the same registry without the alias), interleaved. The shadow
   is a newer version registered from the champion's files, so its predict costs what a same-kind candidate's
   does. Goal: at most 2x the champion-only time.

The champion is trained here (Jan-Feb 2013, the spec's candidates, two search trials) on a temp lake holding the
whole validated year and a temp SQLite MLflow. Times are the best of interleaved repeats (robust to a busy
machine); medians are kept in ``scales``. A mismatch is printed loudly and the run exits non-zero.

    python -m bench.scoring [--out bench/results-scoring.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from bench import serving
from bench.common import cpus, figure, interleaved
from include.datasets.flights import load_nycflights13
from include.mlops import feature_store, features, monitoring, scoring, training
from include.mlops.config import DatasetSpec, load_spec
from include.mlops.storage import Lake

RESULTS = Path(__file__).with_name("results-scoring.json")
GOAL = ">= 0.9x raw predict_proba throughput"
MIN_RATIO = 0.9
TRAIN = ("2013-01-01", "2013-02-28")
# (name, first day, last day, timed repeats per side)
SCORE_SCALES = (
    ("one day", "2013-07-15", "2013-07-15", 40),
    ("one month", "2013-07-01", "2013-07-31", 10),
    ("one year", "2013-01-01", "2013-12-31", 3),
)
DRIFT_END = date(2013, 12, 31)
DRIFT_SCALES = (("7 days", 7), ("30 days", 30), ("one year", 365))
DRIFT_GOAL = "<= 60 s end to end (one daily monitor run)"
MAX_DRIFT_S = 60.0
SHADOW_GOAL = "<= 2.0x champion-only score_partition"
MAX_SHADOW_RATIO = 2.0
SHADOW_DAY, SHADOW_REPEATS = "2013-07-15", 10
# --quick (smoke test): one small scale each, a lake of Jan-Mar only
QUICK_SCORE_SCALES = (("one day", "2013-03-15", "2013-03-15", 3),)
QUICK_DRIFT_SCALES = (("7 days", 7),)
QUICK_SHADOW_DAY, QUICK_SHADOW_REPEATS = "2013-03-15", 3


# -- setup ----------------------------------------------------------------------------------------------
def build_lake(spec: DatasetSpec, root: Path, last: date = date(2013, 12, 31)) -> Lake:
    """The 2013 year (up to ``last``) in the validated zone, plus the reference tables."""
    days = [(date(2013, 1, 1) + timedelta(days=i)).isoformat() for i in range((last - date(2013, 1, 1)).days + 1)]
    return write_validated(spec, Lake(str(root)), load_nycflights13(), days)


def write_validated(spec: DatasetSpec, lake: Lake, nyc: dict[str, pd.DataFrame], days: list[str]) -> Lake:
    """The real rows of each day (ISO dates) in the validated zone, plus the reference tables."""
    from include.mlops.ingest import REFERENCE_PARTITION

    groups = {t: dict(tuple(nyc[t].groupby("flight_date"))) for t in ("flights", "weather")}
    for day in days:
        tables = {
            t: groups[t].get(day, nyc[t].iloc[:0]).reset_index(drop=True)[list(spec.source.tables[t].columns)]
            for t in ("flights", "weather")
        }
        lake.write_partition("validated", spec.name, f"date={day}", tables, source="bench")
    ref = {k: nyc[k] for k in spec.source.reference}
    lake.write_partition("reference", spec.name, REFERENCE_PARTITION, ref, source="bench")
    return lake


def train_champion(spec: DatasetSpec, lake: Lake, uri: str, artifacts: str) -> str:
    from mlflow import MlflowClient

    table = features.features_for_dates(lake, spec, *TRAIN)
    result = training.train_candidates(
        spec, table, search_iterations=2, tracking_uri=uri, artifact_root=artifacts, tags={"bench": "scoring"}
    )
    MlflowClient(uri, uri).set_registered_model_alias(spec.name, "champion", result.model_version)
    return f"{result.model_version} ({result.best_candidate}, test ROC AUC {result.metrics['test_roc_auc']:.3f})"


# -- the same drift scores, in scipy --------------------------------------------------------------------
def scipy_drift(spec: DatasetSpec, current: pd.DataFrame, reference: pd.DataFrame) -> dict[str, float]:
    """Per feature: normed Wasserstein (numeric) or Jensen-Shannon over the value frequencies (categorical),
    the methods the monitor configures in Evidently, NaN and infinities dropped as Evidently does."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    out = {}
    for name in spec.feature_names:
        ref = reference[name].replace([np.inf, -np.inf], np.nan).dropna()
        cur = current[name].replace([np.inf, -np.inf], np.nan).dropna()
        if name in spec.categorical_features:
            keys = sorted(set(ref.unique()) | set(cur.unique()), key=str)
            r = ref.value_counts().reindex(keys, fill_value=0).to_numpy() / len(ref)
            c = cur.value_counts().reindex(keys, fill_value=0).to_numpy() / len(cur)
            out[name] = float(jensenshannon(r, c))
        else:
            norm = max(float(np.std(ref.to_numpy(dtype="float64"))), 0.001)
            out[name] = float(wasserstein_distance(ref.to_numpy(dtype="float64"), cur.to_numpy(dtype="float64")) / norm)
    return out


# -- the run --------------------------------------------------------------------------------------------
def bench_scoring(
    spec: DatasetSpec, lake: Lake, uri: str, scales: tuple = SCORE_SCALES
) -> tuple[list[dict], list[dict], list[str]]:
    import mlflow.sklearn
    from threadpoolctl import ThreadpoolController

    model = scoring.load_model(spec, tracking_uri=uri)
    threads = ThreadpoolController()  # the raw side's thread cap, at the same (negligible) cost as ours
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    raw = mlflow.sklearn.load_model(f"models:/{spec.name}/{model.version}")
    rows, figures, mismatches = [], [], []
    for name, first, last, repeats in scales:
        t0 = time.perf_counter()
        frame = features.features_for_dates(lake, spec, first, last)
        build_s = time.perf_counter() - t0
        x = frame[spec.feature_names]
        n = len(frame)

        def raw_capped(x: pd.DataFrame = x) -> np.ndarray:
            with threads.limit(limits=training.compute_threads()):
                return raw.predict_proba(x)

        sides = {"score_frame": lambda frame=frame: scoring.score_frame(spec, model, frame), "raw": raw_capped}
        times = interleaved(sides, repeats)
        # Apart: interleaving a 2-thread call would make the next capped call pay for shrinking the OpenMP team.
        times |= interleaved({"raw_default_threads": lambda x=x: raw.predict_proba(x)}, repeats)
        ours = scoring.score_frame(spec, model, frame)["probability"].to_numpy()
        if not np.array_equal(ours, raw.predict_proba(x)[:, 1]):
            mismatches.append(f"score {name}: score_frame probabilities differ from raw predict_proba")
        best = {k: min(v) for k, v in times.items()}
        ratio = best["raw"] / best["score_frame"]  # throughput ratio: ours rows/s over raw rows/s
        rows.append(
            {
                "scale": name,
                "rows": n,
                "feature_build_s": round(build_s, 3),
                "best_s": {k: round(v, 5) for k, v in best.items()},
                "median_s": {k: round(statistics.median(v), 5) for k, v in times.items()},
                "rows_per_s": {k: round(n / v) for k, v in best.items()},
                "ratio": round(ratio, 3),
                "ratio_vs_default_threads": round(best["raw_default_threads"] / best["score_frame"], 3),
                "repeats": repeats,
            }
        )
        figures.append(
            {
                "name": f"score {name} ({n:,} rows): score_frame vs raw predict_proba, same threads",
                "value": round(n / best["score_frame"]),
                "unit": "rows/s",
                "baseline": round(n / best["raw"]),
                "ratio": round(ratio, 3),
                "goal": GOAL,
                "met": ratio >= MIN_RATIO,
            }
        )
        print(
            f"  score {name}: {n:,} rows, ours {best['score_frame'] * 1e3:.1f} ms, raw {best['raw'] * 1e3:.1f} ms "
            f"(default threads {best['raw_default_threads'] * 1e3:.1f} ms): {ratio:.2f}x",
            flush=True,
        )
    return rows, figures, mismatches


def bench_shadow(
    spec: DatasetSpec, lake: Lake, uri: str, root: Path, day: str = SHADOW_DAY, repeats: int = SHADOW_REPEATS
) -> tuple[dict, list[dict], list[str]]:
    """``score_partition`` of one day with a shadow vs champion only (same lake, same day, interleaved)."""
    import shutil

    from mlflow import MlflowClient

    from include.mlops import registry, tracking

    plain = f"sqlite:///{root}/mlflow-champion-only.db"
    shutil.copy(uri.removeprefix("sqlite:///"), plain.removeprefix("sqlite:///"))  # before the alias: none there
    client = MlflowClient(uri, uri)
    first = client.get_model_version(spec.name, client.get_model_version_by_alias(spec.name, "champion").version)
    with tracking.using(uri):  # MLflow resolves a models:/m-... source with a default client
        version = client.create_model_version(spec.name, first.source, run_id=first.run_id).version
    registry.set_shadow(spec, version, reason="bench: shadow cost", tracking_uri=uri)
    try:
        sides = {
            "champion_and_shadow": lambda: scoring.score_partition(spec, lake, day, tracking_uri=uri),
            "champion_only": lambda: scoring.score_partition(spec, lake, day, tracking_uri=plain),
        }
        times = interleaved(sides, repeats)
        with_shadow, alone = sides["champion_and_shadow"](), sides["champion_only"]()
    finally:
        registry.clear_shadow(spec, reason="bench done", tracking_uri=uri)
    mismatches = []
    if not (with_shadow["shadow"] or {}).get("written") or alone["shadow"] is not None:
        mismatches.append(f"shadow cost: the shadow side did not write a shadow partition: {with_shadow['shadow']}")
    else:
        ours = scoring.read_shadow_predictions(spec, lake, version, day, day)["probability"].to_numpy()
        if not np.array_equal(ours, scoring.read_predictions(spec, lake, day, day)["probability"].to_numpy()):
            mismatches.append("shadow cost: the shadow (the champion's files) scored differently from the champion")
    best = {k: min(v) for k, v in times.items()}
    ratio = best["champion_and_shadow"] / best["champion_only"]
    row = {
        "day": day,
        "rows": with_shadow["rows"],
        "best_s": {k: round(v, 4) for k, v in best.items()},
        "median_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "ratio": round(ratio, 3),
        "repeats": repeats,
    }
    fig = figure(
        f"score a day ({with_shadow['rows']:,} rows): score_partition champion + shadow vs champion only",
        best["champion_and_shadow"],
        "s",
        best["champion_only"],
        goal=SHADOW_GOAL,
        met=ratio <= MAX_SHADOW_RATIO,
    )
    print(
        f"  shadow cost {day}: champion + shadow {best['champion_and_shadow'] * 1e3:.0f} ms, champion only "
        f"{best['champion_only'] * 1e3:.0f} ms: {ratio:.2f}x",
        flush=True,
    )
    return row, [fig], mismatches


def bench_drift(
    spec: DatasetSpec, lake: Lake, uri: str, workspace: str, scales: tuple = DRIFT_SCALES, end: date = DRIFT_END
) -> tuple[list[dict], list[dict], list[str]]:
    rows, figures, mismatches = [], [], []
    model = scoring.load_model(spec, tracking_uri=uri)
    base = monitoring.champion_baseline(spec, model.version, uri)
    for name, days in scales:
        result = monitoring.run_monitor(spec, lake, end, tracking_uri=uri, window_days=days, workspace=workspace)
        start = end - timedelta(days=days - 1)
        frame = features.features_for_dates(lake, spec, start, end)
        t0 = time.perf_counter()
        sample = monitoring.drift_sample(spec, frame)  # what Evidently saw: the window, or its seeded sample
        plain = scipy_drift(spec, sample, base["reference"])
        scipy_s = time.perf_counter() - t0
        for col, score in plain.items():
            theirs = result.columns[col]["score"]
            if not np.isclose(theirs, score, rtol=1e-5, atol=1e-5):
                mismatches.append(f"drift {name}: {col} Evidently {theirs} vs scipy {score:.6f}")
        # The price of sampling: the largest change of a per-column score against the full window (0 unsampled).
        full = scipy_drift(spec, frame, base["reference"]) if len(sample) < len(frame) else plain
        sampling_error = max(abs(full[c] - plain[c]) for c in plain)
        ev_s = result.timings["evidently"]
        n = int(result.metrics["rows"])
        rows.append(
            {
                "scale": name,
                "rows": n,
                "drift_rows": len(sample),
                "sampling_max_score_error": round(sampling_error, 5),
                "reference_rows": len(base["reference"]),
                "run_monitor_s": result.seconds,
                "stages_s": result.timings,
                "evidently_s": ev_s,
                "scipy_s": round(scipy_s, 4),
                "drift_share": round(result.metrics["drift_share"], 3),
                "weighted_drift": round(result.metrics["weighted_drift"], 3),
                "prediction_drift": round(result.metrics["prediction_drift"], 4),
                "roc_auc": round(result.metrics["roc_auc"], 4),
                "brier": round(result.metrics["brier"], 4),
            }
        )
        figures += [
            figure(
                f"drift check {name} ({n:,} rows; {len(base['reference']):,} in reference): run_monitor end to end "
                "(baseline: the same per-column scores in scipy)",
                result.seconds,
                "s",
                scipy_s,
                goal=DRIFT_GOAL,
                met=result.seconds <= MAX_DRIFT_S,
                digits=3,
                stages_s=result.timings,
            ),
            figure(
                f"drift check {name}: Evidently per-column drift vs the same scores in scipy",
                ev_s,
                "s",
                scipy_s,
                digits=3,
            ),
        ]
        print(
            f"  drift {name}: {n:,} rows ({len(sample):,} in the drift report, largest score change from sampling "
            f"{sampling_error:.4f}), run_monitor {result.seconds:.1f} s "
            f"({', '.join(f'{k} {v:.1f}' for k, v in result.timings.items())}), scipy {scipy_s:.2f} s",
            flush=True,
        )
    return rows, figures, mismatches


def run(out: Path, quick: bool = False) -> int:
    import evidently
    import sklearn

    spec = load_spec("flights")
    last = date(2013, 3, 31) if quick else DRIFT_END
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root}/mlflow.db"
        t0 = time.perf_counter()
        lake = build_lake(spec, root / "lake", last)
        print(f"validated days up to {last} written in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        champion = train_champion(spec, lake, uri, str(root / "artifacts"))
        print(f"champion v{champion} trained in {time.perf_counter() - t0:.1f} s", flush=True)
        score_rows, score_figures, m1 = bench_scoring(spec, lake, uri, QUICK_SCORE_SCALES if quick else SCORE_SCALES)
        shadow_row, shadow_figures, m4 = bench_shadow(
            spec,
            lake,
            uri,
            root,
            *((QUICK_SHADOW_DAY, QUICK_SHADOW_REPEATS) if quick else (SHADOW_DAY, SHADOW_REPEATS)),
        )
        drift_rows, drift_figures, m2 = bench_drift(
            spec, lake, uri, str(root / "evidently"), QUICK_DRIFT_SCALES if quick else DRIFT_SCALES, last
        )
        day = features.features_for_dates(lake, spec, last, last)[spec.feature_names]
        i = day.isna().sum(axis=1).idxmin()  # the most complete row of the last day
        os.environ[feature_store.DIR_ENV] = str(root / "online")  # the embedded store, for us and the server
        feature_store.materialize_day(spec, lake, last)
        keyed = feature_store.request_rows(spec, lake, last).loc[[i]].reset_index(drop=True)
        serve_figures, serve_details, m3 = serving.serve_and_measure(
            f"models:/{spec.name}@champion", uri, day.loc[[i]].reset_index(drop=True), root, quick, keyed
        )
    mismatches = m1 + m2 + m3 + m4
    out.write_text(
        json.dumps(
            {
                "benchmark": "scoring",
                "machine": {
                    "python": platform.python_version(),
                    "pandas": pd.__version__,
                    "scikit_learn": sklearn.__version__,
                    "evidently": evidently.__version__,
                    "cpus": cpus(),
                    "threads": training.compute_threads(),
                },
                "champion": champion,
                "figures": score_figures + shadow_figures + drift_figures + serve_figures,
                "scales": {"scoring": score_rows, "shadow": shadow_row, "drift": drift_rows, "serving": serve_details},
                "mismatches": mismatches,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")
    if mismatches:
        bar = "!" * 100
        print(f"\n{bar}\nMISMATCH\n" + "\n".join(mismatches) + f"\n{bar}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON figures")
    parser.add_argument("--quick", action="store_true", help="Jan-Mar, one small scale each (smoke test)")
    a = parser.parse_args(argv)
    return run(a.out, a.quick)


if __name__ == "__main__":
    sys.exit(main())
