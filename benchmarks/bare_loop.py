"""A bare PyTorch loop doing the training `lifelong run` does on Split-FashionMNIST: the baseline the benchmarks
compare the library against. Tensors in memory, index slices, torch.optim.SGD with its defaults (on CPU that is
the single-tensor step), written plainly as a careful user would for each algorithm:

    naive   fine-tuning
    er      experience replay: reservoir memory of 500, 32 replayed samples per step
    derpp   DER++: memory of (x, y, logits), alpha * MSE on one draw + beta * CE on another (0.1, 0.5)
    ewc     EWC: exact empirical Fisher diagonal (per-sample gradients with torch.func) on 1000 samples after
            each experience, penalty lambda/2 sum_t F_t (theta - theta*_t)^2 (lambda 1000)
    lwf     LwF: KL to the previous model's softened outputs on the old classes (alpha 1, T 2)

    python benchmarks/bare_loop.py --strategy er   # one whole process (imports, data, training), prints accuracy
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.datasets import ArrayDataset

STRATEGIES = ("naive", "er", "derpp", "ewc", "lwf")


def normalised(data: ArrayDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Float inputs of the whole dataset, computed once outside the timed runs (the baseline's best case)."""
    return (data.train_x.float() / 255 - 0.2860) / 0.3530, (data.test_x.float() / 255 - 0.2860) / 0.3530


def fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 256) -> dict[str, torch.Tensor]:
    """Mean over samples of squared per-sample gradients of the NLL (torch.func's per-sample-gradient recipe)."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def nll(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    per_sample = vmap(grad(nll), in_dims=(None, 0, 0))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for s in range(0, len(x), chunk):
        for k, g in per_sample(params, x[s:s + chunk], y[s:s + chunk]).items():
            total[k] += g.pow(2).sum(0)
    return {k: v / len(x) for k, v in total.items()}


def bare_run(data: ArrayDataset, x_all: torch.Tensor, test_x: torch.Tensor, replay: bool = False, seed: int = 0,
             buffer_size: int = 500, batch: int = 32, strategy: str | None = None, ewc_lambda: float = 1000.0,
             fisher_samples: int = 1000, alpha: float | None = None, beta: float = 0.5,
             temperature: float = 2.0, fused: bool = False) -> float:
    """Train 5 experiences x 2 classes, 1 epoch each; evaluate on all test data before training and after each
    experience (the same evaluations lifelong makes for its metrics); return the final accuracy. `fused`: the
    loop a user who knows torch's fused SGD step writes (lifelong's default step), instead of SGD's default.
    Runs on the device of `x_all` (labels and model moved there, indices drawn on the CPU and moved)."""
    strategy = strategy or ("er" if replay else "naive")
    dev = x_all.device
    train_y, test_y = data.train_y.to(dev), data.test_y.to(dev)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **({"fused": True} if fused else {}))
    g = torch.Generator().manual_seed(seed)
    memory = strategy in ("er", "derpp")
    mem_x = torch.zeros(buffer_size, 784, device=dev)
    mem_y = torch.zeros(buffer_size, dtype=torch.long, device=dev)
    mem_z = torch.zeros(buffer_size, 10, device=dev)
    seen = 0
    fishers, anchors = [], []  # EWC
    teacher, old_classes = None, []  # LwF
    with torch.no_grad():  # accuracy of the untrained model, needed for forward transfer (lifelong does this too)
        (model(test_x).argmax(1) == test_y).float().mean().item()
    for task in range(5):
        idx = torch.isin(data.train_y, torch.tensor([2 * task, 2 * task + 1])).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].to(dev)
        for s in range(0, len(idx), batch):
            b = idx[s:s + batch]
            x, y = x_all[b], train_y[b]
            if strategy == "er" and seen > 0:
                pick = torch.randperm(min(seen, buffer_size), generator=g)[:batch].to(dev)
                logits = model(torch.cat([x, mem_x[pick]]))
                loss = F.cross_entropy(logits, torch.cat([y, mem_y[pick]]))
            elif strategy == "derpp" and seen > 0:
                p1 = torch.randperm(min(seen, buffer_size), generator=g)[:batch].to(dev)
                p2 = torch.randperm(min(seen, buffer_size), generator=g)[:batch].to(dev)
                out = model(torch.cat([x, mem_x[p1], mem_x[p2]]))
                logits, z1, z2 = out[:len(b)], out[len(b):len(b) + len(p1)], out[len(b) + len(p1):]
                loss = (F.cross_entropy(logits, y) + (0.1 if alpha is None else alpha) * F.mse_loss(z1, mem_z[p1])
                        + beta * F.cross_entropy(z2, mem_y[p2]))
            else:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                if strategy == "ewc":
                    for fi, anchor in zip(fishers, anchors, strict=True):
                        loss = loss + ewc_lambda / 2 * sum((f * (p - a).pow(2)).sum() for f, p, a in
                                                           zip(fi.values(), model.parameters(), anchor, strict=True))
                if strategy == "lwf" and teacher is not None:
                    with torch.no_grad():
                        target = teacher(x)[:, old_classes]
                    loss = loss + (1.0 if alpha is None else alpha) * F.kl_div(
                        F.log_softmax(logits[:, old_classes] / temperature, 1),
                        F.softmax(target / temperature, 1), reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
            if memory:
                z = logits[:len(b)].detach()
                for i in range(len(b)):  # reservoir sampling
                    j = seen if seen < buffer_size else int(torch.randint(seen + 1, (1,), generator=g))
                    if j < buffer_size:
                        mem_x[j], mem_y[j], mem_z[j] = x[i], y[i], z[i]
                    seen += 1
        if strategy == "ewc":
            pick = idx[torch.randperm(len(idx), generator=g)[:fisher_samples].to(dev)]
            model.eval()
            fishers.append(fisher(model, x_all[pick], train_y[pick]))
            model.train()
            anchors.append([p.detach().clone() for p in model.parameters()])
        if strategy == "lwf":
            teacher = copy.deepcopy(model).eval()
            old_classes = list(range(2 * task + 2))
        with torch.no_grad():
            acc = (model(test_x).argmax(1) == test_y).float().mean().item()
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", choices=STRATEGIES, default="naive")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from lifelong.data.datasets import load_dataset

    data = load_dataset("fashion-mnist")
    x_all, test_x = (t.to(args.device) for t in normalised(data))
    print(f"final accuracy {bare_run(data, x_all, test_x, strategy=args.strategy, seed=args.seed):.4f}")


if __name__ == "__main__":
    main()
