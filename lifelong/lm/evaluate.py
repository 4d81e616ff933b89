"""Evaluation for continual LM pre-training: held-out loss per domain, and retention probes after the
recognition / recall protocol of Orhan 2023 ("Recognition, recall, and retention of few-shot memories in large
language models"), with one exposure given in the middle of pre-training instead of a separate study phase.

Retention probes: n unique sequences (windows of a corpus's probe split, never trained on otherwise) are shown
once, in one update, at a chosen step; n matched controls from the same split are never shown. Afterwards:
- recognition = fraction of (probe, control) pairs where the probe's loss is lower (ties count 1/2; ~0.5
before),
- recall = greedy continuation from the first `prefix_len` tokens: fraction of the remaining tokens reproduced
  (``recall_tokens``) and fraction of probes reproduced exactly (``recall_exact``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lifelong.errors import LifelongError


def eval_windows(tokens: np.ndarray, seq_len: int, n_windows: int) -> torch.Tensor:
    """A fixed set of up to `n_windows` disjoint windows of ``seq_len + 1`` tokens, evenly spread over
    `tokens`."""
    n = seq_len + 1
    fit = tokens.shape[0] // n
    if fit < 1:
        raise LifelongError(f"held-out split has {tokens.shape[0]} tokens, fewer than one sequence ({n})")
    idx = np.linspace(0, fit - 1, num=min(n_windows, fit)).round().astype(np.int64)
    idx = np.unique(idx)
    return torch.from_numpy(np.stack([np.asarray(tokens[i * n : (i + 1) * n], dtype=np.int64) for i in idx]))


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def sequence_losses(model, seqs: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Mean next-token loss of each row of `seqs` (shape (n, L)), as a float tensor of shape (n,) on the
    CPU."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, seqs.shape[0], batch_size):
        x = seqs[i : i + batch_size].to(device)
        with _autocast(device):
            logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:], reduction="none").mean(dim=1)
        out.append(loss.cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def domain_loss(model, windows: torch.Tensor, batch_size: int = 32, rank: int = 0, world: int = 1) -> float:
    """Mean token loss over `windows`; with ``world > 1`` each rank takes every world-th window and the
    sums are
    all-reduced, so every rank returns the same number."""
    mine = windows[rank::world]
    losses = sequence_losses(model, mine, batch_size)
    total = torch.tensor([float(losses.sum()), float(losses.numel())], dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        device = next(model.parameters()).device
        total = total.to(device)
        dist.all_reduce(total)
        total = total.cpu()
    return float(total[0] / total[1])


def recognition_accuracy(probe_losses, control_losses) -> float:
    """2-AFC recognition: fraction of pairs (probe i, control i) where the probe has the lower loss (ties
    1/2)."""
    p = torch.as_tensor(probe_losses, dtype=torch.float64)
    c = torch.as_tensor(control_losses, dtype=torch.float64)
    if p.shape != c.shape or p.numel() == 0:
        raise ValueError("recognition needs as many controls as probes (at least one)")
    return float(((p < c).double() + 0.5 * (p == c).double()).mean())


def recall_scores(predicted: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(fraction of target tokens reproduced at their position, fraction of rows reproduced exactly)."""
    if predicted.shape != target.shape:
        raise ValueError("predicted and target continuations must have the same shape")
    eq = predicted == target
    return float(eq.double().mean()), float(eq.all(dim=1).double().mean())


@torch.no_grad()
def greedy_continue(model, prefix: torch.Tensor, n_new: int) -> torch.Tensor:
    """Greedy decoding of `n_new` tokens after each row of `prefix` (shape (n, P)); returns shape (n,
    n_new)."""
    device = next(model.parameters()).device
    cur = prefix.to(device)
    out = []
    for _ in range(n_new):
        with _autocast(device):
            logits = model(input_ids=cur).logits[:, -1]
        nxt = logits.float().argmax(dim=-1, keepdim=True)
        out.append(nxt)
        cur = torch.cat([cur, nxt], dim=1)
    return torch.cat(out, dim=1).cpu() if out else torch.zeros(prefix.shape[0], 0, dtype=torch.long)


@dataclass
class ProbeSet:
    """Probe sequences (shown once) and controls (never shown), both shape (n, length)."""

    probes: torch.Tensor
    controls: torch.Tensor
    prefix_len: int
    corpus: str = ""
    baseline: tuple[torch.Tensor, torch.Tensor] | None = None  # (probe, control) losses before the exposure
    last: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_tokens(
        cls,
        tokens: np.ndarray,
        n: int,
        length: int,
        seed: int = 0,
        corpus: str = "",
        prefix_frac: float = 0.5,
    ) -> ProbeSet:
        """2n disjoint windows of `length` tokens from `tokens` (a probe split), randomly assigned to
        probes and controls with `seed`."""
        fit = tokens.shape[0] // length
        if fit < 2 * n:
            raise LifelongError(
                f"corpus '{corpus}' has a probe split of {tokens.shape[0]} tokens: too few for {n} probes "
                f"and "
                f"{n} controls of {length} tokens; use fewer or shorter probes"
            )
        pick = np.random.default_rng(seed).choice(fit, size=2 * n, replace=False)
        seqs = torch.from_numpy(
            np.stack([np.asarray(tokens[i * length : (i + 1) * length], dtype=np.int64) for i in pick])
        )
        return cls(seqs[:n], seqs[n:], max(1, int(round(length * prefix_frac))), corpus)

    def evaluate(self, model) -> dict[str, float]:
        """Recognition and recall now. Once :attr:`baseline` holds the per-sequence losses measured just
        before the exposure, ``recognition_vs_baseline`` also compares loss *changes* since then (probe i vs
        control i), which removes each sequence's intrinsic difficulty from the 2-AFC."""
        pl = sequence_losses(model, self.probes)
        cl = sequence_losses(model, self.controls)
        target = self.probes[:, self.prefix_len :]
        pred = greedy_continue(model, self.probes[:, : self.prefix_len], target.shape[1])
        tok, exact = recall_scores(pred, target)
        out = {
            "recognition": recognition_accuracy(pl, cl),
            "probe_loss": float(pl.mean()),
            "control_loss": float(cl.mean()),
            "recall_tokens": tok,
            "recall_exact": exact,
        }
        if self.baseline is not None:
            bp, bc = self.baseline
            out["recognition_vs_baseline"] = recognition_accuracy(pl - bp, cl - bc)
        self.last = (pl, cl)
        return out
