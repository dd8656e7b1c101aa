"""`python -m bench` works: a quick run writes results.json in the agreed shape and BENCHMARKS.md from it
(no timing is asserted: speed goals live in bench/ only), and the year replicated at scale keeps keys unique."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

FIELDS = {"name", "value", "unit", "baseline", "ratio", "goal", "met"}


def test_quick_run_writes_results_and_markdown(tmp_path):
    out, md = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    cmd = [sys.executable, "-m", "bench", "--quick", "--only", "validation", "--out", str(out), "--md", str(md)]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["figures"], "no figures"
    for f in results["figures"]:
        assert set(f) >= FIELDS, f
        assert f["baseline"] is not None, f"{f['name']} has no baseline"
        assert (f["goal"] is None) == (f["met"] is None), f
    m = results["machine"]
    assert m["cpus"] >= 1
    assert m["python"]
    assert m["libraries"]["great-expectations"]
    assert len(m["load_average_start"]) == 3
    assert len(m["load_average_end"]) == 3
    text = md.read_text()
    assert "| figure | value | baseline | ratio | goal | met |" in text
    assert results["figures"][0]["name"].split(":")[0] in text


def test_unknown_section_is_refused(tmp_path):
    cmd = [sys.executable, "-m", "bench", "--only", "nope", "--out", str(tmp_path / "r.json")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown sections" in proc.stderr


def test_replicated_year_has_unique_keys_and_shifted_dates(nyc, spec):
    from bench.common import replicate

    year = {t: nyc[t].iloc[:2000] for t in ("flights", "weather")}
    big = replicate(year, 3)
    f = big["flights"]
    assert len(f) == 3 * 2000
    assert not f.duplicated(spec.entity_keys).any()
    assert sorted(f["flight_date"].str.slice(0, 4).unique()) == ["2013", "2014", "2015"]
    assert (f["time_hour"].str.slice(0, 4) == f["flight_date"].str.slice(0, 4)).mean() > 0.99
    assert not big["weather"].duplicated(["origin", "time_hour"]).any()
