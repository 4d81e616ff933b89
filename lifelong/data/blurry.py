"""Online streams: a one-pass class-incremental split, i-Blurry and Si-Blurry (blurry task boundaries).

The three are task-free (`Stream.online`): the experiences are consecutive segments of one stream, each sample
arrives once, in its experience's `train_idx` order, and the learner is not told where a segment ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lifelong.data.datasets import ArrayDataset
from lifelong.data.scenarios import class_split
from lifelong.data.stream import Experience, Stream
from lifelong.errors import LifelongError


def shuffled(idx: Tensor, g: torch.Generator) -> Tensor:
    """`idx` in a random order drawn from `g`."""
    return idx[torch.randperm(len(idx), generator=g)]


def online_split(data: ArrayDataset, n_experiences: int = 5, class_order: Sequence[int] | None = None,
                 seed: int = 0, shuffle: bool = False) -> Stream:
    """Online class-incremental split: the classes of `split`, one pass, each segment shuffled once by the seed."""
    stream = class_split(data, n_experiences, class_order, seed, shuffle, False, f"online-split-{data.name}")
    g = torch.Generator().manual_seed(seed)
    for e in stream.experiences:
        e.train_idx = shuffled(e.train_idx, g)
    stream.online = True
    return stream


def check_percent(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise LifelongError(f"scenario parameter {name}={value!r} must be a whole percentage in [0, 100]")


def blurry_tasks(targets: Tensor, classes: list[int], num_tasks: int, disjoint: int, blurred: int, seed: int,
                 stochastic: bool) -> tuple[list[Tensor], list[list[int]], list[list[int]]]:
    """The authors' OnlineSampler (KHU-AGI/Si-Blurry utils/online_sampler.py), call for call on one generator.

    Returns each task's training indices in arrival order, its disjoint classes and its blurry (home) classes.
    `stochastic` is their `varing_NM` (Si-Blurry); otherwise the i-Blurry equal split. `disjoint` is their `n`,
    `blurred` their `m`. Index lists hold dataset positions in dataset order, as theirs do, so that with the same
    seed and class ids 0..C-1 the stream is theirs. One deviation: i-Blurry hands each task len(pool) // T blurred
    samples and drops the remainder (< T samples); here the remainder goes to the last task, so that the tasks
    partition the training samples of the classes used.
    """
    g = torch.Generator().manual_seed(seed)
    n_classes = len(classes)
    disjoint_num = n_classes * disjoint // 100
    disjoint_num = disjoint_num // num_tasks * num_tasks
    blurry_num = (n_classes - disjoint_num) // num_tasks * num_tasks
    order = torch.randperm(n_classes, generator=g)
    if not stochastic:
        dis = order[:disjoint_num].reshape(num_tasks, -1).tolist()
        blur = order[disjoint_num:disjoint_num + blurry_num].reshape(num_tasks, -1).tolist()
    else:
        dis_order = order[:disjoint_num].tolist()
        if disjoint_num > 0:
            cuts = [0, *torch.randint(0, disjoint_num, (num_tasks - 1,), generator=g).sort().values.tolist(),
                    disjoint_num]
            dis = [dis_order[cuts[i]:cuts[i + 1]] for i in range(num_tasks)]
        else:
            dis = [[] for _ in range(num_tasks)]
        if blurry_num > 0:
            cuts = [0, *torch.randint(0, blurry_num, (num_tasks - 1,), generator=g).sort().values.tolist(),
                    blurry_num]
            blur = [order[disjoint_num + cuts[i]:disjoint_num + cuts[i + 1]].tolist() for i in range(num_tasks)]
        else:
            blur = [[] for _ in range(num_tasks)]
    dis = [[classes[c] for c in group] for group in dis]
    blur = [[classes[c] for c in group] for group in blur]
    task_of = {}
    for t in range(num_tasks):
        task_of.update({c: ("d", t) for c in dis[t]})
        task_of.update({c: ("b", t) for c in blur[t]})
    dis_idx: list[list[int]] = [[] for _ in range(num_tasks)]
    blur_idx: list[list[int]] = [[] for _ in range(num_tasks)]
    for i, y in enumerate(targets.tolist()):
        where = task_of.get(y)
        if where is not None:
            (dis_idx if where[0] == "d" else blur_idx)[where[1]].append(i)
    pool: list[int] = []
    if not stochastic:
        for t in range(num_tasks):
            k = len(blur_idx[t]) * blurred // 100
            pool += blur_idx[t][:k]
            blur_idx[t] = blur_idx[t][k:]
        pool = torch.tensor(pool, dtype=torch.long)[torch.randperm(len(pool), generator=g)].tolist()
        each = len(pool) // num_tasks
        for t in range(num_tasks):
            blur_idx[t] += pool[:each] if t < num_tasks - 1 else pool
            pool = pool[each:]
    else:
        total = sum(len(b) for b in blur_idx) * blurred // 100
        if total > 0:
            cuts = [0, *torch.randint(0, total, (num_tasks - 1,), generator=g).sort().values.tolist(), total]
            for t in range(num_tasks):
                k = cuts[t + 1] - cuts[t]
                pool += blur_idx[t][:k]
                blur_idx[t] = blur_idx[t][k:]
            pool = torch.tensor(pool, dtype=torch.long)[torch.randperm(len(pool), generator=g)].tolist()
            for t in range(num_tasks):
                k = cuts[t + 1] - cuts[t]
                blur_idx[t] += pool[:k]
                pool = pool[k:]
    tasks = []
    for t in range(num_tasks):
        idx = torch.tensor(dis_idx[t] + blur_idx[t], dtype=torch.long)
        tasks.append(idx[torch.randperm(len(idx), generator=g)])
    return tasks, dis, blur


def blurry_stream(data: ArrayDataset, n_experiences: int, class_order: Sequence[int] | None, seed: int,
                  disjoint: int, blurred: int, stochastic: bool, name: str, shuffle: bool = False) -> Stream:
    check_percent("disjoint", disjoint)
    check_percent("blurred", blurred)
    if class_order is not None or shuffle:
        what = "class_order" if class_order is not None else "shuffle_classes"
        raise LifelongError(f"{name.split('-' + data.name)[0]} scenarios draw their class order from the seed "
                            f"(as the authors' sampler); leave {what} unset")
    if not 1 <= n_experiences <= len(data.classes):
        raise LifelongError(f"experiences={n_experiences} is out of range: allowed [1, {len(data.classes)}] "
                            f"for {len(data.classes)} classes")
    tasks, dis, blur = blurry_tasks(data.train_y, list(data.classes), n_experiences, disjoint, blurred, seed,
                                    stochastic)
    exps = []
    for t, idx in enumerate(tasks):
        home = sorted(dis[t] + blur[t])
        seen = sorted(set(home) | set(data.train_y[idx].unique().tolist()))
        test = torch.isin(data.test_y, torch.tensor(home, dtype=torch.long)).nonzero().flatten()
        exps.append(Experience(t, data, idx, test, seen))
    used = sorted(c for t in range(n_experiences) for c in dis[t] + blur[t])
    info = {"disjoint_classes": dis, "blurry_classes": blur, "disjoint": disjoint, "blurred": blurred,
            "dropped_classes": sorted(set(data.classes) - set(used))}
    return Stream(name, exps, data.num_classes, info=info, online=True)


def blurry(data: ArrayDataset, n_experiences: int = 5, class_order: Sequence[int] | None = None, seed: int = 0,
           shuffle: bool = False, disjoint: int = 50, blurred: int = 10) -> Stream:
    """i-Blurry (Koh et al. 2022): `disjoint`% of the classes appear in one task only, the others are split
    equally over the tasks, and `blurred`% of each task's blurry-class samples are shuffled across tasks.

    Generated as Si-Blurry's sampler in its non-stochastic mode (see `blurry_tasks`). A task's classes are its
    home classes plus the blurry classes of the samples it received; its test set holds its home classes' test
    samples (so the test sets partition the test set). Classes beyond a multiple of the task count are left
    out, as in the authors' sampler (`info["dropped_classes"]`).
    """
    return blurry_stream(data, n_experiences, class_order, seed, disjoint, blurred, False, f"blurry-{data.name}",
                         shuffle)


def si_blurry(data: ArrayDataset, n_experiences: int = 5, class_order: Sequence[int] | None = None,
              seed: int = 0, shuffle: bool = False, disjoint: int = 50, blurred: int = 10) -> Stream:
    """Si-Blurry (Moon et al. 2023; methods.md 10.1): random task sizes (random class cut points) and random
    blurred counts per task, exactly the authors' OnlineSampler with `varing_NM` (see `blurry_tasks`).

    Defaults T=5, N=50, M=10 as the authors' scripts. Tasks may hold no class when two cut points coincide.
    """
    return blurry_stream(data, n_experiences, class_order, seed, disjoint, blurred, True, f"si-blurry-{data.name}",
                         shuffle)
