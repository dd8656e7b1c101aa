"""Command line of the library: ``python -m include.mlops <command>`` (``--help`` lists them)."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m include.mlops", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seed-source", help="(re)create a dataset's source tables from its spec's source.seed")
    s.add_argument("--dataset", help="the spec to seed (default: every spec with a source.seed)")
    s.add_argument(
        "--url", help="SQLAlchemy URL (default: MLOPS_SOURCE_URL_<DATASET>, MLOPS_SOURCE_URL, .data/source.db)"
    )
    v = sub.add_parser("check-spec", help="validate dataset spec files; exit 1 naming each problem")
    v.add_argument("paths", nargs="*", help="spec files (default: every spec in include/config)")
    h = sub.add_parser("audit", help="promotion / rejection / rollback history of a registered model")
    h.add_argument("dataset", help="dataset name (= registered model name), e.g. flights")
    h.add_argument("--at", help="also say which version was champion at this time (ISO, UTC)")
    f = sub.add_parser("features", help="list a dataset's features: definitions, freshness, the models that use them")
    f.add_argument("dataset", help="dataset name, e.g. flights")
    f.add_argument("--json", action="store_true", help="print the catalog as JSON")
    a = p.parse_args(argv)

    if a.cmd == "seed-source":
        from include.mlops.config import load_spec, load_spec_file, spec_paths
        from include.mlops.sources import seed_source

        specs = [load_spec(a.dataset)] if a.dataset else [load_spec_file(p) for p in spec_paths()]
        for spec in specs:
            if spec.source.seed is None:
                print(f"{spec.name}: no source.seed in its spec (its source is filled by its own system)")
                continue
            r = seed_source(spec, a.url)
            print(json.dumps({"dataset": spec.name, "url": r.url, "rows": r.rows, "seconds": r.seconds}))
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
    if a.cmd == "features":
        from include.mlops import feature_store
        from include.mlops.config import load_spec
        from include.mlops.storage import Lake

        cat = feature_store.catalog(load_spec(a.dataset), Lake())
        print(json.dumps(cat, indent=2) if a.json else feature_store.format_catalog(cat))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
