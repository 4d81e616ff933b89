"""Scenarios turn a dataset into a Stream: class-, task- and domain-incremental splits.

A scenario name is `<kind>-<dataset>`, e.g. `split-fashion-mnist` (class-incremental),
`task-split-digits` (task-incremental), `permuted-mnist1d` or `rotated-fashion-mnist` (domain-incremental).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lifelong.arguments import accepted_parameters, typed_arguments
from lifelong.data.datasets import DATASETS, ArrayDataset, load_dataset
from lifelong.data.stream import Experience, Permute, Stream
from lifelong.errors import LifelongError, unknown_name

MAX_EXPERIENCES = 1000
# worker processes of `compare` set this to {} so the runs they train share one read of each dataset (read-only)
DATASET_CACHE: dict[tuple[str, str], ArrayDataset] | None = None


@dataclass(frozen=True)
class ScenarioKind:
    name: str
    help: str
    build: Callable[..., Stream]
    default_experiences: int
    online: bool = False  # its streams are online (one pass, hidden boundaries)


def check_class_order(order: Sequence[int], classes: list[int]) -> list[int]:
    order = [int(c) for c in order]
    if sorted(order) != sorted(classes):
        missing = sorted(set(classes) - set(order))
        extra = sorted(set(order) - set(classes))
        dup = sorted({c for c in order if order.count(c) > 1})
        parts = [f"missing {missing}" if missing else "", f"unknown {extra}" if extra else "",
                 f"repeated {dup}" if dup else ""]
        raise LifelongError(f"class order must list each class {classes} exactly once: "
                            + ", ".join(p for p in parts if p))
    return order


def split_classes(data: ArrayDataset, n_experiences: int, class_order: Sequence[int] | None, seed: int,
                  shuffle: bool) -> list[list[int]]:
    classes = list(data.classes)
    if class_order is not None:
        order = check_class_order(class_order, classes)
    elif shuffle:
        g = torch.Generator().manual_seed(seed)
        order = [classes[i] for i in torch.randperm(len(classes), generator=g).tolist()]
    else:
        order = classes
    if not 1 <= n_experiences <= len(order):
        raise LifelongError(f"experiences={n_experiences} is out of range: allowed [1, {len(order)}] "
                            f"for {len(order)} classes")
    if len(order) % n_experiences:
        raise LifelongError(f"experiences={n_experiences} does not divide the {len(order)} classes evenly")
    per = len(order) // n_experiences
    return [order[i * per:(i + 1) * per] for i in range(n_experiences)]


def class_split(data: ArrayDataset, n_experiences: int, class_order: Sequence[int] | None, seed: int,
                shuffle: bool, task_aware: bool, name: str) -> Stream:
    groups = split_classes(data, n_experiences, class_order, seed, shuffle)
    exps = []
    for i, cls in enumerate(groups):
        c = torch.tensor(cls)
        train = torch.isin(data.train_y, c).nonzero().flatten()
        test = torch.isin(data.test_y, c).nonzero().flatten()
        exps.append(Experience(i, data, train, test, cls, task_id=i if task_aware else 0))
    return Stream(name, exps, data.num_classes, task_aware=task_aware,
                  info={"class_order": [c for g in groups for c in g]})


def class_incremental(data: ArrayDataset, n_experiences: int = 5, class_order: Sequence[int] | None = None,
                      seed: int = 0, shuffle: bool = False) -> Stream:
    """New classes in each experience; one head over all classes; no task label at test time."""
    return class_split(data, n_experiences, class_order, seed, shuffle, False, f"split-{data.name}")


def task_incremental(data: ArrayDataset, n_experiences: int = 5, class_order: Sequence[int] | None = None,
                     seed: int = 0, shuffle: bool = False) -> Stream:
    """Class splits with the task label given at test time (multi-head: predict within the task's classes)."""
    return class_split(data, n_experiences, class_order, seed, shuffle, True, f"task-split-{data.name}")


def permuted(data: ArrayDataset, n_experiences: int = 5, class_order: Sequence[int] | None = None,
             seed: int = 0, shuffle: bool = False) -> Stream:
    """Domain-incremental: every experience has all classes under a fixed random input permutation.

    The first experience keeps the identity, as is customary.
    """
    g = torch.Generator().manual_seed(seed)
    n_in = data.train_x[0].numel()
    if data.train_x.dim() != 2:
        raise LifelongError("permuted scenarios need flat inputs (one feature vector per sample)")
    exps = []
    for i in range(n_experiences):
        perm = torch.arange(n_in) if i == 0 else torch.randperm(n_in, generator=g)
        exps.append(Experience(i, data, torch.arange(len(data.train_y)), torch.arange(len(data.test_y)),
                               list(data.classes), input_map=None if i == 0 else Permute(perm)))
    return Stream(f"permuted-{data.name}", exps, data.num_classes)


def rotate_images(x: torch.Tensor, degrees: float, shape: tuple[int, ...]) -> torch.Tensor:
    """Rotate a batch of images stored flat (N, C*H*W), of per-sample `shape` (C, H, W), by `degrees`, keeping
    the dtype (integer images are rounded and clipped to their range)."""
    n = x.shape[0]
    img = x.reshape(n, *shape).float()
    t = torch.tensor(degrees * torch.pi / 180)
    theta = torch.tensor([[torch.cos(t), -torch.sin(t), 0.0], [torch.sin(t), torch.cos(t), 0.0]])
    grid = torch.nn.functional.affine_grid(theta.expand(n, 2, 3), list(img.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(img, grid, align_corners=False)
    if not x.is_floating_point():
        info = torch.iinfo(x.dtype)
        out = out.round().clamp(info.min, info.max)
    return out.to(x.dtype).reshape(n, -1)


def rotated(data: ArrayDataset, n_experiences: int = 5, class_order: Sequence[int] | None = None,
            seed: int = 0, shuffle: bool = False, max_degrees: float = 180.0) -> Stream:
    """Domain-incremental: experience i shows all images rotated by i * max_degrees / n_experiences."""
    if len(data.shape) != 3:
        raise LifelongError(f"rotated scenarios need images (channels, height, width); dataset '{data.name}' has "
                            f"inputs of shape {data.shape}")
    exps = []
    for i in range(n_experiences):
        deg = i * max_degrees / n_experiences
        d = data if i == 0 else dataclasses.replace(
            data, name=f"{data.name}-rot{deg:g}", train_x=rotate_images(data.train_x, deg, data.shape),
            test_x=rotate_images(data.test_x, deg, data.shape))
        exps.append(Experience(i, d, torch.arange(len(d.train_y)), torch.arange(len(d.test_y)),
                               list(data.classes)))
    return Stream(f"rotated-{data.name}", exps, data.num_classes)


# the generators of the online, hierarchical, recurring and shifting streams use the helpers above
from lifelong.data.archives import core50_nc, core50_ni, core50_nic  # noqa: E402
from lifelong.data.blurry import blurry, online_split, si_blurry  # noqa: E402
from lifelong.data.hierarchy import has_hierarchy, hle  # noqa: E402
from lifelong.data.recurring import power_law, scole  # noqa: E402
from lifelong.data.shift import concept_shift, imbalanced  # noqa: E402

SCENARIO_KINDS: dict[str, ScenarioKind] = {
    k.name: k for k in (
        ScenarioKind("split", "class-incremental: disjoint classes per experience, single head",
                     class_incremental, 5),
        ScenarioKind("task-split", "task-incremental: class splits with task labels (multi-head)",
                     task_incremental, 5),
        ScenarioKind("permuted", "domain-incremental: a fixed input permutation per experience", permuted, 5),
        ScenarioKind("rotated", "domain-incremental: images rotated further in each experience", rotated, 5),
        ScenarioKind("online-split", "online class-incremental: one pass, hidden boundaries", online_split, 5,
                     online=True),
        ScenarioKind("blurry", "online i-Blurry: disjoint and blurry classes, blurred samples cross tasks",
                     blurry, 5, online=True),
        ScenarioKind("si-blurry", "online Si-Blurry: i-Blurry with random task sizes and blur", si_blurry, 5,
                     online=True),
        ScenarioKind("hle", "online hierarchical label expansion: coarse labels first, fine labels later",
                     hle, 5, online=True),
        ScenarioKind("scole", "SCoLe: many short tasks of classes drawn i.i.d. (classes recur)", scole, 500),
        ScenarioKind("power-law", "class splits with old tasks rehearsed by a power law of time since seen",
                     power_law, 5),
        ScenarioKind("concept-shift", "the same inputs under a labelling that changes (permuted or merged)",
                     concept_shift, 5),
        ScenarioKind("imbalanced", "class-incremental with long-tailed class counts", imbalanced, 5),
        ScenarioKind("core50-ni", "CORe50 NI: 8 training sessions of all 50 objects (new instances)",
                     core50_ni, 8),
        ScenarioKind("core50-nc", "CORe50 NC: 9 batches of new objects", core50_nc, 9),
        ScenarioKind("core50-nic", "CORe50 NIC: 79 batches of new instances and new objects", core50_nic, 79),
    )
}
# scenarios that are a protocol of one dataset: the name is the whole scenario (no `-<dataset>` suffix)
FIXED_SCENARIOS = {"core50-ni": "core50", "core50-nc": "core50", "core50-nic": "core50"}


def scenario_names() -> list[str]:
    return [f"{k}-{d}" for k in SCENARIO_KINDS if k not in FIXED_SCENARIOS for d in DATASETS
            if not (k == "rotated" and d in ("mnist1d", "fortunes-minilm"))  # not images
            and not (k == "hle" and not has_hierarchy(d))] + list(FIXED_SCENARIOS)


def format_kind_parameters(kind: ScenarioKind) -> str:
    """`name=default, ...` of a kind's own parameters (for `lifelong list`), or `-` when it has none."""
    return ", ".join(f"{n}={p.default}" for n, p in kind_parameters(kind).items()) or "-"


def parse_scenario(name: str) -> tuple[ScenarioKind, str]:
    """Split `task-split-digits` into its kind and its dataset name."""
    if name in FIXED_SCENARIOS:
        return SCENARIO_KINDS[name], FIXED_SCENARIOS[name]
    for kind in sorted(SCENARIO_KINDS, key=len, reverse=True):
        if kind in FIXED_SCENARIOS:
            continue
        prefix = kind + "-"
        if not name.startswith(prefix):
            continue
        data = name[len(prefix):]
        if ":" in data:  # the user's loader by import path: its own import error, not "unknown scenario"
            DATASETS.get(data)
            return SCENARIO_KINDS[kind], data
        if data in DATASETS:
            return SCENARIO_KINDS[kind], data
    raise unknown_name("scenario", name, scenario_names())


SHARED_ARGUMENTS = ("data", "n_experiences", "class_order", "seed", "shuffle")


def kind_parameters(kind: ScenarioKind) -> dict[str, inspect.Parameter]:
    """The parameters a scenario kind takes beyond the shared ones (set with `scenario_params`)."""
    return accepted_parameters(kind.build, SHARED_ARGUMENTS)


def convert_parameters(kind: ScenarioKind, params: dict[str, Any]) -> dict[str, Any]:
    """`scenario_params` (strings from the command line, or values) typed by the kind's signature defaults."""
    return typed_arguments(kind.build, params, f"parameter of {kind.name} scenarios", SHARED_ARGUMENTS)


def make_stream(name: str, n_experiences: int | None = None, class_order: Sequence[int] | None = None,
                seed: int = 0, shuffle_classes: bool = False, data_dir: str | None = None,
                dataset: ArrayDataset | None = None, params: dict[str, Any] | None = None) -> Stream:
    """Build the stream of scenario `name`; `dataset` overrides loading (for adapters and tests); `params` are
    the kind's own parameters (`scenario_params`)."""
    kind, dataset_name = parse_scenario(name)
    extra = convert_parameters(kind, params or {})
    n = n_experiences or kind.default_experiences
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_EXPERIENCES:
        raise LifelongError(f"experiences={n_experiences!r} is out of range: allowed [1, {MAX_EXPERIENCES}]")
    if (class_order is not None or shuffle_classes) and kind.name in ("permuted", "rotated"):
        what = "class_order" if class_order is not None else "shuffle_classes"
        raise LifelongError(f"{what} has no effect on {kind.name} scenarios (every experience holds every "
                            "class); leave it unset")
    if dataset is not None:
        data = dataset
    elif DATASET_CACHE is not None:
        key = (dataset_name, data_dir or "")
        if key not in DATASET_CACHE:
            DATASET_CACHE[key] = load_dataset(dataset_name, root=data_dir)
        data = DATASET_CACHE[key]
    else:
        data = load_dataset(dataset_name, root=data_dir)
    try:
        return kind.build(data, n, class_order, seed, shuffle_classes, **extra)
    except LifelongError as err:
        if n_experiences or not str(err).startswith(f"experiences={n}"):
            raise
        raise LifelongError(f"{err} (experiences={n} is the {kind.name} scenarios' default: set --experiences / "
                            "experiences= for this data)") from None
