"""Gradient-projection helpers shared by A-GEM, GEM and GPM: flat gradient vectors, the projections themselves,
and the small non-negative quadratic program that GEM solves exactly in its dual.

The projections work on flat vectors (all parameters concatenated in the learner's order); `flatten` and
`write_back` convert between a list of per-parameter gradients and such a vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import LifelongError


def flatten(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter]) -> Tensor:
    """One vector of all gradients in order; a missing gradient (None) counts as zeros."""
    return torch.cat([(p.new_zeros(p.numel()) if g is None else g.reshape(-1)) for g, p in zip(grads, params,
                                                                                                   strict=True)])


def write_back(vector: Tensor, params: Sequence[nn.Parameter]) -> None:
    """Store the flat `vector` into the parameters' `.grad`, cut back to their shapes."""
    start = 0
    for p in params:
        n = p.numel()
        piece = vector[start:start + n].view_as(p)
        if p.grad is None:
            p.grad = piece.clone()
        else:
            p.grad.copy_(piece)
        start += n


def agem_project(g: Tensor, g_ref: Tensor) -> Tensor:
    """A-GEM's rule: g unchanged when g.g_ref >= 0, else g - (g.g_ref / g_ref.g_ref) g_ref."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g
    ref_sq = torch.dot(g_ref, g_ref)
    if ref_sq <= 0:
        return g
    return g - (dot / ref_sq) * g_ref


def nonneg_qp(P: np.ndarray, c: np.ndarray, tol: float = 1e-12, max_iter: int | None = None) -> np.ndarray:
    """argmin_{w >= 0} 1/2 w^T P w + c^T w for a symmetric positive semi-definite P (t x t, float64).

    Lawson & Hanson's active-set algorithm for non-negative least squares, written on the normal equations
    (P = A^T A, c = -A^T b), so only the t x t Gram matrix is needed: each outer iteration frees the variable
    with the most negative gradient, each inner iteration solves the unconstrained problem on the free set
    (least squares, so a singular P is fine) and steps back to the boundary when a free variable would turn
    negative. It terminates after finitely many iterations with the exact optimum (up to rounding)."""
    t = len(c)
    max_iter = 3 * t + 10 if max_iter is None else max_iter
    w = np.zeros(t)
    free = np.zeros(t, dtype=bool)
    scale = max(1.0, float(np.abs(P).max(initial=0.0)), float(np.abs(c).max(initial=0.0)))
    for _ in range(max_iter):
        descent = -(P @ w + c)
        candidates = np.where(~free & (descent > tol * scale))[0]
        if len(candidates) == 0:
            break
        free[candidates[np.argmax(descent[candidates])]] = True
        for _ in range(max_iter):
            idx = np.where(free)[0]
            z = np.zeros(t)
            z[idx] = np.linalg.lstsq(P[np.ix_(idx, idx)], -c[idx], rcond=None)[0]
            if np.all(z[idx] > 0):
                w = z
                break
            bad = idx[z[idx] <= 0]
            alpha = np.min(w[bad] / (w[bad] - z[bad]))
            w = w + alpha * (z - w)
            drop = free & (w <= tol * scale)
            w[drop] = 0.0
            free &= ~drop
            if not free.any():
                break
    return w


def gem_project(g: Tensor, G: Tensor, margin: float = 0.0) -> Tensor:
    """GEM's projection of g onto {x : G x >= 0} (rows of G: the past tasks' gradients), through the dual.

    Primal: min_x 1/2 ||x - g||^2 s.t. G x >= 0. Dual: min_{v >= 0} 1/2 v^T (G G^T) v + (G g)^T v, and
    x = g + G^T v. With `margin` gamma > 0 the dual variables are bounded below by gamma instead of 0 (the
    authors' `memory_strength`); KKT still gives G x = G G^T v + G g >= 0. Returns g itself when no constraint
    is violated (as the authors' code, which solves only then). The t x t problem is solved in float64."""
    dots = G @ g
    if bool((dots >= 0).all()):
        return g
    Gd = G.double()
    P = (Gd @ Gd.T).cpu().numpy()
    q = (Gd @ g.double()).cpu().numpy()
    ones = np.ones(len(q))
    w = nonneg_qp(P, q + margin * (P @ ones))
    v = torch.from_numpy(w + margin * ones).to(Gd)
    return (g.double() + Gd.T @ v).to(g.dtype)


def per_sample_cross_entropy(logits: Tensor, y: Tensor, mask: Tensor | None) -> Tensor:
    """Cross-entropy of each row; `mask` (rows x classes, bool) keeps only the allowed classes (task heads)."""
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return F.cross_entropy(logits, y, reduction="none")


def linear_layers(model: nn.Module, method: str) -> list[nn.Linear]:
    """The model's nn.Linear layers, in order; one clear line when some parameter lies outside them."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    covered = {id(p) for m in layers for p in m.parameters(recurse=False)}
    others = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    if others:
        raise LifelongError(f"{method} supports models built only of linear layers (--model mlp); this model has "
                            f"other parameters ({others[0]}, ...)")
    return layers
