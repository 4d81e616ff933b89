"""Shared pieces of the replay zoo (MIR, GSS, X-DER, GDumb): private seeded generators, per-sample losses and
gradients, and the virtual SGD step of maximally interfered retrieval.

Everything here draws randomness only from generators the caller owns and checkpoints, never from torch's global
RNG (which a resume does not restore).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lifelong.errors import LifelongError

LossFn = Callable[[Tensor, Tensor], Tensor]


def child_generator(parent: torch.Generator, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by one draw from `parent` (the engine's checkpointed RNG); checkpoint it with
    `get_state()` / `set_state()`."""
    seed = int(torch.randint(2**62, (1,), generator=parent))
    return torch.Generator(device=device).manual_seed(seed)


def first_occurrences(idx: Tensor) -> Tensor:
    """Mask of the entries of `idx` that are the first occurrence of their value (duplicates dropped)."""
    n = len(idx)
    order = torch.argsort(idx, stable=True)
    s = idx[order]
    first_sorted = torch.ones(n, dtype=torch.bool, device=idx.device)
    first_sorted[1:] = s[1:] != s[:-1]
    mask = torch.empty_like(first_sorted)
    mask[order] = first_sorted
    return mask


def named_state(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The model's trainable parameters (detached) and its other tensors (frozen parameters and buffers, cloned
    so that a functional forward in train mode leaves the model's running statistics untouched)."""
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    rest = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    rest.update({k: b.clone() for k, b in model.named_buffers()})
    return params, rest


def per_sample_losses(model: nn.Module, params: dict[str, Tensor], rest: dict[str, Tensor], x: Tensor, y: Tensor,
                      loss_fn: LossFn) -> Tensor:
    """loss_fn(f(x_i), y_i) for every row, with the model's weights replaced by `params` (one batched forward)."""
    return rowwise(loss_fn, functional_call(model, {**params, **rest}, (x,)), y)


def rowwise(loss_fn: LossFn, logits: Tensor, y: Tensor) -> Tensor:
    """Per-row values of a mean-reduced loss such as `ctx.cross_entropy` (vmapped: each row a batch of one)."""
    return vmap(lambda z, t: loss_fn(z.unsqueeze(0), t.unsqueeze(0)))(logits, y)


def virtual_step(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn, lr: float
                 ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """MIR's virtual update: theta_v = theta - lr * grad_theta loss_fn(f_theta(x), y), without touching the model
    (its `.grad` and running statistics stay as they are). Returns (theta, theta_v, other tensors)."""
    params, rest = named_state(model)
    names = list(params)

    g = grad(functional_loss(model, loss_fn))(params, rest, x, y)
    virtual = {k: params[k] - lr * g[k] for k in names}
    return params, virtual, rest


def per_sample_gradients(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
    """Each row's gradient of loss_fn(f(x_i), y_i) w.r.t. the trainable parameters, flattened: (rows, P).
    Computed in one vmapped pass, each row as a batch of one in the model's current mode (train mode: batch
    statistics of the one sample, its own dropout mask); the model's running statistics are left untouched."""
    params, rest = named_state(model)
    loss_of = functional_loss(model, loss_fn)

    def one(p: dict[str, Tensor], r: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return loss_of(p, r, xi.unsqueeze(0), yi.unsqueeze(0))

    own = {k: v.expand(len(x), *v.shape).clone() for k, v in rest.items()}  # each row its own statistics
    try:  # dropout: each row its own mask, as one forward per sample would draw
        g = vmap(grad(one), in_dims=(None, 0, 0, 0), randomness="different")(params, own, x, y)
    except ValueError as err:
        if "more than 1 value per channel" not in str(err):
            raise
        raise LifelongError("per-sample gradients forward one sample at a time in train mode, which a "
                            "BatchNorm over features (BatchNorm1d on (N, C) inputs) refuses: use a model without "
                            "it, or normalisation that works on one sample (LayerNorm, GroupNorm)") from None
    return torch.cat([v.reshape(len(x), -1) for v in g.values()], 1)


def max_cosine(a: Tensor, b: Tensor) -> Tensor:
    """For each row of `a`, the largest cosine similarity to a row of `b` (rows: flattened gradients)."""
    return (F.normalize(a, dim=1) @ F.normalize(b, dim=1).T).max(1).values


def batch_gradient(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
    """The gradient of loss_fn(f(x), y) over the whole batch w.r.t. the trainable parameters, flattened: (P,).
    One forward and backward; the model's `.grad` and running statistics are left untouched."""
    params, rest = named_state(model)
    return torch.cat([v.reshape(-1) for v in grad(functional_loss(model, loss_fn))(params, rest, x, y).values()])


def functional_loss(model: nn.Module, loss_fn: LossFn) -> Callable[..., Tensor]:
    """loss(params, rest, x, y) = loss_fn(f(x), y) with the model's tensors replaced by `params` and `rest`, for
    torch.func transforms. `rest` is an argument, not a captured tensor, so a layer that updates its buffers in
    place in train mode (BatchNorm's running statistics) may do so under `grad` and `vmap` (into the clones
    `named_state` made), which the transforms refuse for captured tensors."""
    def loss(p: dict[str, Tensor], rest: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(functional_call(model, {**p, **rest}, (x,)), y)

    return loss
