"""What every benchmark shares: the figure record, the machine record, timing helpers, the year replicated at
scale, isolated temp roots, and running a stage in a fresh process for its own peak RSS."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def figure(
    name: str,
    value: float | None,
    unit: str,
    baseline: float | None,
    *,
    goal: str | None = None,
    met: bool | None = None,
    ratio: float | None = None,
    digits: int = 4,
    **extra: Any,
) -> dict[str, Any]:
    """One figure: ``ratio`` defaults to value / baseline; ``met`` stays None when there is no goal."""
    if ratio is None and value is not None and baseline:
        ratio = value / baseline
    out = {
        "name": name,
        "value": None if value is None else round(value, digits),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, digits),
        "ratio": None if ratio is None else round(ratio, 3),
        "goal": goal,
        "met": None if goal is None else bool(met),
    }
    return out | extra


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """CPU, RAM, Python and the versions of the libraries the figures depend on."""
    from importlib.metadata import PackageNotFoundError, version

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        ram = float("nan")
    libs = {}
    for dist in (
        "apache-airflow",
        "great-expectations",
        "mlflow",
        "evidently",
        "scikit-learn",
        "pandas",
        "numpy",
        "pyarrow",
    ):
        try:
            libs[dist] = version(dist)
        except PackageNotFoundError:
            libs[dist] = None
    return {
        "cpus": cpus(),
        "cpu_model": model,
        "ram_gb": round(ram, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": libs,
        "threads": os.environ.get("MLOPS_TRAIN_THREADS", "1"),
    }


def interleaved(sides: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each side per repeat, sides alternating (a busy machine slows both alike)."""
    if warmup:
        for fn in sides.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- the year at scale ----------------------------------------------------------------------------------
def replicate(nyc: dict[str, pd.DataFrame], factor: int) -> dict[str, pd.DataFrame]:
    """The 2013 flights and weather ``factor`` times (see :func:`replicate_frame`). Factor 1 is the real year."""
    return {t: replicate_frame(nyc[t], factor) for t in ("flights", "weather")}


def replicate_frame(df: pd.DataFrame, factor: int) -> pd.DataFrame:
    """``factor`` copies of a frame of the 2013 year: copy k has its dates (``flight_date``, ``time_hour``,
    ``year``) shifted by k years, so every copy is a distinct, valid calendar, and new flight numbers
    (flight + 10,000 * k), so entity keys stay unique. Each column is built at its final size in one step
    (no per-copy frames to concatenate, which would double the peak) with its dtype kept, and each distinct
    date is one shared str object, as pyarrow's ``to_pandas`` (which deduplicates strings) gives a batch read
    from the lake or a Parquet source."""
    if factor == 1:
        return df.reset_index(drop=True)
    n = len(df)
    rows = np.tile(np.arange(n), factor)
    copy = np.repeat(np.arange(factor), n)
    out = pd.DataFrame(index=pd.RangeIndex(n * factor))  # columns set one by one: no consolidating copy
    for c in df.columns:
        if c in ("flight_date", "time_hour"):
            codes, uniques = pd.factorize(df[c])
            text = pd.Series(uniques, dtype=object)
            table = np.concatenate([_shift_years(text, k).to_numpy(dtype=object) for k in range(factor)])
            all_codes = np.tile(codes, factor)
            values = table[np.where(all_codes >= 0, all_codes + copy * len(uniques), 0)]
            values[all_codes < 0] = None
            out[c] = values
        elif c in ("year", "flight"):
            out[c] = df[c].to_numpy()[rows] + copy * (1 if c == "year" else 10_000)
        else:
            out[c] = df[c].array.take(rows)
    return out


def _shift_years(s: pd.Series, k: int) -> pd.Series:
    """ISO text with the year moved by ``k`` (Feb 29 cannot occur: 2013 has none)."""
    if not k:
        return s
    return (s.str.slice(0, 4).astype(int) + k).astype(str).str.zfill(4) + s.str.slice(4)


# -- a stage in a fresh process -------------------------------------------------------------------------
def _child(fn: Callable[..., dict], args: tuple, q) -> None:
    try:
        out = fn(*args)
        # A stage may report its own peak (taken before its baseline ran in the same process).
        peak = peak_rss_mb()
        out["peak_rss_mb"] = out.pop("stage_peak_rss_mb", None) or peak
        q.put(out)
    except BaseException as exc:  # report it to the parent instead of hanging it
        q.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, the high-water mark of its own address space. getrusage's
    ru_maxrss is not used: Linux carries it across exec, so a spawned child starts at its parent's size."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_fresh_process(fn: Callable[..., dict], *args: Any, timeout: float = 1800) -> dict[str, Any]:
    """Run ``fn(*args)`` (a module-level function returning a dict) in a spawned process; its result plus the
    process's peak RSS in MB."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, args, q))
    p.start()
    try:
        out = q.get(timeout=timeout)
    finally:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
    return out


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")
