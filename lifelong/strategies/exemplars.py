"""Exemplar memories of class-incremental methods (iCaRL, BiC, LUCIR, SS-IL): herding, class means, and a
memory of fixed total size split evenly over the classes seen so far.

Features are the model's penultimate features (the input of its last Linear layer,
`lifelong.analytic.features.penultimate`), computed in eval mode without gradients, L2-normalised as in
iCaRL (Rebuffi et al. 2017, Sec. 2.1: "all feature vectors are L2-normalized").

Herding (iCaRL Alg. 4): with mu the class mean, the k-th exemplar is
    p_k = argmin_x || mu - (phi(x) + sum_{j<k} phi(p_j)) / k ||
over the samples not chosen yet (as PyCIL and Mammoth do; the paper's box does not say whether a sample may
be picked twice). The chosen list is a priority order: reducing a class to m exemplars keeps its first m
(iCaRL Alg. 5).
"""

from __future__ import annotations

import copy
import random
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.analytic.features import FEATURE_CHUNK, penultimate
from lifelong.data.stream import Experience
from lifelong.errors import LifelongError
from lifelong.strategies.base import NEW, Batch, Outputs, Strategy
from lifelong.strategies.replay import BUFFER_PARAMS

SELECTIONS = ("herding", "random")
EXEMPLAR_PARAMS = {
    "buffer_size": BUFFER_PARAMS["buffer_size"],
    "replay_batch_size": BUFFER_PARAMS["replay_batch_size"],
}


def herding(features: Tensor, m: int) -> Tensor:
    """Indices (in priority order) of `min(m, n)` rows of `features` (n, d) chosen by iCaRL's herding: each
    step adds the row that brings the mean of the chosen rows closest to the mean of all rows. The features are
    used as given (normalise them first for iCaRL's rule). One vectorised distance per step, no sync."""
    n = len(features)
    m = min(m, n)
    mu = features.mean(0)
    running = torch.zeros_like(mu)
    taken = torch.zeros(n, dtype=torch.bool, device=features.device)
    chosen = torch.empty(m, dtype=torch.long, device=features.device)
    for k in range(1, m + 1):
        cost = (k * mu - running - features).pow(2).sum(1)  # k^2 times the distance of the running mean
        i = cost.masked_fill(taken, float("inf")).argmin()
        chosen[k - 1] = i
        taken[i] = True
        running = running + features[i]
    return chosen


def class_means(features: Tensor, labels: Tensor, classes: list[int]) -> Tensor:
    """(len(classes), d) means of the L2-normalised `features` of each class, normalised again (iCaRL Alg. 1)."""
    f = F.normalize(features, dim=1)
    onehot = (labels.unsqueeze(1) == torch.as_tensor(classes, device=labels.device)).to(f.dtype)
    counts = onehot.sum(0)
    if bool((counts == 0).any()):
        raise LifelongError("class_means: a requested class has no sample")
    return F.normalize((onehot.T @ f) / counts.unsqueeze(1), dim=1)


@torch.no_grad()
def features_of(model: nn.Module, prepare: Any, raw: Tensor, chunk: int = FEATURE_CHUNK) -> Tensor:
    """Penultimate features of stored inputs `raw` (prepared chunk by chunk), in eval mode (mode restored)."""
    was = model.training
    model.eval()
    try:
        parts = [penultimate(model, prepare(raw[s:s + chunk])).float() for s in range(0, len(raw), chunk)]
    finally:
        model.train(was)
    return torch.cat(parts) if parts else torch.zeros(0, 0)


class ExemplarMemory:
    """At most `capacity` stored samples, split evenly over the classes held: `capacity // classes` each.

    Rows are kept with their rank in their class's priority list (herding order, or a random order)."""

    def __init__(self, capacity: int, seed: int, selection: str = "herding") -> None:
        if capacity < 1:
            raise LifelongError(f"buffer_size={capacity} is out of range: allowed [1, inf]")
        if selection not in SELECTIONS:
            raise LifelongError(f"exemplar selection {selection!r} is unknown; valid: {', '.join(SELECTIONS)}")
        self.capacity, self.selection = capacity, selection
        self.rng = random.Random(seed)
        self.raw: Tensor | None = None
        self.y = torch.zeros(0, dtype=torch.long)
        self.rank = torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def classes(self) -> list[int]:
        return sorted(set(self.y.tolist()))

    def per_class(self, num_classes: int) -> int:
        return self.capacity // max(1, num_classes)

    def keep(self, rows: Tensor) -> None:
        assert self.raw is not None
        self.raw, self.y, self.rank = self.raw[rows], self.y[rows], self.rank[rows]

    def reduce(self, m: int) -> None:
        """Keep the first `m` exemplars of every class (iCaRL's ReduceExemplarSet)."""
        if self.raw is not None:
            self.keep(torch.nonzero(self.rank < m).flatten())

    def add(self, raw: Tensor, label: int, order: Tensor) -> None:
        """Store the rows `raw[order]` of class `label` in that priority order."""
        rows, n = raw[order], len(order)
        y = torch.full((n,), label, dtype=torch.long, device=raw.device)
        rank = torch.arange(n, device=raw.device)
        if self.raw is None:
            self.raw, self.y, self.rank = rows, y, rank
        else:
            self.raw = torch.cat([self.raw, rows])
            self.y, self.rank = torch.cat([self.y.to(raw.device), y]), torch.cat([self.rank.to(raw.device), rank])

    def update(self, model: nn.Module, prepare: Any, exp: Experience) -> None:
        """Make room for the experience's new classes and select their exemplars (iCaRL Alg. 2, lines 4-9)."""
        held = set(self.classes)
        labels = exp.labels(exp.train_idx)
        new = [c for c in sorted(exp.classes) if c not in held and bool((labels == c).any())]
        if not new:
            return
        m = self.per_class(len(held) + len(new))
        self.reduce(m)
        for c in new:
            idx = exp.train_idx[labels == c]
            raw = exp.raw(idx)
            if self.selection == "herding":
                order = herding(F.normalize(features_of(model, prepare, raw), dim=1), m)
            else:
                order = torch.tensor(self.rng.sample(range(len(idx)), min(m, len(idx))), dtype=torch.long)
            self.add(raw, c, order.to(raw.device))

    def draw(self, k: int, rows: Tensor | None = None) -> Tensor:
        """Indices of k rows drawn uniformly without replacement (among `rows` if given)."""
        pool = len(self) if rows is None else len(rows)
        pick = torch.tensor(self.rng.sample(range(pool), min(k, pool)), dtype=torch.long)
        return pick if rows is None else rows[pick.to(rows.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"raw": self.raw, "y": self.y, "rank": self.rank, "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.raw, self.y, self.rank = state["raw"], state["y"], state["rank"]
        self.rng.setstate(state["rng"])


def frozen_copy(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class ExemplarStrategy(Strategy):
    """Shared bookkeeping of the class-incremental exemplar methods: the memory (updated at the end of each
    experience), the classes of every past experience, the model frozen at the last experience's end (the
    teacher), and the replayed segment `<name>.replay` (not scored: the method's own `loss` reads it).

    These methods replace the loss, so a composed part's scored rows would be silently dropped: they are not
    composable (`make_strategy` refuses `icarl+er` with one line)."""

    family = "class-incremental"
    composable = False
    params = EXEMPLAR_PARAMS
    selection: ClassVar[str] = "herding"

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.groups: list[list[int]] = []  # classes of each past experience (new classes only)
        self.current: list[int] = []
        self.teacher: nn.Module | None = None

    def setup(self, ctx) -> None:
        super().setup(ctx)
        seed = int(torch.randint(2**62, (1,), generator=ctx.generator))
        self.memory = ExemplarMemory(self.hp["buffer_size"], seed, self.selection)

    # --- classes ---------------------------------------------------------------------------------------
    @property
    def old(self) -> list[int]:
        return sorted({c for g in self.groups for c in g})

    @property
    def seen(self) -> list[int]:
        return sorted(set(self.old) | set(self.current))

    def class_mask(self, classes: list[int], device: torch.device) -> Tensor:
        mask = torch.zeros(self.ctx.stream.num_classes, dtype=torch.bool, device=device)
        mask[classes] = True
        return mask

    def mask_unseen(self, logits: Tensor) -> Tensor:
        """Logits with the classes not seen yet set to -inf (the paper's heads only cover seen classes)."""
        seen = self.seen
        if not seen:
            return logits
        return logits.masked_fill(~self.class_mask(seen, logits.device), float("-inf"))

    # --- hooks -----------------------------------------------------------------------------------------
    def begin_experience(self, exp: Experience) -> None:
        self.current = sorted(set(exp.classes) - set(self.old))

    def replay_rows(self) -> Tensor | None:
        """Memory rows replayed this step (None: nothing to replay)."""
        if len(self.memory) == 0:
            return None
        return self.memory.draw(self.hp["replay_batch_size"])

    def training_batch(self, batch: Batch) -> Batch:
        rows = self.replay_rows()
        if rows is not None and len(rows):
            rows = rows.to(self.memory.y.device)
            batch.add(f"{self.name}.replay", self.ctx.segment(self.memory.raw[rows], self.memory.y[rows]))
        return batch

    def own_segments(self, batch: Batch) -> list[str]:
        """Names of the new segment and this strategy's replay (it is never composed: `composable = False`)."""
        return [n for n in (NEW, f"{self.name}.replay") if n in batch]

    def rows(self, batch: Batch, out: Outputs) -> tuple[list[str], Tensor, Tensor]:
        """This strategy's segment names, their logits and labels."""
        names = self.own_segments(batch)
        y = torch.cat([batch[n].y for n in names]) if len(names) > 1 else batch[names[0]].y
        return names, out.rows(names), y

    def end_experience(self, exp: Experience) -> None:
        self.memory.update(self.ctx.model, self.ctx.prepare, exp)
        if self.current:
            self.groups.append(self.current)
        self.current = []
        self.teacher = frozen_copy(self.ctx.model)

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        return self.mask_unseen(model(x))

    # --- resume ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "groups": self.groups, "current": self.current,
                "teacher": None if self.teacher is None else self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.groups, self.current = [list(g) for g in state["groups"]], list(state["current"])
        self.teacher = None
        if state["teacher"] is not None:
            self.teacher = self.teacher_shell()
            self.teacher.load_state_dict(state["teacher"])

    def teacher_shell(self) -> nn.Module:
        """A frozen copy of the model with the architecture the teacher was saved with."""
        return frozen_copy(self.ctx.model)
