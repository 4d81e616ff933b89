"""`lifelong unlearn` and `lifelong analytic-demo` (wired into lifelong/cli.py by the main CLI)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lifelong.errors import LifelongError


def _int_list(text: str) -> list[int]:
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices like 3,7, got {text!r}") from None
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
                   "(at least) the samples to forget (default RUN/train_features.pt)")  # fmt: skip
    p.add_argument("--version", type=int, default=None, help="model version to start from (default: latest)")
    return p


def run_unlearn_command(args) -> int:
    from lifelong.analytic import store

    run = store.resolve_run_dir(args.run)
    request = {"request": "classes" if args.classes else "samples"}
    if args.classes:
        request["classes"] = list(args.classes)
    else:
        request["samples_file"] = str(args.samples)
    try:
        model, v, payload = store.load_model_version(run, args.version)
        request["from_version"] = v
        exact = [k for k, c in store.MODEL_KINDS.items() if c.supports_unlearning]
        if isinstance(model, dict):
            raise LifelongError(
                f"model version {v} of {run} is a '{model.get('kind', '?')}' model, which cannot be "
                f"unlearned exactly; analytic models: {', '.join(exact)}"
            )
        if not model.supports_unlearning:
            model.unlearn(None, None)  # raises the model's own one-line reason
        t0 = time.perf_counter()
        if args.classes:
            feats = Path(args.features) if args.features else run / store.TRAIN_FEATURES
            if not feats.exists():
                raise LifelongError(f"class unlearning needs the class's samples: {feats} not found (pass --features)")
            x, y, ids = store.load_samples(feats)
            n_learned = sum(model.ledger.class_counts.get(c, 0) for c in args.classes)
            model.unlearn_classes(args.classes, x, y, ids)
            request["n_samples"] = int(n_learned)
        elif Path(args.samples).suffix in (".txt", ".json"):
            wanted = store.load_id_list(args.samples)
            feats = Path(args.features) if args.features else run / store.TRAIN_FEATURES
            x, y, ids = store.select_ids(store.load_samples(feats), wanted, feats)
            model.unlearn(x, y, ids)
            request["n_samples"] = int(len(y))
        else:
            x, y, ids = store.load_samples(args.samples)
            model.unlearn(x, y, ids)
            request["n_samples"] = int(len(y))
        seconds = time.perf_counter() - t0
        meta = dict(payload.get("meta", {}))
        meta.update({"parent_version": v, "unlearn": request})
        new_v, path = store.save_model_version(run, model, meta)
    except LifelongError as e:
        store.append_request(run, {**request, "status": "refused", "reason": str(e)})
        raise
    store.append_request(run, {**request, "status": "done", "to_version": new_v, "seconds": round(seconds, 4),
                               "state_nbytes": int(model.state_nbytes)})  # fmt: skip
    what = f"classes {','.join(map(str, args.classes))}" if args.classes else f"{request['n_samples']} samples"
    print(f"unlearned {what} from {run}/model_v{v}.pt -> {path.name} in {seconds:.3f}s "
          f"(learned samples left: {len(model.ledger)})")  # fmt: skip
    return 0


def add_analytic_demo_parser(subparsers) -> argparse.ArgumentParser:
    from lifelong.analytic.demo import ALL_METHODS

    p = subparsers.add_parser(
        "analytic-demo",
        help="class-incremental demo of NMC / ACIL / DS-AL vs replay and joint training on frozen features",
    )
    p.add_argument("--dataset", required=True, choices=["fortunes", "fashion-mnist"],
                   help="fortunes: topic classes of English fortunes embedded by MiniLM; fashion-mnist: CNN base phase")
    p.add_argument("--methods", default=None, help=f"comma list from {','.join(ALL_METHODS)},g-acil (default: all)")
    p.add_argument("--experiences", type=int, default=5, help="class-incremental experiences (default 5)")
    p.add_argument("--class-order", choices=["natural", "random"], default="natural",
                   help="class order: natural, or shuffled with --seed (default natural)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--buffer-size", type=int, default=2048, help="ACIL / DS-AL buffer width")
    p.add_argument("--gamma", type=float, default=1.0, help="ACIL / DS-AL ridge regulariser")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="linear-head baselines, per experience (default 10 fortunes, 3 fashion)",
    )
    p.add_argument("--lr", type=float, default=1e-2, help="Adam LR of the linear-head baselines")
    p.add_argument(
        "--batch-size", type=int, default=None, help="linear-head baselines (default 64 fortunes, 128 fashion-mnist)"
    )
    p.add_argument("--memory", type=int, default=200, help="ER replay memory (samples)")
    p.add_argument("--slca-epochs", type=int, default=None, help="default: 10 (fortunes), 2 (fashion-mnist)")
    p.add_argument("--slca-lr", type=float, default=0.1, help="SLCA head LR (backbone: x bcb_lrscale 0.01)")
    p.add_argument("--run-dir", default=None, help="save results, the ACIL model (model_v1.pt) and features here")
    p.add_argument("--cache-dir", default=None, help="feature cache (default ~/.cache/lifelong/features)")
    p.add_argument("--no-cache", action="store_true", help="recompute features instead of using the cache")
    p.add_argument("--fortunes-dir", default=None, help="fortune files (default /usr/share/games/fortunes)")
    p.add_argument("--topics", default=None, help="comma list of fortune files used as classes")
    p.add_argument("--max-per-class", type=int, default=200, help="fortunes per topic at most (default 200)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX .gz files")
    p.add_argument("--train-subset", type=int, default=0, help="use this many Fashion-MNIST training images")
    p.add_argument("--base-experiences", type=int, default=1, help="experiences used to train the CNN backbone")
    p.add_argument("--base-epochs", type=int, default=3, help="epochs of the base-phase backbone training (default 3)")
    return p


def run_analytic_demo(args) -> int:
    from lifelong.analytic.demo import run_demo

    run_demo(args)
    return 0


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
