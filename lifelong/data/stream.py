"""Experiences and streams: an experience is index tensors into a dataset's tensors, never copied data."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lifelong.data.datasets import ArrayDataset


@dataclass
class Permute:
    """Input map of permuted-input domain shifts: the same pixel permutation for every sample."""

    perm: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        return x[:, self.perm]


@dataclass
class Experience:
    """One step of the stream: which training/test samples of `data` it holds, and which classes.

    `input_map`, when set, is applied to stored inputs before they are prepared (domain shifts that are
    cheaper to compute than to store). `task_id` is what task-aware (multi-head) prediction selects.
    `label_map`, when set, maps every stored label to the label this experience uses (a tensor indexed by the
    stored label): concept shift relabels the same inputs, hierarchical streams show fine labels as coarse ones.
    """

    index: int
    data: ArrayDataset
    train_idx: Tensor
    test_idx: Tensor
    classes: list[int]
    task_id: int = 0
    input_map: Permute | None = None
    label_map: Tensor | None = None

    def raw(self, idx: Tensor, split: str = "train") -> Tensor:
        """Stored (compact) inputs of the given dataset indices, with the input map applied."""
        x = (self.data.train_x if split == "train" else self.data.test_x)[idx]
        return self.input_map(x) if self.input_map is not None else x

    def labels(self, idx: Tensor, split: str = "train") -> Tensor:
        """Labels of the given dataset indices, as this experience uses them (`label_map` applied)."""
        y = (self.data.train_y if split == "train" else self.data.test_y)[idx]
        return y if self.label_map is None else self.label_map.to(y.device)[y]

    @property
    def num_train(self) -> int:
        return len(self.train_idx)


@dataclass
class Stream:
    """An ordered list of experiences over one label space.

    `task_aware`: predictions are restricted to the classes of the sample's task (task-incremental).
    `online`: boundaries are hidden from the strategy (task-free). The experiences are consecutive segments of one
    stream whose arrival order is each experience's `train_idx` order; every sample is seen once, in batches,
    with `online_iter` steps per batch; the head only scores labels seen so far (it grows on first sight).
    `eval_sets`: the test sets a row of the accuracy matrix reports on (experiences whose `test_idx`, `classes`,
    `label_map` and `task_id` define them; their `train_idx` is unused), when they differ from the training
    experiences: per-level sets of hierarchical streams, one set per class for long recurring streams.
    """

    name: str
    experiences: list[Experience]
    num_classes: int
    task_aware: bool = False
    info: dict = field(default_factory=dict)
    online: bool = False
    eval_sets: list[Experience] | None = None

    def __len__(self) -> int:
        return len(self.experiences)

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]

    def __iter__(self):
        return iter(self.experiences)

    def fingerprint(self) -> str:
        """SHA-256 of the data and of how the stream cuts it (indices, classes, tasks, input maps)."""
        h = hashlib.sha256(repr((self.num_classes, self.task_aware)).encode())
        if self.online or self.eval_sets is not None:  # kept out of the key of the streams that predate them
            h.update(repr(("online", self.online, "eval_sets", len(self.eval_sets or []))).encode())
        for e in [*self.experiences, *(self.eval_sets or [])]:
            h.update(e.data.fingerprint().encode())
            h.update(repr((e.index, e.classes, e.task_id)).encode())
            maps = [*([e.input_map.perm] if e.input_map is not None else []),
                    *([e.label_map] if e.label_map is not None else [])]
            for t in (e.train_idx, e.test_idx, *maps):
                h.update(memoryview(t.detach().cpu().contiguous().to(torch.int64).numpy()))
        return h.hexdigest()

    @property
    def evaluated(self) -> list[Experience]:
        """The test sets one row of the accuracy matrix covers: `eval_sets`, else the experiences."""
        return self.eval_sets if self.eval_sets is not None else self.experiences

    def task_class_mask(self) -> Tensor:
        """[num_tasks, num_classes] boolean mask of the classes each task may predict."""
        n_tasks = max(e.task_id for e in self.experiences) + 1
        mask = torch.zeros(n_tasks, self.num_classes, dtype=torch.bool)
        for e in self.experiences:
            mask[e.task_id, e.classes] = True
        return mask


def merge(experiences: list[Experience], index: int = 0) -> Experience:
    """One experience holding the training data of several (for joint and cumulative training).

    When all share one dataset and no input map, the result indexes it; otherwise the samples are copied
    into a new dataset (domain shifts with different input maps or datasets).
    """
    first = experiences[0]
    classes = sorted({c for e in experiences for c in e.classes})
    shared = all(e.data is first.data and e.input_map is None and e.label_map is None for e in experiences)
    if shared:
        train = torch.cat([e.train_idx for e in experiences])
        test = torch.cat([e.test_idx for e in experiences])
        return Experience(index, first.data, train, test, classes, task_id=first.task_id)
    d = first.data
    tx = torch.cat([e.raw(e.train_idx) for e in experiences])
    ty = torch.cat([e.labels(e.train_idx) for e in experiences])
    sx = torch.cat([e.raw(e.test_idx, "test") for e in experiences])
    sy = torch.cat([e.labels(e.test_idx, "test") for e in experiences])
    data = dataclasses.replace(d, name=d.name + "-merged", train_x=tx, train_y=ty, test_x=sx, test_y=sy)
    return Experience(index, data, torch.arange(len(tx)), torch.arange(len(sx)), classes, task_id=first.task_id)
