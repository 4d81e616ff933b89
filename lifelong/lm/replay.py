"""Replay as a batch-mixture sampler: a fraction of every batch comes from the corpora of earlier phases.

The sampler has no state: the composition of the global batch at update `step` is a pure function of
(seed, phase, step), so every data-parallel rank computes the same global plan and reads only its own rows,
replay stays consistent across ranks, and a resumed run sees the same batches.

Replay is exact in count: over the first n updates of a phase, exactly ``floor(n * replay * batch_size)`` rows
come from earlier corpora (so ``replay * batch_size`` rows in every batch when that is an integer). The token
budget of the phase is unchanged: replayed rows replace rows of the new corpus (Ibrahim et al. 2024).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from lifelong.errors import LifelongError


def check_replay(replay: float) -> float:
    try:
        replay = float(replay)
    except (TypeError, ValueError):
        raise LifelongError(f"replay fraction {replay!r} is not a number: use e.g. 0, 0.01, 0.05, 0.25 or 0.5"
                            ) from None
    if not (0.0 <= replay < 1.0) or math.isnan(replay):
        raise LifelongError(
            f"replay fraction {replay:g} is outside [0, 1): use e.g. 0, 0.01, 0.05, 0.25 or 0.5"
        )
    return replay


def replay_rows(step: int, replay: float, batch_size: int) -> int:
    """Rows of the batch at 0-based update `step` drawn from earlier corpora (cumulative count is exact)."""
    r = replay * batch_size
    return math.floor((step + 1) * r + 1e-9) - math.floor(step * r + 1e-9)


class MixtureSampler:
    """Global batches of ``batch_size`` windows of ``seq_len + 1`` tokens from the current phase's corpora
    (weighted by their training tokens) and, for a `replay` fraction of rows, from the earlier corpora."""

    def __init__(
        self,
        current: Sequence[np.ndarray],
        past: Sequence[np.ndarray],
        replay: float,
        batch_size: int,
        seq_len: int,
        seed: int = 0,
        phase: int = 0,
    ) -> None:
        self.replay = check_replay(replay) if past else 0.0
        self.B, self.T = batch_size, seq_len
        self.seed, self.phase = seed, phase
        self.sources = list(current) + list(past)
        self.n_current = len(current)
        need = seq_len + 1
        for a in self.sources:
            if a.shape[0] < need:
                raise LifelongError(
                    f"a corpus has {a.shape[0]} training tokens, fewer than one sequence ({need})"
                )
        sizes = np.array([a.shape[0] - need + 1 for a in self.sources], dtype=np.float64)
        self._cur_p = sizes[: self.n_current] / sizes[: self.n_current].sum()
        self._past_p = sizes[self.n_current :] / sizes[self.n_current :].sum() if past else None
        self._hi = sizes.astype(np.int64)

    def plan(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, start offset) for each of the B rows of the global batch at `step`."""
        rng = np.random.default_rng([self.seed, self.phase, step])
        n_rep = replay_rows(step, self.replay, self.B) if self._past_p is not None else 0
        src = np.empty(self.B, dtype=np.int64)
        src[: self.B - n_rep] = rng.choice(self.n_current, size=self.B - n_rep, p=self._cur_p)
        if n_rep:
            src[self.B - n_rep :] = self.n_current + rng.choice(len(self._past_p), size=n_rep, p=self._past_p)
            src = src[rng.permutation(self.B)]  # spread replayed rows over the batch (and over the ranks)
        offsets = (rng.random(self.B) * self._hi[src]).astype(np.int64)
        return src, offsets

    def batch(self, step: int, rows: slice | None = None) -> torch.Tensor:
        """The rows `rows` (default: all) of the global batch at `step`, as int64 tokens of shape (rows, T
        + 1)."""
        src, off = self.plan(step)
        if rows is not None:
            src, off = src[rows], off[rows]
        n = self.T + 1
        out = np.empty((len(src), n), dtype=np.int64)
        for i, (s, o) in enumerate(zip(src.tolist(), off.tolist(), strict=True)):
            out[i] = self.sources[s][o : o + n]
        return torch.from_numpy(out)

    def is_replay(self, step: int) -> np.ndarray:
        """Boolean mask of the rows of the global batch at `step` that are replayed."""
        return self.plan(step)[0] >= self.n_current
