"""A bare PyTorch loop doing exactly the training `lifelong run` does on Split-FashionMNIST (naive or ER):
the baseline that the benchmark compares the library against. Tensors in memory, index slices, SGD."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lifelong.data.datasets import ArrayDataset


def normalised(data: ArrayDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Float inputs of the whole dataset, computed once outside the timed runs (the baseline's best case)."""
    return (data.train_x.float() / 255 - 0.2860) / 0.3530, (data.test_x.float() / 255 - 0.2860) / 0.3530


def bare_run(data: ArrayDataset, x_all: torch.Tensor, test_x: torch.Tensor, replay: bool, seed: int = 0,
             buffer_size: int = 500, batch: int = 32) -> float:
    """Train 5 experiences x 2 classes, 1 epoch each; evaluate on all test data before training and after each
    experience (the same evaluations lifelong makes for its metrics); return the final accuracy."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    mem_x = torch.zeros(buffer_size, 784)
    mem_y = torch.zeros(buffer_size, dtype=torch.long)
    seen = 0
    with torch.no_grad():  # accuracy of the untrained model, needed for forward transfer (lifelong does this too)
        (model(test_x).argmax(1) == data.test_y).float().mean().item()
    for task in range(5):
        idx = torch.isin(data.train_y, torch.tensor([2 * task, 2 * task + 1])).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        for s in range(0, len(idx), batch):
            b = idx[s:s + batch]
            x, y = x_all[b], data.train_y[b]
            if replay and seen > 0:
                pick = torch.randperm(min(seen, buffer_size), generator=g)[:batch]
                x_in, y_in = torch.cat([x, mem_x[pick]]), torch.cat([y, mem_y[pick]])
            else:
                x_in, y_in = x, y
            loss = F.cross_entropy(model(x_in), y_in)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if replay:
                for i in range(len(b)):  # reservoir sampling
                    j = seen if seen < buffer_size else int(torch.randint(seen + 1, (1,), generator=g))
                    if j < buffer_size:
                        mem_x[j], mem_y[j] = x[i], y[i]
                    seen += 1
        with torch.no_grad():
            acc = (model(test_x).argmax(1) == data.test_y).float().mean().item()
    return acc
