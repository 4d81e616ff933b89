"""`lifelong unlearn` and `lifelong analytic-demo` (wired into lifelong/cli.py by the main CLI)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lifelong.errors import LifelongError


def _int_list(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices like 3,7, got {text!r}") from None
    if any(c < 0 for c in out):
        raise argparse.ArgumentTypeError(f"class indices are non-negative, got {text!r}")
    if not out:
        raise argparse.ArgumentTypeError("no class given")
    return out


def add_unlearn_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "unlearn",
        help="exactly remove samples or whole classes from a stored analytic model (ACU) as a new version",
        description="Exact analytic unlearning (ACU): the latest model_v{N}.pt of RUN minus the given "
        "samples is written as model_v{N+1}.pt and the request is logged in RUN/requests.jsonl. "
        "Samples the model never learned are refused and nothing is changed.",
    )
    p.add_argument("run", metavar="RUN", help="run directory (or its name under $LIFELONG_RUNS, default ./runs)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--samples",
        metavar="FILE",
        help=".pt/.npz with 'features', 'labels' and optionally 'ids'; or a .txt/.json list of sample ids whose "
        "features are looked up in --features",
    )
    what.add_argument("--classes", type=_int_list, metavar="C1,C2", help="forget every learned sample of these")
    p.add_argument("--features", metavar="FILE", help="with --classes or an id list: samples file holding "
                   "(at least) the samples to forget (default RUN/train_features.pt; for a run of an analytic "
                   "strategy, recomputed from the run's data and stored backbone)")  # fmt: skip
    p.add_argument("--version", type=int, default=None, help="model version to start from (default: latest)")
    return p


def samples_to_forget(run: Path, payload: dict, features: str | None, classes: list[int] | None = None,
                      ids: list | None = None):
    """(features, labels, ids) holding the samples to forget: from --features FILE, else RUN/train_features.pt,
    else recomputed from the run's config and stored backbone (runs of the analytic strategies)."""
    from lifelong.analytic import store

    path = Path(features) if features else run / store.TRAIN_FEATURES
    if features or path.exists():
        if not path.exists():
            raise LifelongError(f"the samples to forget are needed: {path} not found")
        samples = store.load_samples(path)
        return samples if ids is None else store.select_ids(samples, ids, path)
    x, y, found = store.run_training_samples(run, payload, classes, ids)
    if classes and len(y) == 0:
        raise LifelongError(f"class{'es' if len(classes) > 1 else ''} {','.join(map(str, classes))}: no training "
                            f"samples of {run}; nothing was changed")
    if ids is not None:
        missing = sorted(set(ids) - set(found), key=str)
        if missing:
            raise LifelongError(f"{len(missing)} of the {len(set(ids))} sample ids are not training samples of "
                                f"{run} (first: {missing[0]!r})")
    return x, y, found


def run_unlearn_command(args) -> int:
    from lifelong.analytic import ANALYTIC, store

    run = store.resolve_run_dir(args.run)
    store.check_requests_log(run)
    request = {"request": "classes" if args.classes else "samples"}
    if args.classes:
        request["classes"] = list(args.classes)
    else:
        request["samples_file"] = str(args.samples)
    try:
        model, v, payload = store.load_model_version(run, args.version)
        request["from_version"] = v
        exact = [k for k, c in ANALYTIC.items() if c.supports_unlearning]
        if isinstance(model, dict):
            raise LifelongError(
                f"model version {v} of {run} is a '{model.get('kind', '?')}' model, which cannot be "
                f"unlearned exactly; analytic models: {', '.join(exact)}"
            )
        if not model.supports_unlearning:
            model.unlearn(None, None)  # raises the model's own one-line reason
        t0 = time.perf_counter()
        if args.classes:
            x, y, ids = samples_to_forget(run, payload, args.features, classes=args.classes)
            n_learned = sum(model.ledger.class_counts.get(c, 0) for c in args.classes)
            model.unlearn_classes(args.classes, x, y, ids)
            request["n_samples"] = int(n_learned)
        elif Path(args.samples).suffix in (".txt", ".json"):
            x, y, ids = samples_to_forget(run, payload, args.features, ids=store.load_id_list(args.samples))
            model.unlearn(x, y, ids)
            request["n_samples"] = int(len(y))
        else:
            x, y, ids = store.load_samples(args.samples)
            model.unlearn(x, y, ids)
            request["n_samples"] = int(len(y))
        seconds = time.perf_counter() - t0
        meta = dict(payload.get("meta", {}))
        meta.update({"parent_version": v, "unlearn": request})
        extra = {k: payload[k] for k in ("backbone",) if k in payload}  # keep the version self-contained
        new_v, path = store.save_model_version(run, model, meta, **extra)
    except LifelongError as e:
        store.append_request(run, {**request, "status": "refused", "reason": str(e)})
        raise
    store.append_request(run, {**request, "status": "done", "to_version": new_v, "seconds": round(seconds, 4),
                               "state_nbytes": int(model.state_nbytes)})  # fmt: skip
    what = f"classes {','.join(map(str, args.classes))}" if args.classes else f"{request['n_samples']} samples"
    print(f"unlearned {what} from {run}/model_v{v}.pt -> {path.name} in {seconds:.3f}s "
          f"(learned samples left: {len(model.ledger)})")  # fmt: skip
    skipped = requests_not_in(store.read_requests(run), v, new_v)
    if skipped:
        print(f"note: {path.name} is built from version {v}, so the latest model no longer includes "
              f"{'this later request' if len(skipped) == 1 else 'these later requests'}: "
              + "; ".join(f"version {r['to_version']} ({describe_request(r)})" for r in skipped)
              + ". Unlearn them again, or leave out --version to start from the latest.", file=sys.stderr)
    return 0


def requests_not_in(requests: list[dict], parent: int, new: int) -> list[dict]:
    """The done requests made after version `parent` whose versions are not ancestors of `new` (built from
    `parent`): what a new version started from an older one silently drops."""
    made_from = {r["to_version"]: r.get("from_version") for r in requests if r.get("status") == "done"}
    ancestors, v = set(), new
    while v is not None and v not in ancestors:
        ancestors.add(v)
        v = made_from.get(v)
    return [r for r in requests if r.get("status") == "done" and isinstance(r.get("to_version"), int)
            and r["to_version"] > parent and r["to_version"] not in ancestors]


def describe_request(request: dict) -> str:
    if request.get("classes"):
        return "classes " + ",".join(map(str, request["classes"]))
    return f"{request.get('n_samples', '?')} samples"


def add_analytic_demo_parser(subparsers) -> argparse.ArgumentParser:
    from lifelong.analytic.demo import METHODS, PRESETS
    from lifelong.cli import add_compare_flags, add_setting_flags

    p = subparsers.add_parser(
        "analytic-demo",
        help="preset of `compare`: NMC / ACIL / DS-AL / SLCA vs replay, naive and joint training",
        description="A preset of `lifelong compare`: the scenario, model and analytic feature settings of "
        "--dataset (fashion-mnist: split-fashion-mnist, cnn, analytic learners train the CNN on experience 1 "
        "then freeze it; fortunes: split-fortunes-minilm, MiniLM embeddings, linear model). Any run setting "
        "flag overrides the preset.",
    )
    p.add_argument("--dataset", required=True, choices=sorted(PRESETS), help="which preset")
    add_compare_flags(p, ",".join(METHODS))
    add_setting_flags(p, skip=("strategy", "seed"))
    return p


def run_analytic_demo(args) -> int:
    """`lifelong compare` with the preset's settings; one table, one stored comparison, one report."""
    from lifelong.analytic.demo import preset, strategy_hparams
    from lifelong.cli import cmd_compare

    chosen = preset(args.dataset)
    for name, value in chosen.settings.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    args.strategy_hparams = strategy_hparams(strategies, chosen)
    args.out = args.out or str(Path(args.store) / f"analytic-demo-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    return cmd_compare(args)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m lifelong.analytic.cli ...`) until the main CLI wires these in."""
    import sys

    parser = argparse.ArgumentParser(prog="lifelong")
    sub = parser.add_subparsers(dest="command", required=True)
    add_unlearn_parser(sub).set_defaults(func=run_unlearn_command)
    add_analytic_demo_parser(sub).set_defaults(func=run_analytic_demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LifelongError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
