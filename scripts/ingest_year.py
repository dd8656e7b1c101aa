"""Every day of the dataset's time range through the normal ingest path, on a scratch lake and source.

The same library calls the ``<ds>_ingest`` DAG makes (``ingest.extract_to_raw`` then ``ingest.validate_raw``),
one day at a time, from a scratch SQLite source seeded as ``make seed`` does; Data Docs are skipped (they do
not change a verdict). Prints, as JSON: days per status, rejected days with their reasons, the warnings of
each day that had any, and every quarantined row (with ``_day``, ``_table`` and its ``_reasons``). The
README's bad-input table quotes its output.

    python scripts/ingest_year.py [--dataset flights] [--first 2013-01-01] [--last 2013-12-31] [--out year.json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from include.mlops import ingest, sources, validation
from include.mlops.config import load_spec
from include.mlops.storage import Lake


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="flights")
    ap.add_argument("--first")
    ap.add_argument("--last")
    ap.add_argument("--out")
    args = ap.parse_args()
    spec = load_spec(args.dataset)
    first = date.fromisoformat(args.first) if args.first else spec.time.start
    last = date.fromisoformat(args.last) if args.last else spec.time.end
    work = Path(tempfile.mkdtemp(prefix="ingest-year-"))
    url = f"sqlite:///{work}/source.db"
    # the spec-driven seeding (source.seed) takes the spec; the flights-only one did not
    takes_spec = "spec" in inspect.signature(sources.seed_source).parameters
    sources.seed_source(spec, url) if takes_spec else sources.seed_source(url)
    lake = Lake(str(work / "lake"))
    status: Counter[str] = Counter()
    rejected, warnings, quarantined = {}, {}, []
    t0 = time.perf_counter()
    day = first
    while day <= last:
        end = day + timedelta(days=1)
        ingest.extract_to_raw(spec, lake, url, day, end, run_id="ingest-year")
        try:
            result = ingest.validate_raw(spec, lake, day, end, run_id="ingest-year", build_docs=False)
            status[result["status"]] += 1
            if result["warnings"]:
                warnings[day.isoformat()] = result["warnings"]
            if result["rows_quarantined"]:
                for table in result["rows_quarantined"]:
                    q = lake.read_table("quarantine", spec.name, f"date={day}", table)
                    for row in q.to_dict("records"):
                        quarantined.append({**row, "_day": day.isoformat(), "_table": table})
        except (validation.ValidationFailed, ingest.InputRejected) as exc:
            status["rejected"] += 1
            rejected[day.isoformat()] = str(exc)
        day = end
    out = {
        "dataset": spec.name,
        "days": (last - first).days + 1,
        "status": dict(status),
        "rejected": rejected,
        "warnings": warnings,
        "quarantined_rows": len(quarantined),
        "quarantined": quarantined,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(out, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
