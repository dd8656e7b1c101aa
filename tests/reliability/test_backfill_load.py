"""Load (make reliability): a backfill of `flights_ingest` over MLOPS_BACKFILL_DAYS days of 2013 (default 365)
with max_active_runs 8 on the native Celery topology (two workers, two slots each, tests/integration). It must
end with every run and every task instance successful; the figures an operator sizes workers with are printed:
wall time, days per minute, tasks per worker, retries, the most task instances seen running at once."""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import date, timedelta

import pytest

from tests.integration import topology

pytestmark = [pytest.mark.slow_reliability, pytest.mark.integration]

DAYS = int(os.environ.get("MLOPS_BACKFILL_DAYS", "365"))
FIRST_DAY = date(2013, 1, 1)
LAST_DAY = FIRST_DAY + timedelta(days=DAYS - 1)
MAX_ACTIVE_RUNS = 8
SECONDS_PER_DAY_BUDGET = 20  # measured 7.2 s/day on 2 cores (31 days); the wait fails well after that


def _count(stack, dag_id: str, **params) -> int:
    page = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 1, **params})
    return page["total_entries"]


@pytest.fixture(scope="module")
def backfill(stack) -> dict:
    """Run the backfill to the end (bounded wait, failing fast on a failed run); return runs, tasks, figures."""
    assert 1 <= DAYS <= 365, f"MLOPS_BACKFILL_DAYS={DAYS}: 1..365 days of 2013"
    stack.api("PATCH", "/api/v2/dags/flights_ingest", json={"is_paused": False})
    t0 = time.monotonic()
    created = stack.api(
        "POST",
        "/api/v2/backfills",
        json={
            "dag_id": "flights_ingest",
            "from_date": f"{FIRST_DAY}T00:00:00Z",
            "to_date": f"{LAST_DAY}T00:00:00Z",
            "max_active_runs": MAX_ACTIVE_RUNS,
        },
    )
    peak = {"running_tasks": 0, "running_runs": 0}

    def done() -> bool:
        if _count(stack, "flights_ingest", state="failed"):
            raise AssertionError(f"a backfill run failed\n{stack.failure_report('flights_ingest')}")
        running = stack.api("GET", "/api/v2/dags/flights_ingest/dagRuns/~/taskInstances",
                            params={"state": "running", "limit": 1})["total_entries"]  # fmt: skip
        peak["running_tasks"] = max(peak["running_tasks"], running)
        peak["running_runs"] = max(peak["running_runs"], _count(stack, "flights_ingest", state="running"))
        return _count(stack, "flights_ingest", state="success") >= DAYS

    stack.wait(f"backfill of {DAYS} days", done, timeout=max(600, DAYS * SECONDS_PER_DAY_BUDGET),
               logs=topology.WORKERS)  # fmt: skip
    wall = time.monotonic() - t0
    # the scheduler marks the backfill completed in a later loop than the one finishing its last run
    path = f"/api/v2/backfills/{created['id']}"
    stack.wait("backfill marked completed", lambda: stack.api("GET", path)["completed_at"], 120)
    tis = stack.task_instances("flights_ingest")
    runs: list[dict] = []
    while True:
        page = stack.api("GET", "/api/v2/dags/flights_ingest/dagRuns", params={"limit": 100, "offset": len(runs)})
        runs += page["dag_runs"]
        if not page["dag_runs"] or len(runs) >= page["total_entries"]:
            break
    figures = {
        "days": DAYS,
        "wall_s": round(wall, 1),
        "days_per_min": round(DAYS / wall * 60, 2),
        "tasks_per_worker": dict(Counter(t["hostname"] for t in tis)),
        "retried_tasks": sorted((t["dag_run_id"], t["task_id"], t["try_number"]) for t in tis if t["try_number"] > 1),
        "peak_running_tasks": peak["running_tasks"],
        "peak_running_runs": peak["running_runs"],
        "backfill": stack.api("GET", path),
    }
    print(f"\nbackfill load figures: {figures}")
    return {"runs": runs, "tis": tis, "figures": figures}


def test_every_day_has_one_successful_backfill_run(backfill):
    runs = backfill["runs"]
    assert sorted(r["logical_date"][:10] for r in runs) == [
        (FIRST_DAY + timedelta(days=i)).isoformat() for i in range(DAYS)
    ]
    assert {r["run_type"] for r in runs} == {"backfill"}
    assert {r["state"] for r in runs} == {"success"}
    assert backfill["figures"]["backfill"]["completed_at"], "the backfill is not marked completed"


def test_zero_failed_tasks(backfill):
    tis = backfill["tis"]
    bad = [(t["dag_run_id"], t["task_id"], t["state"]) for t in tis if t["state"] != "success"]
    assert not bad, bad
    assert Counter(t["task_id"] for t in tis) == {"extract": DAYS, "validate": DAYS}


def test_load_spread_over_both_workers_within_the_run_limit(backfill):
    figures = backfill["figures"]
    assert set(figures["tasks_per_worker"]) == set(topology.WORKERS), figures["tasks_per_worker"]
    assert figures["peak_running_runs"] <= MAX_ACTIVE_RUNS
    # two workers with two slots each: never more than four task processes at once
    assert figures["peak_running_tasks"] <= 2 * len(topology.WORKERS)


def test_every_day_published_complete(stack, backfill):
    from include.mlops.storage import Lake

    lake = Lake(str(stack.lake))
    want = [f"date={FIRST_DAY + timedelta(days=i)}" for i in range(DAYS)]
    assert [p for p in lake.partitions("validated", "flights") if p in want] == want
    assert all(lake.manifest("validated", "flights", p).rows > 300 for p in want)
