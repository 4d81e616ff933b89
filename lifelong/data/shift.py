"""Concept shift (the same inputs under a changing labelling) and class-imbalanced class-incremental streams."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lifelong.data.datasets import ArrayDataset
from lifelong.data.scenarios import split_classes
from lifelong.data.stream import Experience, Stream
from lifelong.errors import LifelongError

SHIFT_MODES = ("permute", "merge")


def merge_map(order: list[int], n_labels: int, size: int) -> torch.Tensor:
    """Label map merging the classes of `order` into `n_labels` consecutive groups (as equal as possible); each
    group is labelled by its first class."""
    out = torch.arange(size)
    n = len(order)
    for rank, c in enumerate(order):
        group = rank * n_labels // n
        first = -(-group * n // n_labels)  # smallest rank r with r * n_labels // n == group
        out[c] = order[first]
    return out


def concept_shift(data: ArrayDataset, n_experiences: int = 5, class_order: Sequence[int] | None = None,
                  seed: int = 0, shuffle: bool = False, mode: str = "permute", min_labels: int = 2) -> Stream:
    """The same inputs under a labelling that changes with each experience (`label_map`).

    The training set is split at random (seeded) into `n_experiences` equal parts, one per experience, so every
    sample is seen once; each experience's test set is the whole test set under its own labelling, and the
    accuracy matrix's rows report every labelling (no `eval_sets`: a_ij is accuracy on labelling j after i).
    `mode=permute`: experience 0 keeps the labels, each later one uses a random permutation of the classes.
    `mode=merge`: the classes (in class order, seeded if `shuffle`) are merged into fewer labels over time, from
    all classes at experience 0 down to `min_labels` at the last, linearly; a merged label is its group's first
    class.
    """
    if mode not in SHIFT_MODES:
        raise LifelongError(f"scenario parameter mode={mode!r} must be one of {', '.join(SHIFT_MODES)}")
    classes = list(data.classes)
    if isinstance(min_labels, bool) or not 1 <= min_labels <= len(classes):
        raise LifelongError(f"scenario parameter min_labels={min_labels!r} is out of range: allowed "
                            f"[1, {len(classes)}]")
    order = split_classes(data, 1, class_order, seed, shuffle)[0]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data.train_y), generator=g)
    parts = perm.tensor_split(n_experiences)
    size = data.num_classes
    all_test = torch.arange(len(data.test_y))
    exps = []
    for i, part in enumerate(parts):
        if mode == "permute":
            label_map = torch.arange(size)
            if i > 0:
                label_map[torch.tensor(classes)] = torch.tensor(classes)[torch.randperm(len(classes), generator=g)]
        else:
            steps = max(n_experiences - 1, 1)
            n_labels = round(len(classes) - (len(classes) - min_labels) * i / steps)
            label_map = merge_map(order, n_labels, size)
        used = sorted(set(label_map[torch.tensor(classes)].tolist()))
        exps.append(Experience(i, data, part, all_test, used, label_map=label_map))
    return Stream(f"concept-shift-{data.name}", exps, data.num_classes,
                  info={"mode": mode, "class_order": order})


def imbalanced(data: ArrayDataset, n_experiences: int = 5, class_order: Sequence[int] | None = None,
               seed: int = 0, shuffle: bool = False, ratio: float = 10.0) -> Stream:
    """Class-incremental split with long-tailed class counts: the k-th class of the class order keeps a
    seeded random n_k = floor(n · ratio^(-k/(C-1))) of its n training samples (at least 1), so the first class
    has `ratio` times the samples of the last. Test sets are untouched."""
    if not 1.0 <= ratio < float("inf"):
        raise LifelongError(f"scenario parameter ratio={ratio!r} must be a finite number >= 1")
    groups = split_classes(data, n_experiences, class_order, seed, shuffle)
    order = [c for grp in groups for c in grp]
    g = torch.Generator().manual_seed(seed + 1)
    keep, counts = {}, {}
    for k, c in enumerate(order):
        idx = (data.train_y == c).nonzero().flatten()
        frac = ratio ** (-k / (len(order) - 1)) if len(order) > 1 else 1.0
        n = max(1, int(len(idx) * frac)) if len(idx) else 0
        keep[c] = idx[torch.randperm(len(idx), generator=g)[:n]].sort().values
        counts[c] = n
    exps = []
    for i, cls in enumerate(groups):
        train = torch.cat([keep[c] for c in cls]).sort().values
        test = torch.isin(data.test_y, torch.tensor(cls)).nonzero().flatten()
        exps.append(Experience(i, data, train, test, cls))
    return Stream(f"imbalanced-{data.name}", exps, data.num_classes,
                  info={"class_order": order, "train_counts": counts, "ratio": ratio})
