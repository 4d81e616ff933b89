"""Progressive Neural Networks (Rusu, Rabinowitz, Desjardins, Soyer, Kirkpatrick, Kavukcuoglu, Pascanu, Hadsell;
arXiv 1606.04671, 2016), for the library's MLP; Avalanche's PNN (models/pnn.py) read for this file.

    experience k: add a column k (the MLP's widths, freshly initialised); freeze every earlier column
        h_i^(k) = relu( W_i^(k) h_(i-1)^(k) + sum_(j<k) U_i^(k:j) h_(i-1)^(j) )      (Eq. 1; h_0 = x)
        logits^(k) = W_L^(k) h_(L-1)^(k) + sum_(j<k) U_L^(k:j) h_(L-1)^(j)          (no ReLU on the output)
        train column k and its lateral weights U^(k:.) by the engine's SGD steps; earlier columns stay fixed
    predict: task-incremental streams score the classes of task t with the column of t's (last) experience;
        class-incremental streams have no task id at test time: every class is scored by the newest column.

Column 0 is the user's MLP itself (so a one-experience stream trains exactly like naive). Each column keeps a
head over every class of the stream; on task-incremental streams the engine's loss scores only the classes of
the sample's task. Earlier columns and their laterals are frozen by `requires_grad = False`: the engine's
optimizer only holds the trainable parameters, so momentum and weight decay never touch them (bit-identical).

Deviations and choices:
- one column per experience (the paper: per task); an experience revisited by a schedule trains the newest
  column;
- lateral connections are the paper's linear form of Eq. 1 (one bias-free U per layer and earlier column),
  not the non-linear "adapters" (alpha scaling + dimensionality reduction V) the paper uses for its
  convolutional columns; U is initialised like `nn.Linear` (uniform +-1/sqrt(fan_in)) from a seeded generator;
- class-incremental streams: the newest column's head has only been trained on the newest experience's
  classes, so PNN forgets there like naive (stated, not fixed: PNN needs the task id);
- MLP models only (the `mlp` model); the parameter count grows quadratically with the number of experiences.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.stream import Experience
from lifelong.errors import LifelongError
from lifelong.models.backbones import MLP
from lifelong.strategies.base import Strategy, register


def seeded_linear(fan_in: int, out: int, generator: torch.Generator, bias: bool = True) -> nn.Linear:
    """An `nn.Linear` initialised uniformly in +-1/sqrt(fan_in) from `generator` (torch's global RNG untouched)."""
    layer = nn.utils.skip_init(nn.Linear, fan_in, out, bias=bias)
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(out, fan_in, generator=generator) * 2 - 1) * bound)
        if bias:
            layer.bias.copy_((torch.rand(out, generator=generator) * 2 - 1) * bound)
    return layer


class Progressive(nn.Module):
    """Columns of Linear layers with lateral connections from every earlier column's previous layer; the
    forward pass returns the newest column's logits."""

    def __init__(self, first: MLP) -> None:
        super().__init__()
        self.columns = nn.ModuleList([nn.ModuleList([m for m in first if isinstance(m, nn.Linear)])])
        self.laterals = nn.ModuleList([nn.ModuleList()])
        self.widths = [self.columns[0][0].in_features] + [m.out_features for m in self.columns[0]]

    def grow(self, generator: torch.Generator) -> None:
        """Add a column (and its laterals from every earlier column), on the device of the first column."""
        k, device = len(self.columns), self.columns[0][0].weight.device
        w = self.widths
        self.columns.append(nn.ModuleList([seeded_linear(w[i], w[i + 1], generator) for i in range(len(w) - 1)]))
        self.laterals.append(nn.ModuleList([seeded_linear(k * w[i], w[i + 1], generator, bias=False)
                                            for i in range(1, len(w) - 1)]))
        self.columns[-1].to(device)
        self.laterals[-1].to(device)

    def freeze_all_but_newest(self) -> None:
        for k, (col, lat) in enumerate(zip(self.columns, self.laterals, strict=True)):
            for p in [*col.parameters(), *lat.parameters()]:
                p.requires_grad_(k == len(self.columns) - 1)

    def forward_all(self, x: Tensor) -> list[Tensor]:
        """Logits of every column (column k reads the hidden layers of columns 0..k-1)."""
        x = x.reshape(len(x), -1)
        hidden = [x] * len(self.columns)
        depth = len(self.columns[0])
        for i in range(depth):
            prev = hidden
            hidden = []
            for k, col in enumerate(self.columns):
                a = col[i](prev[k])
                if k > 0 and i > 0:
                    a = a + self.laterals[k][i - 1](torch.cat(prev[:k], dim=1))
                hidden.append(F.relu(a) if i < depth - 1 else a)
        return hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x)[-1]


@register
class PNN(Strategy):
    name = "pnn"
    family = "isolation"
    composable = False
    alone_because = "it grows a network column per experience, the model is its own"
    description = "progressive networks: a new frozen-after-use MLP column per experience, lateral connections"
    params = {}

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.seed = int(torch.randint(2**62, (1,), generator=ctx.generator))

    def adapt_model(self, model: nn.Module, exp: Experience) -> nn.Module:
        if not isinstance(model, Progressive):
            if not isinstance(model, MLP):
                raise LifelongError(f"pnn grows MLP columns and cannot grow a {type(model).__name__}: use --model mlp")
            model = Progressive(model)
        while len(model.columns) < exp.index + 1:
            model.grow(torch.Generator().manual_seed(self.seed + len(model.columns)))
        model.freeze_all_but_newest()
        return model

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        stream = self.ctx.stream
        if not stream.task_aware or not isinstance(model, Progressive):
            return model(x)
        outs = model.forward_all(x)
        scores = outs[-1].clone()
        column = {stream[k].task_id: k for k in range(len(outs))}
        for task, k in column.items():
            if k == len(outs) - 1:
                continue
            cols = torch.tensor(sorted({c for e in stream if e.task_id == task for c in e.classes}),
                                device=scores.device)
            scores[:, cols] = outs[k][:, cols]
        return scores
