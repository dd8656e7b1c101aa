"""DAG parse cost: what each file in dags/ costs the DAG processor, in fresh subprocesses.

Each probe is a new interpreter that imports ``airflow.sdk`` and then runs one DAG file; the CPU time of the
second step is the file's parse cost over ``import airflow.sdk`` (CPU time, so a busy machine adds little; best
of N interleaved probes). Airflow 3.3's lazy exports make ``from airflow.sdk import dag, task`` plus an outlet
Asset cost ~0.14 s by themselves, so each file is also compared with a bare reference DAG using the same
constructs (tests/dags/test_dag_integrity.py) and the goal is on the difference: at most 0.1 s added. The
contrast is a naive DAG file importing GX, MLflow, Evidently and scikit-learn at the top.

    python -m bench.parse [--quick] [--out bench/results-parse.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import figure, write_json
from tests.dags.test_dag_integrity import _PROBE, HEAVY, REFERENCE_DAG

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results-parse.json")
GOAL = "<= 0.1 s added over the bare reference DAG"
MAX_ADDED = 0.1
NAIVE_DAG = "import great_expectations, mlflow, evidently, sklearn.ensemble\n" + REFERENCE_DAG


def probe(path: Path) -> dict:
    """CPU seconds of ``import airflow.sdk`` and of running the file after it, in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(out: Path, quick: bool = False) -> int:
    rounds, naive_rounds = (2, 1) if quick else (5, 3)
    dag_files = sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        reference = Path(tmp) / "reference_dag.py"
        reference.write_text(REFERENCE_DAG)
        naive = Path(tmp) / "naive_dag.py"
        naive.write_text(NAIVE_DAG)
        files = [*dag_files, naive]
        samples: dict[str, list[dict]] = {p.name: [] for p in files} | {"reference": []}
        for r in range(rounds):  # interleaved: every round probes the reference and every file once
            samples["reference"].append(probe(reference))
            for p in files:
                if p is naive and r >= naive_rounds:
                    continue
                samples[p.name].append(probe(p))
    best = {k: min(s["dag"] for s in v) for k, v in samples.items()}
    sdk = min(s["sdk"] for v in samples.values() for s in v)
    ref = best["reference"]
    figures = [
        figure(
            "parse: `import airflow.sdk` itself (fresh interpreter)",
            sdk,
            "s CPU",
            None,
            digits=3,
        ),
        figure(
            "parse: bare reference DAG (dag, task, Asset, Param; no project code) over `import airflow.sdk`",
            ref,
            "s CPU",
            None,
            digits=3,
        ),
    ]
    for p in files:
        name = (
            "naive DAG importing GX, MLflow, Evidently, sklearn at top (the contrast: what the goal rules out)"
            if p is naive
            else f"dags/{p.name}"
        )
        added = best[p.name] - ref
        heavy = samples[p.name][0]["heavy"]
        figures.append(
            figure(
                f"parse: {name} over `import airflow.sdk` (baseline: the bare reference DAG)",
                best[p.name],
                "s CPU",
                ref,
                goal=None if p is naive else GOAL,
                met=None if p is naive else added <= MAX_ADDED,
                digits=3,
                added_s=round(added, 3),
                heavy_imports=heavy,
                probes=len(samples[p.name]),
            )
        )
        print(f"  {name}: {best[p.name]:.3f} s (+{added:.3f} s over the reference {ref:.3f} s) {heavy or ''}")
    write_json(out, {"benchmark": "parse", "figures": figures, "samples": samples})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="fewer probes (smoke test)")
    a = parser.parse_args(argv)
    return run(a.out, a.quick)


if __name__ == "__main__":
    sys.exit(main())
