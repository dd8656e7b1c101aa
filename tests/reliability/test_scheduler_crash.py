"""Crash safety under a real scheduler (make reliability): on the native production topology (tests/integration:
scheduler, two Celery workers), the task process of `flights_ingest.validate` (three days) and of
`flights_train.build_features` is SIGKILLed mid-write: the test watches for the new partition's folder, freezes
the process (SIGSTOP) as soon as it appears, lets it run in 0.2 ms slices until a data file is there and the
manifest is not, then SIGKILLs it. The scheduler must retry the task (default_args: 2 retries) and the retry
must succeed, while a watcher thread checks every visible partition of the lake (one with a `_manifest.json`)
all along: each file it lists is there with its sha256. Afterwards each partition holds exactly its manifest's files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import day_range, poll, write_validated
from tests.reliability.test_crash_safety import _check_visible_partitions_complete

pytestmark = [pytest.mark.slow_reliability, pytest.mark.integration]

INGEST_DAYS = ("2013-06-10", "2013-06-11", "2013-06-12")
# a window no other test trains on, so its feature version is new: 21 days and the 28 days of history before
WINDOW_END, WINDOW_DAYS = "2013-03-21", 21
FEATURE_INPUT_DAYS = day_range("2013-02-01", WINDOW_END)
TRAIN_CONF = {"window_end": WINDOW_END, "window_days": WINDOW_DAYS, "search_iterations": 1, "seed": 7}
MANIFEST = "_manifest.json"


class LakeWatcher(threading.Thread):
    """Checks every visible partition of the watched zones over and over while the DAG runs."""

    def __init__(self, lake, zones: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.lake, self.zones = lake, zones
        self.stop = threading.Event()
        self.rounds, self.checked, self.problems = 0, 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            for zone in self.zones:
                for p in self.lake.partitions(zone, "flights"):
                    self._check(zone, p)
            self.rounds += 1
            time.sleep(0.05)

    def _check(self, zone: str, partition: str) -> None:
        base = Path(self.lake.partition_path(zone, "flights", partition))
        m = self.lake.manifest(zone, "flights", partition)
        if m is None:  # removed meanwhile
            return
        for entry in m.files.values():
            try:
                digest = hashlib.sha256((base / entry.path).read_bytes()).hexdigest()
            except FileNotFoundError:
                digest = None
            if digest != entry.sha256 and self.lake.manifest(zone, "flights", partition) == m:
                self.problems.append((zone, partition, entry.path, "missing" if digest is None else "sha256"))
        self.checked += 1


def _task_pid(ti_id: str) -> int | None:
    """The task runner process of a task instance: Airflow titles it `airflow worker -- <ti id>`."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if f"airflow worker -- {ti_id}" in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    return int(proc.name)
    return None


def _wait(what: str, ready, timeout: float, interval: float = 0.5):
    return poll(what, ready, timeout, interval)


def _kill_mid_write(stack, dag_id: str, run_id: str, task_id: str, partition_dirs) -> dict:
    """Wait for the task's first try to run, then SIGKILL its process while a partition is half written:
    data in the folder, no manifest yet. ``partition_dirs()`` lists the folders a new partition may appear in."""
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"

    def running() -> dict | None:
        ti = stack.api("GET", path)
        assert ti["state"] not in ("success", "failed"), f"{task_id} ended ({ti['state']}) before the kill"
        return ti if ti["state"] == "running" else None

    ti = _wait(f"{dag_id}.{task_id} running", running, 600, 0.2)
    pid = _wait(f"the task process of {task_id}", lambda: _task_pid(ti["id"]), 60, 0.05)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for d in partition_dirs():
            if d.is_dir() and not (d / MANIFEST).exists():  # write_partition has begun (it creates the folder)
                os.kill(pid, signal.SIGSTOP)
                return _step_to_half_written(pid, d) | {"try": ti["try_number"]}
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise AssertionError(f"{task_id} (pid {pid}) ended before it began writing a new partition") from None
        time.sleep(0.002)
    raise AssertionError(f"{task_id} began no new partition in 600 s")


def _step_to_half_written(pid: int, d: Path, step_s: float = 0.0002) -> dict:
    """The process is stopped with the partition's folder begun: let it run in slices of ``step_s`` until a data
    file is there (a temp file counts) and the manifest is not, then SIGKILL it. The data of a feature table is
    written ~1 ms before its manifest: a poll alone misses that window, stepping does not."""
    while True:
        names = sorted(os.listdir(d))
        if MANIFEST in names:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"stepping overshot: the manifest of {d} was written before a kill: {names}")
        if any(n != MANIFEST and not n.startswith(f"{MANIFEST}.") for n in names):
            os.kill(pid, signal.SIGKILL)
            return {"pid": pid, "dir": str(d), "files_at_kill": names}
        os.kill(pid, signal.SIGCONT)
        time.sleep(step_s)
        os.kill(pid, signal.SIGSTOP)


def _finish(stack, dag_id: str, run_id: str, timeout: float = 900) -> str:
    def done() -> str | None:
        state = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    return _wait(f"{dag_id} run {run_id}", done, timeout, 2)


def _tries(stack, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
    return sorted(stack.api("GET", path)["task_instances"], key=lambda t: t["try_number"])


@pytest.fixture(scope="module")
def crashes(stack, nyc, spec) -> dict:
    from include.mlops.storage import Lake

    lake = Lake(str(stack.lake))
    for day in INGEST_DAYS:  # each kill must hit a first write of the partition
        lake.delete_partition("validated", "flights", f"date={day}")
    missing = [d for d in FEATURE_INPUT_DAYS if lake.manifest("validated", "flights", f"date={d}") is None]
    write_validated(lake, nyc, spec, missing)
    watcher = LakeWatcher(lake, ("validated", "features"))
    watcher.start()
    out: dict = {"lake": lake, "kills": [], "runs": [], "watcher": watcher}
    t0 = time.monotonic()
    try:
        stack.api("PATCH", "/api/v2/dags/flights_ingest", json={"is_paused": False})
        for day in INGEST_DAYS:
            run = stack.api("POST", "/api/v2/dags/flights_ingest/dagRuns",
                            json={"logical_date": None, "conf": {"date": day}})  # fmt: skip
            part = Path(lake.partition_path("validated", "flights", f"date={day}"))
            kill = _kill_mid_write(stack, "flights_ingest", run["dag_run_id"], "validate", lambda p=part: [p])
            visible = lake.manifest("validated", "flights", f"date={day}")
            out["kills"].append(
                kill | {"task": f"validate {day}", "partition": f"date={day}", "visible_at_kill": visible}
            )
            state = _finish(stack, "flights_ingest", run["dag_run_id"])
            out["runs"].append(("flights_ingest", run["dag_run_id"], "validate", state))

        features = Path(lake.path("features", "flights"))
        versions_before = set(lake.partitions("features", "flights"))
        stack.api("PATCH", "/api/v2/dags/flights_train", json={"is_paused": False})
        run = stack.api("POST", "/api/v2/dags/flights_train/dagRuns", json={"logical_date": None, "conf": TRAIN_CONF})

        def new_version_dirs() -> list[Path]:
            if not features.exists():
                return []
            return [d for d in features.iterdir() if d.is_dir() and d.name not in versions_before]

        kill = _kill_mid_write(stack, "flights_train", run["dag_run_id"], "build_features", new_version_dirs)
        version = Path(kill["dir"]).name
        visible = lake.manifest("features", "flights", version)
        out["kills"].append(kill | {"task": "build_features", "partition": version, "visible_at_kill": visible})
        state = _finish(stack, "flights_train", run["dag_run_id"])
        out["runs"].append(("flights_train", run["dag_run_id"], "build_features", state))
    finally:
        watcher.stop.set()
        watcher.join(timeout=30)
        with contextlib.suppress(Exception):
            stack.api("PATCH", "/api/v2/dags/flights_train", json={"is_paused": True})
    out["tries"] = {(dag, task, run_id): _tries(stack, dag, run_id, task) for dag, run_id, task, _ in out["runs"]}
    figures = {
        "seconds": round(time.monotonic() - t0, 1),
        "kills": [(k["task"], k["files_at_kill"]) for k in out["kills"]],
        "tries": {
            f"{d}.{t}": [(x["try_number"], x["state"], x["duration"]) for x in v]
            for (d, t, _), v in out["tries"].items()
        },
        "watcher_rounds": watcher.rounds,
        "partitions_checked": watcher.checked,
    }
    print(f"\nscheduler crash figures: {figures}")
    return out


def test_every_kill_hit_a_half_written_partition(crashes):
    assert len(crashes["kills"]) == len(INGEST_DAYS) + 1
    for kill in crashes["kills"]:
        assert kill["try"] == 1, kill
        assert kill["files_at_kill"], kill
        assert MANIFEST not in kill["files_at_kill"], kill
        assert kill["visible_at_kill"] is None, f"{kill['task']}: partition visible after the kill"


def test_killed_try_failed_and_the_retry_succeeded(crashes):
    for (dag, task, run_id), tries in crashes["tries"].items():
        assert [t["try_number"] for t in tries] == [1, 2], (dag, task, run_id, tries)
        assert tries[0]["state"] in ("failed", "up_for_retry"), tries[0]
        assert tries[1]["state"] == "success", tries[1]
    assert [state for *_, state in crashes["runs"]] == ["success"] * len(crashes["runs"])


def test_no_partial_partition_ever_visible(crashes):
    watcher = crashes["watcher"]
    assert watcher.rounds > 10, watcher.rounds
    assert watcher.checked > 0, watcher.checked
    assert not watcher.problems, watcher.problems[:20]


def test_partitions_complete_and_clean_after_the_retry(crashes):
    lake = crashes["lake"]
    _check_visible_partitions_complete(lake)
    for kill in crashes["kills"]:
        zone = "validated" if kill["task"].startswith("validate") else "features"
        m = lake.manifest(zone, "flights", kill["partition"])
        assert m is not None, kill
        assert m.rows > 300, kill
        on_disk = sorted(os.listdir(kill["dir"]))
        # the killed try's files (temp files included) are gone: only what the manifest lists remains
        assert on_disk == sorted([MANIFEST, *(e.path for e in m.files.values())]), on_disk
