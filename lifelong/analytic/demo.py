"""Class-incremental demos of the analytic learners against backprop baselines on the same frozen features.

* fortunes: English fortune files as topic classes, MiniLM sentence embeddings (offline), 5 experiences.
* fashion-mnist: Split-FashionMNIST (5 x 2 classes); a small CNN is trained with backprop on the first
  experience (base phase), frozen, and every method then works on its features.
Methods: nmc, acil, g-acil, ds-al (closed form), er (linear head + replay), finetune (linear head, no replay),
slca (slow learner + classifier alignment), joint (linear head trained on all data at once: the reference).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lifelong.analytic.acil import ACIL, GACIL
from lifelong.analytic.base import human_bytes
from lifelong.analytic.dsal import DSAL
from lifelong.analytic.features import FeatureCache, extract_features, train_base_phase
from lifelong.analytic.nmc import NMC
from lifelong.analytic.slca import SLCA
from lifelong.errors import LifelongError
from lifelong.tracking.files import write_json_atomic

ALL_METHODS = ("joint", "nmc", "acil", "ds-al", "er", "finetune", "slca")


# ---------------------------------------------------------------------------- data
@dataclass
class FeatureScenario:
    name: str
    train_x: torch.Tensor  # features (N x d) float32
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    experiences: list[list[int]]  # classes of each experience
    class_names: list[str]
    raw_train: torch.Tensor | None = None  # inputs for methods that fine-tune the backbone (slca)
    raw_test: torch.Tensor | None = None
    backbone: nn.Module | None = None
    notes: list[str] = field(default_factory=list)


def load_fashion_mnist(root: str | Path | None = None):
    """(train inputs N x 1 x 28 x 28 float32 normalised, train labels, test inputs, test labels)."""
    from lifelong.data.datasets import load_dataset

    ds = load_dataset("fashion-mnist", root)
    return (ds.prepare(ds.train_x).reshape(-1, 1, 28, 28), ds.train_y,
            ds.prepare(ds.test_x).reshape(-1, 1, 28, 28), ds.test_y)  # fmt: skip


def small_cnn(feature_dim: int = 256) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, feature_dim), nn.ReLU(),
    )  # fmt: skip


def split_classes(classes: list[int], n_exp: int) -> list[list[int]]:
    if not 1 <= n_exp <= len(classes):
        raise LifelongError(f"--experiences must be in [1, {len(classes)}], got {n_exp}")
    k, r = divmod(len(classes), n_exp)
    out, s = [], 0
    for i in range(n_exp):
        e = k + (1 if i < r else 0)
        out.append(classes[s : s + e])
        s += e
    return out


def _class_order(n: int, order: str, seed: int) -> list[int]:
    if order == "natural":
        return list(range(n))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def fortunes_scenario(args, log: Callable[[str], None]) -> FeatureScenario:
    from lifelong.analytic.text import FORTUNES_DIR, embed_texts, load_fortunes, stratified_split

    topics = args.topics.split(",") if args.topics else None
    texts, labels, names = load_fortunes(topics, args.fortunes_dir or FORTUNES_DIR,
                                         max_per_class=args.max_per_class, seed=args.seed)  # fmt: skip
    cache = FeatureCache(args.cache_dir) if not args.no_cache else None
    t0 = time.perf_counter()
    emb = embed_texts(texts, cache=cache)
    log(f"embedded {len(texts)} fortunes ({len(names)} topics) with MiniLM in {time.perf_counter() - t0:.1f}s"
        + (" (cache hit)" if cache is not None and cache.hits else ""))  # fmt: skip
    tr, te = stratified_split(labels, 0.25, args.seed)
    exps = split_classes(_class_order(len(names), args.class_order, args.seed), args.experiences)
    return FeatureScenario("fortunes", emb[tr], labels[tr], emb[te], labels[te], exps, names,
                           raw_train=emb[tr], raw_test=emb[te], backbone=nn.Identity())  # fmt: skip


def fashion_scenario(args, log: Callable[[str], None]) -> FeatureScenario:
    xtr, ytr, xte, yte = load_fashion_mnist(args.data_dir)
    if args.train_subset:
        idx = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(args.seed))[: args.train_subset]
        xtr, ytr = xtr[idx], ytr[idx]
    names = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
    exps = split_classes(_class_order(10, args.class_order, args.seed), args.experiences)
    base_classes = [c for e in exps[: args.base_experiences] for c in e]
    base = torch.isin(ytr, torch.tensor(base_classes))
    torch.manual_seed(args.seed)
    backbone = small_cnn(256)
    cache = FeatureCache(args.cache_dir) if not args.no_cache else None
    t0 = time.perf_counter()
    train_base_phase(backbone, 256, xtr[base], ytr[base], epochs=args.base_epochs, seed=args.seed, log=log,
                     cache=cache)  # fmt: skip
    log(f"base phase: CNN trained on classes {base_classes} ({int(base.sum())} images) in "
        f"{time.perf_counter() - t0:.1f}s, then frozen")  # fmt: skip
    ftr = extract_features(backbone, xtr, cache=cache)
    fte = extract_features(backbone, xte, cache=cache)
    return FeatureScenario("fashion-mnist", ftr, ytr, fte, yte, exps, names, raw_train=xtr,
                           raw_test=xte, backbone=backbone,
                           notes=[f"base phase on experience(s) 1..{args.base_experiences}"])  # fmt: skip


# ---------------------------------------------------------------------------- backprop baselines
class LinearHead:
    """Linear head on frozen features trained with Adam + CE over the classes seen so far; optional replay."""

    def __init__(self, dim: int, num_classes: int, *, memory: int, epochs: int, lr: float, batch: int, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.head = nn.Linear(dim, num_classes)
        self.opt = torch.optim.Adam(self.head.parameters(), lr=lr)
        self.memory, self.epochs, self.batch = memory, epochs, batch
        self.seen = torch.zeros(num_classes, dtype=torch.bool)
        self.mem_x = torch.zeros(0, dim)
        self.mem_y = torch.zeros(0, dtype=torch.int64)
        self.n_stream = 0
        self.filled = 0

    def fit_increment(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.seen[torch.unique(y)] = True
        mask = ~self.seen
        n = len(y)
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=self.g)
            for s in range(0, n, self.batch):
                idx = order[s : s + self.batch]
                xb, yb = x[idx], y[idx]
                if self.memory > 0 and self.filled:
                    r = torch.randint(self.filled, (len(idx),), generator=self.g)
                    xb, yb = torch.cat([xb, self.mem_x[r]]), torch.cat([yb, self.mem_y[r]])
                z = self.head(xb).masked_fill(mask, float("-inf"))
                loss = nn.functional.cross_entropy(z, yb)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
        self._reservoir(x, y)

    def _reservoir(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Reservoir sampling over the stream of training samples (uniform over everything seen)."""
        if self.memory <= 0:
            return
        if self.mem_x.shape[0] == 0:
            self.mem_x = x.new_zeros(self.memory, x.shape[1])
            self.mem_y = y.new_zeros(self.memory)
            self.filled = 0
        for i in range(len(y)):
            self.n_stream += 1
            if self.filled < self.memory:
                j = self.filled
                self.filled += 1
            else:
                j = int(torch.randint(self.n_stream, (1,), generator=self.g))
                if j >= self.memory:
                    continue
            self.mem_x[j], self.mem_y[j] = x[i], y[i]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x).masked_fill(~self.seen, float("-inf")).argmax(1)


# ---------------------------------------------------------------------------- protocol
def _per_experience_acc(pred: torch.Tensor, y: torch.Tensor, exps: list[list[int]]) -> list[float]:
    out = []
    for e in exps:
        m = torch.isin(y, torch.tensor(e))
        out.append(float((pred[m] == y[m]).float().mean()) if m.any() else float("nan"))
    return out


def summarize(matrix: list[list[float]]) -> tuple[float, float]:
    """(final average accuracy over experiences, average forgetting; 0 for a single experience)."""
    from lifelong.evaluation.metrics import average_forgetting, final_accuracy

    return final_accuracy(matrix), average_forgetting(matrix) or 0.0


def make_learner(method: str, sc: FeatureScenario, args):
    d = sc.train_x.shape[1]
    C = len(sc.class_names)
    if method == "nmc":
        return NMC(d)
    if method in ("acil", "g-acil"):
        cls = ACIL if method == "acil" else GACIL
        return cls(d, buffer_size=args.buffer_size, gamma=args.gamma, seed=args.seed)
    if method == "ds-al":
        return DSAL(d, buffer_size=args.buffer_size, gamma=args.gamma, gamma_comp=args.gamma, seed=args.seed)
    if method in ("er", "finetune", "joint"):
        mem = args.memory if method == "er" else 0
        small = sc.name == "fortunes"
        epochs = args.epochs if args.epochs is not None else (10 if small else 3)
        batch = args.batch_size if args.batch_size is not None else (64 if small else 128)
        return LinearHead(d, C, memory=mem, epochs=epochs, lr=args.lr, batch=batch, seed=args.seed)
    if method == "slca":
        epochs = args.slca_epochs if args.slca_epochs is not None else (10 if sc.name == "fortunes" else 2)
        return SLCA(copy.deepcopy(sc.backbone), d, epochs=epochs, lr=args.slca_lr, seed=args.seed)
    raise LifelongError(f"unknown demo method '{method}'; valid: {', '.join(ALL_METHODS)}")


def run_method(method: str, sc: FeatureScenario, args) -> dict:
    learner = make_learner(method, sc, args)
    raw = method == "slca"
    Xtr, Xte = (sc.raw_train, sc.raw_test) if raw else (sc.train_x, sc.test_x)
    t0 = time.perf_counter()
    if method == "joint":
        learner.fit_increment(Xtr, sc.train_y)
        acc = _per_experience_acc(learner.predict(Xte), sc.test_y, sc.experiences)
        return {"method": method, "matrix": [acc], "final_acc": sum(acc) / len(acc), "forgetting": None,
                "seconds": time.perf_counter() - t0, "learner": learner}  # fmt: skip
    matrix = []
    for e in sc.experiences:
        m = torch.isin(sc.train_y, torch.tensor(e))
        if raw:
            learner.fit_experience(Xtr[m], sc.train_y[m])
        elif hasattr(learner, "ledger"):
            learner.fit_increment(Xtr[m], sc.train_y[m], sample_ids=m.nonzero().flatten())
        else:
            learner.fit_increment(Xtr[m], sc.train_y[m])
        matrix.append(_per_experience_acc(learner.predict(Xte), sc.test_y, sc.experiences))
    final, forg = summarize(matrix)
    return {"method": method, "matrix": matrix, "final_acc": final, "forgetting": forg,
            "seconds": time.perf_counter() - t0, "learner": learner}  # fmt: skip


def format_table(rows: list[dict]) -> str:
    lines = [f"{'method':<10} {'final avg acc':>13} {'forgetting':>10} {'time (s)':>9}"]
    for r in rows:
        f = "-" if r["forgetting"] is None else f"{100 * r['forgetting']:.1f}"
        lines.append(f"{r['method']:<10} {100 * r['final_acc']:>12.1f}% {f:>10} {r['seconds']:>9.2f}")
    return "\n".join(lines)


def run_demo(args, log: Callable[[str], None] = print) -> list[dict]:
    sc = fortunes_scenario(args, log) if args.dataset == "fortunes" else fashion_scenario(args, log)
    methods = args.methods.split(",") if args.methods else list(ALL_METHODS)
    for m in methods:
        if m not in ALL_METHODS + ("g-acil",):
            raise LifelongError(f"unknown demo method '{m}'; valid: {', '.join(ALL_METHODS + ('g-acil',))}")
    log(f"{sc.name}: {len(sc.train_y)} train / {len(sc.test_y)} test samples, "
        f"feature dim {sc.train_x.shape[1]}, "
        f"experiences {sc.experiences}")  # fmt: skip
    rows = []
    for m in methods:
        torch.manual_seed(args.seed)
        rows.append(run_method(m, sc, args))
        r = rows[-1]
        mem = getattr(r["learner"], "state_nbytes", None)
        state = f", state {human_bytes(mem)}" if mem else ""
        log(f"  {m}: final avg acc {100 * r['final_acc']:.1f}%  ({r['seconds']:.1f}s{state})")
    log(format_table(rows))
    if args.run_dir:
        _save_run(args, sc, rows, log)
    return rows


def _save_run(args, sc: FeatureScenario, rows: list[dict], log: Callable[[str], None]) -> None:
    from lifelong.analytic.store import TRAIN_FEATURES, save_model_version, save_samples

    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    out = [{k: v for k, v in r.items() if k != "learner"} for r in rows]
    write_json_atomic({"dataset": sc.name, "experiences": sc.experiences, "class_names": sc.class_names,
                       "rows": out}, run / "demo_results.json", indent=1)
    analytic = [r for r in rows if r["method"] in ("acil", "g-acil")]
    if analytic:
        from lifelong.evaluation.metrics import summarize as matrix_summary
        from lifelong.tracking.store import DB_NAME, RunStore

        r = analytic[0]
        if not (run / DB_NAME).exists():  # make the directory a run of the run store (`lifelong runs`)
            rs = RunStore.create(run, {"config": {"strategy": r["method"], "seed": args.seed,
                                                  "scenario": f"analytic-demo/{sc.name}"}})  # fmt: skip
            try:
                for i, row in enumerate(r["matrix"]):
                    rs.write_accuracy_row(i, row)
                rs.set_meta(status="finished", result=matrix_summary(r["matrix"]), finished=time.time())
            finally:
                rs.close()
        learner = r["learner"]
        v, path = save_model_version(run, learner, {"dataset": sc.name, "source": "analytic-demo"})
        save_samples(run / TRAIN_FEATURES, sc.train_x, sc.train_y, torch.arange(len(sc.train_y)))
        log(f"saved {analytic[0]['method']} model version {v} to {path} and training features to "
            f"{run / TRAIN_FEATURES} (for `lifelong unlearn {run} --classes ...`)")  # fmt: skip
