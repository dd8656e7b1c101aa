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
    r = sub.add_parser(
        "replay-from", help="JSON {dataset: first day not yet ingested} of the replayed specs (time.replay)"
    )
    r.add_argument("--dataset", help="only this spec")
    t = sub.add_parser(
        "train",
        help="train a dataset's candidates on a window and register the best as challenger (the train DAG's Params)",
        description="Build (or reuse) the feature table of the window from the lake's validated days, train the "
        "candidates under MLflow (MLFLOW_TRACKING_URI) and register the best as a new version with alias "
        "challenger. The gate and promotion stay with the <dataset>_train DAG. --from-version N repeats version "
        "N's recorded inputs (spec as trained, window, seed, budget, candidates): the same metrics.",
    )
    t.add_argument("dataset", help="dataset name (= spec file stem), e.g. flights")
    t.add_argument("--window-end", help="last day (YYYY-MM-DD) of the window; default: the latest validated day")
    t.add_argument("--window-days", type=int, help="validated days in the window (default: the spec's)")
    t.add_argument("--candidates", nargs="+", help="candidate names of the spec (default: all)")
    t.add_argument("--search-iterations", type=int, help="randomized-search settings per candidate (default: spec)")
    t.add_argument("--seed", type=int, help="seed (default: the spec's); same seed + same features = same metrics")
    t.add_argument("--from-version", help="retrain this registered version from its recorded inputs")
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
    if a.cmd == "replay-from":
        from include.mlops.config import load_spec, load_spec_file, spec_paths
        from include.mlops.ingest import next_day
        from include.mlops.storage import Lake

        specs = [load_spec(a.dataset)] if a.dataset else [load_spec_file(p) for p in spec_paths()]
        lake = Lake()
        days = {s.name: next_day(s, lake) for s in specs if s.time.replay}
        print(json.dumps({k: v.isoformat() for k, v in days.items() if v}))
        return 0
    if a.cmd == "train":
        return _train(a)
    if a.cmd == "features":
        from include.mlops import feature_store
        from include.mlops.config import load_spec
        from include.mlops.storage import Lake

        cat = feature_store.catalog(load_spec(a.dataset), Lake())
        print(json.dumps(cat, indent=2) if a.json else feature_store.format_catalog(cat))
        return 0
    return 2


def _train(a: argparse.Namespace) -> int:
    import getpass

    from include.mlops import features, lineage, training
    from include.mlops.config import load_spec
    from include.mlops.storage import Lake

    spec, lake, retrain_of = load_spec(a.dataset), Lake(), None
    seed, iterations, candidates = a.seed, a.search_iterations, a.candidates
    if a.from_version:
        plan = lineage.retrain_plan(spec, a.from_version)
        spec, start, end, retrain_of = plan["spec"], plan["start"], plan["end"], plan["version"]
        seed, iterations, candidates = plan["seed"], plan["search_iterations"], plan["candidates"]
        reason = f"retrain of v{retrain_of} from its recorded inputs"
    else:
        p = training.plan_training(spec, lake, window_end=a.window_end, window_days=a.window_days, force=True)
        if not p["due"]:
            print(f"not trained: {p['reason']}", file=sys.stderr)
            return 1
        start, end, reason = p["start"], p["end"], "command line"
    table = features.materialize_features(spec, lake, start, end, run_id="cli")
    if retrain_of and table.version != plan["feature_version"]:
        print(
            f"v{retrain_of} was trained on feature version {plan['feature_version']}; the lake now gives "
            f"{table.version} for {start}..{end} (validated partitions changed): not an exact retrain",
            file=sys.stderr,
        )
        return 1
    result = training.train_candidates(
        spec,
        features.read_feature_table(spec, lake, table.version),
        seed=seed,
        search_iterations=iterations,
        candidates=candidates,
        tags={"window_start": start, "window_end": end},
        inputs=features.feature_inputs(spec, lake, table.version),
        trigger=lineage.trigger("cli", reason=reason, user=getpass.getuser()),
        retrain_of=retrain_of,
    )
    keep = ("model_name", "model_version", "best_candidate", "parent_run_id", "feature_version", "metrics")
    print(json.dumps({k: result.as_dict()[k] for k in keep}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
