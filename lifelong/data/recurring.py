"""Long streams in which classes or tasks recur: SCoLe (Lesort et al. 2023) and power-law rehearsal environments
(Gandhi et al. 2024). Both are offline (boundaries visible; the engine's epochs apply) and report accuracy on
fixed test sets (`Stream.eval_sets`) rather than on each of their many experiences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lifelong.data.datasets import ArrayDataset
from lifelong.data.scenarios import check_class_order, split_classes
from lifelong.data.stream import Experience, Stream
from lifelong.errors import LifelongError

DISTRIBUTIONS = ("uniform", "longtail")
DECAYS = ("power", "exponential")
CLOCKS = ("last-seen", "introduced")


def class_distribution(n_classes: int, distribution: str, imbalance: float) -> Tensor:
    """Probabilities of drawing each class (in class order): uniform, or long-tailed with the first class
    `imbalance` times as likely as the last, geometric in between (p_k ∝ imbalance^(-k/(C-1)))."""
    if distribution not in DISTRIBUTIONS:
        raise LifelongError(f"scenario parameter distribution={distribution!r} must be one of "
                            f"{', '.join(DISTRIBUTIONS)}")
    if not imbalance >= 1 or math.isinf(imbalance):
        raise LifelongError(f"scenario parameter imbalance={imbalance!r} must be a finite number >= 1")
    if distribution == "uniform" or n_classes == 1:
        return torch.full((n_classes,), 1.0 / n_classes, dtype=torch.float64)
    p = float(imbalance) ** (-torch.arange(n_classes, dtype=torch.float64) / (n_classes - 1))
    return p / p.sum()


def per_class_indices(y: Tensor, classes: list[int]) -> dict[int, Tensor]:
    order = torch.argsort(y, stable=True)
    counts = torch.bincount(y, minlength=max(classes) + 1)
    starts = torch.cumsum(counts, 0) - counts
    return {c: order[starts[c]:starts[c] + counts[c]] for c in classes}


def class_eval_sets(data: ArrayDataset, classes: list[int]) -> list[Experience]:
    """One test set per class: a row of the accuracy matrix is then per-class accuracy on the whole test set."""
    empty = torch.zeros(0, dtype=torch.long)
    return [Experience(i, data, empty, (data.test_y == c).nonzero().flatten(), [c]) for i, c in enumerate(classes)]


def scole(data: ArrayDataset, n_experiences: int = 500, class_order: Sequence[int] | None = None, seed: int = 0,
          shuffle: bool = False, classes_per_task: int = 2, distribution: str = "uniform", imbalance: float = 10.0,
          samples: int = 200) -> Stream:
    """SCoLe (methods.md 9.1): `n_experiences` short tasks, each of `classes_per_task` distinct classes drawn
    from a class distribution (uniform, or long-tailed with first/last probability ratio `imbalance`, over the
    class order), with `samples` training samples drawn at random from those classes (an equal share per class,
    without replacement within a task, independently across tasks). Boundaries are visible; train with the
    engine's epochs (the authors' runs use 1 epoch, 2 classes per task, 500 tasks, and "group" output masking:
    this stream's `classes` are the task's classes, which `output_mask=experience` masks to).

    Evaluation sets: one per class with its whole test split (accuracy on all classes after every task).
    The c classes of a task are drawn without replacement, so a class's share of tasks equals p when c = 1 and
    is flattened towards uniform for c > 1 (exactly c/C under the uniform distribution). Confirmed from the
    authors' README (Lesort et al., CoLLas 2023 code): tasks drawn online from class subsets, 500 tasks,
    2 classes per task, 1 epoch, group masking, an imbalance factor for the class distribution; the exact
    imbalance profile of their code (`entropy_decrease`) was not read, the geometric profile here is ours.
    """
    classes = list(data.classes)
    if class_order is not None:
        classes = check_class_order(class_order, classes)
    g = torch.Generator().manual_seed(seed)
    if shuffle:
        classes = [classes[i] for i in torch.randperm(len(classes), generator=g).tolist()]
    if isinstance(classes_per_task, bool) or not 1 <= classes_per_task <= len(classes):
        raise LifelongError(f"scenario parameter classes_per_task={classes_per_task!r} is out of range: "
                            f"allowed [1, {len(classes)}]")
    if isinstance(samples, bool) or samples < classes_per_task:
        raise LifelongError(f"scenario parameter samples={samples!r} must be at least classes_per_task="
                            f"{classes_per_task} (one sample per class)")
    p = class_distribution(len(classes), distribution, imbalance)
    pools = per_class_indices(data.train_y, classes)
    test_pools = per_class_indices(data.test_y, classes)
    exps = []
    for t in range(n_experiences):
        chosen = sorted(classes[i] for i in torch.multinomial(p, classes_per_task, replacement=False,
                                                              generator=g).tolist())
        share = [samples // classes_per_task + (k < samples % classes_per_task) for k in range(classes_per_task)]
        parts = []
        for c, k in zip(chosen, share, strict=True):
            pool = pools[c]
            parts.append(pool[torch.randperm(len(pool), generator=g)[:k]])
        train = torch.cat(parts)
        train = train[torch.randperm(len(train), generator=g)]
        test = torch.cat([test_pools[c] for c in chosen])
        exps.append(Experience(t, data, train, test, chosen))
    info = {"class_order": classes, "class_probabilities": p.tolist(), "classes_per_task": classes_per_task,
            "samples": samples}
    return Stream(f"scole-{data.name}", exps, data.num_classes, info=info, eval_sets=class_eval_sets(data, classes))


def recurrence_shares(ages: Tensor, budget: float, alpha: float = 1.0, decay: str = "power",
                      lam: float = 1.0) -> Tensor:
    """Rehearsal share of each old task given its age (phases since last seen, >= 1): m ∝ (age + 1)^(-alpha)
    (power) or exp(-lam * age) (exponential), normalised to sum to `budget`. (methods.md 9.2 writes the age as
    p − last_seen, so (p − last_seen + 1) is age + 1 here.)"""
    if decay not in DECAYS:
        raise LifelongError(f"scenario parameter decay={decay!r} must be one of {', '.join(DECAYS)}")
    ages = ages.to(torch.float64)
    log_w = -float(alpha) * torch.log(ages + 1) if decay == "power" else -float(lam) * ages
    return budget * torch.softmax(log_w, 0)  # normalised in log space: a large alpha or lam cannot underflow to 0/0


def largest_remainder(shares: Tensor) -> Tensor:
    """Integer counts summing to round(shares.sum()), each within 1 of its share (Hamilton's method)."""
    floor = shares.floor().to(torch.long)
    left = int(round(float(shares.sum()))) - int(floor.sum())
    if left > 0:
        floor[torch.argsort(shares - shares.floor(), descending=True, stable=True)[:left]] += 1
    return floor


def power_law(data: ArrayDataset, n_experiences: int = 5, class_order: Sequence[int] | None = None, seed: int = 0,
              shuffle: bool = False, alpha: float = 1.0, decay: str = "power", lam: float = 1.0,
              rehearsal: int = 1000, clock: str = "last-seen") -> Stream:
    """Power-law rehearsal environment (Gandhi et al. 2024; methods.md 9.2). Tasks are the class splits of
    `split`; phase p (an experience) holds all of task p plus `rehearsal` samples of the old tasks j < p.

    The old tasks' expected shares are `recurrence_shares` of their ages (phases since `clock`: the phase it
    was last rehearsed or introduced in, `last-seen` as the paper's "time since it was last performed", or its
    introduction). With `last-seen`, each of the `rehearsal` samples picks its task from those shares
    (multinomial, so the counts sum to the budget exactly and a task is rehearsed by chance), and a task that
    got samples is seen at p; with `introduced` the counts are the shares rounded by largest remainder. A
    deterministic allocation with `last-seen` would rehearse every old task each phase and make all ages 1.
    Samples of a task are drawn uniformly from its training samples, anew each phase. The paper's exact
    normalisation and time origin could not be read here (only its abstract); this reconstruction is ours.
    Evaluation sets: one per task (its classes' test samples).
    """
    if clock not in CLOCKS:
        raise LifelongError(f"scenario parameter clock={clock!r} must be one of {', '.join(CLOCKS)}")
    if isinstance(rehearsal, bool) or rehearsal < 0:
        raise LifelongError(f"scenario parameter rehearsal={rehearsal!r} must be a sample count >= 0")
    if not alpha >= 0 or not lam >= 0 or math.isinf(alpha) or math.isinf(lam):
        raise LifelongError(f"scenario parameters alpha={alpha!r} and lam={lam!r} must be finite and >= 0")
    groups = split_classes(data, n_experiences, class_order, seed, shuffle)
    g = torch.Generator().manual_seed(seed + 1)
    task_train = [torch.isin(data.train_y, torch.tensor(c)).nonzero().flatten() for c in groups]
    task_test = [torch.isin(data.test_y, torch.tensor(c)).nonzero().flatten() for c in groups]
    last_seen = list(range(n_experiences))
    exps, counts_log = [], []
    for p in range(n_experiences):
        parts = [task_train[p]]
        counts = torch.zeros(p, dtype=torch.long)
        if p > 0 and rehearsal > 0:
            ages = torch.tensor([p - last_seen[j] for j in range(p)])
            shares = recurrence_shares(ages, float(rehearsal), alpha, decay, lam)
            if clock == "last-seen":
                draws = torch.multinomial(shares / shares.sum(), rehearsal, replacement=True, generator=g)
                counts = torch.bincount(draws, minlength=p)
            else:
                counts = largest_remainder(shares)
            for j in range(p):
                k = int(counts[j])
                if k:
                    pool = task_train[j]
                    pick = torch.randint(0, len(pool), (k,), generator=g) if k > len(pool) else \
                        torch.randperm(len(pool), generator=g)[:k]
                    parts.append(pool[pick])
                    if clock == "last-seen":
                        last_seen[j] = p
        counts_log.append(counts.tolist())
        train = torch.cat(parts)
        classes = sorted({c for j in [p, *[j for j in range(p) if counts[j] > 0]] for c in groups[j]})
        exps.append(Experience(p, data, train, task_test[p], classes))
    evals = [Experience(j, data, torch.zeros(0, dtype=torch.long), task_test[j], list(groups[j]))
             for j in range(n_experiences)]
    info = {"class_order": [c for grp in groups for c in grp], "rehearsal_counts": counts_log, "alpha": alpha,
            "decay": decay, "clock": clock}
    return Stream(f"power-law-{data.name}", exps, data.num_classes, info=info, eval_sets=evals)
