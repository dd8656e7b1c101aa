"""Crash safety (make reliability): a subprocess validates a raw day into validated/ and builds a feature table,
over and over (each time removing the partitions first, so every round really writes); it is SIGKILLed at
random moments many times. After every kill, every partition the lake shows (has a manifest) is complete: each
listed file exists and has the manifest's sha256, and its tables read. Then an uninterrupted run succeeds."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from datetime import date

import pytest

from tests.conftest import REPO
from tests.reliability.conftest import day_range, write_validated

# integration too: `make test` (-m "not integration") leaves it out; `make reliability` runs it (~5 min)
pytestmark = [pytest.mark.slow_reliability, pytest.mark.integration]

DAYS = day_range("2013-05-01", "2013-05-10")
RAW_DAY = "2013-05-11"
KILLS = int(os.environ.get("MLOPS_CRASH_KILLS", "30"))

CHILD = f"""
import sys
from datetime import date
from include.mlops import features, ingest
from include.mlops.config import load_spec
from include.mlops.storage import Lake
spec, lake = load_spec("flights"), Lake()
rounds = int(sys.argv[1])
for i in range(rounds if rounds > 0 else 10**9):
    lake.delete_partition("validated", "flights", "date={RAW_DAY}")
    ingest.validate_raw(spec, lake, date.fromisoformat("{RAW_DAY}"), date(2013, 5, 12), build_docs=False)
    for p in lake.partitions("features", "flights"):
        lake.delete_partition("features", "flights", p)
    features.materialize_features(spec, lake, "{DAYS[0]}", "{RAW_DAY}")
    print("round", i, flush=True)
"""


def _child(rounds: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(rounds)], env=env, cwd=REPO, stdout=subprocess.PIPE)


def _check_visible_partitions_complete(lake) -> int:
    checked = 0
    for zone in ("validated", "features"):
        for p in lake.partitions(zone, "flights"):
            m = lake.manifest(zone, "flights", p)
            base = lake.partition_path(zone, "flights", p)
            for name, entry in m.files.items():
                data = lake.fs.cat_file(f"{base}/{entry.path}")
                assert hashlib.sha256(data).hexdigest() == entry.sha256, (zone, p, name)
                if entry.path.endswith(".parquet"):
                    assert len(lake.read_table(zone, "flights", p, name)) == entry.rows
            checked += 1
    return checked


def test_sigkill_mid_write_never_leaves_a_partial_partition(own_lake, nyc, spec, source_db):
    from include.mlops import ingest

    write_validated(own_lake, nyc, spec, DAYS)
    ingest.extract_to_raw(spec, own_lake, source_db, date(2013, 5, 11), date(2013, 5, 12))
    # how long one round takes, to spread the kills over it
    t0 = time.monotonic()
    assert _child(1).wait(timeout=300) == 0
    round_s = time.monotonic() - t0
    rng = random.Random(13)
    visible = 0
    for _ in range(KILLS):
        proc = _child(0)
        time.sleep(rng.uniform(0.5, 1.5) * round_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        visible += _check_visible_partitions_complete(own_lake)
    assert visible > 0, "the kills never left a visible partition to check"
    assert _child(1).wait(timeout=300) == 0, "a rerun after the crashes fails"
    assert own_lake.manifest("validated", "flights", f"date={RAW_DAY}") is not None
    assert len(own_lake.partitions("features", "flights")) == 1
    _check_visible_partitions_complete(own_lake)
