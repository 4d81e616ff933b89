"""Run configuration: every setting of one run, declared with its default and allowed range."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError, unknown_name
from lifelong.params import Param
from lifelong.schedules.base import Schedule
from lifelong.schedules.catalog import SCHEDULES, make_schedule
from lifelong.schedules.infinite import Infinite
from lifelong.schedules.shapes import NEEDS_POSITIVE_FLOOR, SHAPES
from lifelong.schedules.stream import MODES

MAX_HIDDEN = 65_536  # units per hidden layer (a bound, so a typo cannot ask for terabytes)
MAX_CONFIG_BYTES = 1 << 20

SETTINGS: dict[str, Param] = {
    "scenario": Param("split-fashion-mnist", "scenario name: <kind>-<dataset> (see `lifelong list`)"),
    "strategy": Param("naive", "strategy name, or several joined with '+' (e.g. er+lwf)"),
    "seed": Param(0, "random seed (model init, data order, strategy randomness)", low=0, high=2**32 - 1),
    "experiences": Param(0, "number of experiences (0: the scenario's default)", low=0, high=1000),
    "scenario_params": Param("", "parameters of the scenario kind as key=value,key=value (e.g. disjoint=50,"
                             "blurred=10 for si-blurry); `lifelong list` shows each kind's parameters"),
    "class_order": Param("", "comma-separated class order (default: 0,1,2,...)"),
    "shuffle_classes": Param(False, "shuffle the class order with the seed"),
    "model": Param("auto", "backbone: auto (the dataset's: resnet18 on the image benchmarks, else mlp), mlp, cnn, "
                   "resnet18, tv-resnet18/34/50, ... (see `lifelong list`)"),
    "model_params": Param("", "arguments of the backbone as key=value,key=value (e.g. weights=r18.pt,freeze=true "
                          "for tv-resnet18); the MLP's sizes have --hidden"),
    "augment": Param(True, "the dataset's training augmentation (random crop + flip on CIFAR and TinyImageNet); "
                     "off: train on the stored images as they are"),
    "hidden": Param("256,256", "hidden layer sizes of the MLP"),
    "optimizer": Param("sgd", "optimizer: sgd, adam, adamw, sgd-schedulefree, adamw-schedulefree (these need the "
                       "'schedulefree' extra), or any torch.optim class by name (rmsprop, adagrad, nadam, ...)"),
    "optimizer_params": Param("", "extra arguments of the optimizer as key=value,key=value (e.g. alpha=0.9,"
                              "eps=1e-8 or betas=(0.9,0.99)); lr, momentum (sgd) and weight_decay have their own "
                              "settings; sgd/adam/adamw take torch's fused step, foreach=true its multi-tensor one "
                              "(slower, bit-identical to torch's single-tensor step)"),
    "lr": Param(0.01, "learning rate", low=0.0, low_open=True, log=True),
    "momentum": Param(0.9, "SGD momentum", low=0.0, high=1.0),
    "weight_decay": Param(0.0, "weight decay", low=0.0),
    "batch_size": Param(32, "new samples per training step", low=1),
    "epochs": Param(1, "passes over each experience", low=1, high=10_000),
    "online_iter": Param(1, "online streams: gradient steps on each incoming batch (the MVP and Si-Blurry papers "
                         "use 3)", low=1, high=1000),
    "eval_every_samples": Param(1000, "online streams: anytime evaluation (for A_auc) every N incoming samples, on "
                                "the test samples of the classes seen so far (0: off)", low=0),
    "output_mask": Param("none", "experience: the cross-entropy of training covers only the logits of the current "
                         "experience's classes (SCoLe); evaluation is never masked", choices=("none", "experience")),
    "precision": Param("32", "arithmetic of the training step: 32 (float32), bf16-mixed (autocast to bfloat16; "
                       "CPU and CUDA) or 16-mixed (float16 with a gradient scaler; CUDA)",
                       choices=("32", "bf16-mixed", "16-mixed")),
    "linear_kernel": Param("auto", "float32 linear layers on an x86 CPU: auto (oneDNN's kernel for products of "
                           "64 rows or more, 1.3-2x faster where torch's BLAS is slow, as on AMD CPUs; rounds "
                           "differently) or torch (torch's own kernel everywhere)", choices=("auto", "torch")),
    "device": Param("auto", "cpu, cuda, cuda:N or auto (CUDA when present)"),
    "threads": Param(1, "CPU threads for this run (pinned: more threads can be slower under load)", low=1,
                     high=1024),
    "checkpoint_every": Param(500, "also checkpoint every N steps (0: only at experience ends)", low=0),
    "eval_every": Param(0, "continual evaluation every K steps (0: off); metric windows count evaluations, so "
                        "WF10/WP10/LCA span 10 K steps", low=0),
    "eval_subsample": Param(0, "test samples per experience used by continual evaluation (0: 500, or all of "
                            "the smallest experience's when it has fewer)", low=0),
    "eval_background": Param(True, "run continual evaluation on a background thread (same numbers)"),
    "data_dir": Param("", "directory to look for dataset files first"),
    "schedule": Param("", "learning-rate schedule name ('': constant --lr); see `lifelong schedule --help`. "
                      "A user's optimizer whose parameter groups have rates of their own gets each group's rate "
                      "scaled by the schedule's rate / --lr"),
    "schedule_mode": Param("continue", "schedule across experiences: restart (re-warm each), continue (one "
                           "schedule over the stream), infinite (constant phase carries over)", choices=MODES),
    "schedule_params": Param("", "schedule parameters as key=value,key=value (peak defaults to --lr; "
                             "run-length fields left at 0 take the stream or experience length)"),
    "record_grad_norms": Param(False, "store every step's gradient norms (l2 and l1), e.g. to build a 'refined' "
                               "schedule from this run later (costs a little per step)"),
    "infinite_continue": Param("pre-anneal", "schedule_mode=infinite: each experience continues from the weights "
                               "before the previous anneal (pre-anneal, Ibrahim et al. 2024) or after it (annealed)",
                               choices=("pre-anneal", "annealed")),
    "branch_every_experience": Param(False, "at each experience end, train a decayed branch off a copy of "
                                     "the state, evaluate and store it; the main run is unaffected"),
    "branch_steps": Param(0, "steps of each decay branch (0: a tenth of the experience's steps)", low=0),
    "branch_shape": Param("linear", "decay shape of the branches", choices=SHAPES),
    "branch_min_lr": Param(0.0, "learning rate the branches decay to", low=0.0),
}


def parse_key_values(setting: str, text: str) -> dict[str, str]:
    """`key=value,key=value` as a dict; a piece without '=' continues the previous value (pit_stops=1,2,3)."""
    values: dict[str, str] = {}
    key = None
    for piece in str(text).split(","):
        if "=" in piece:
            key, value = (part.strip() for part in piece.split("=", 1))
            if not key:
                raise LifelongError(f"{setting}={text!r}: a piece has no name before '='")
            key = key.replace("-", "_")
            if key in values:
                raise LifelongError(f"{setting}={text!r} gives {key} twice: keep one")
            values[key] = value
        elif piece.strip():
            if key is None:
                raise LifelongError(f"{setting}={text!r} must be key=value,key=value")
            values[key] += "," + piece.strip()
    return values


class _NamedSettings(type):
    """Unknown setting names get the one-line error (with a suggestion) instead of Python's TypeError."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        for name in kwargs:
            if name not in SETTINGS and name != "hparams":
                raise unknown_name("setting", name, [*SETTINGS, "hparams"])
        return super().__call__(*args, **kwargs)


@dataclass
class RunConfig(metaclass=_NamedSettings):
    """Settings of one run plus the strategy's hyperparameters (`hparams`)."""

    scenario: str = "split-fashion-mnist"
    strategy: str = "naive"
    seed: int = 0
    experiences: int = 0
    scenario_params: str = ""
    class_order: str = ""
    shuffle_classes: bool = False
    model: str = "auto"
    model_params: str = ""
    augment: bool = True
    hidden: str = "256,256"
    optimizer: str = "sgd"
    optimizer_params: str = ""
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 1
    online_iter: int = 1
    eval_every_samples: int = 1000
    output_mask: str = "none"
    precision: str = "32"
    linear_kernel: str = "auto"
    device: str = "auto"
    threads: int = 1
    checkpoint_every: int = 500
    eval_every: int = 0
    eval_subsample: int = 0
    eval_background: bool = True
    data_dir: str = ""
    schedule: str = ""
    schedule_mode: str = "continue"
    schedule_params: str = ""
    record_grad_norms: bool = False
    infinite_continue: str = "pre-anneal"
    branch_every_experience: bool = False
    branch_steps: int = 0
    branch_shape: str = "linear"
    branch_min_lr: float = 0.0
    hparams: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every setting is checked when the config is built (Python API, flags, YAML or a stored run alike)."""
        for name, param in SETTINGS.items():
            setattr(self, name, param.coerce(name, getattr(self, name)))
        if not isinstance(self.hparams, dict) or not all(isinstance(k, str) for k in self.hparams):
            raise LifelongError(f"hparams={self.hparams!r} must be a mapping of hyperparameter names to values")
        self.optimizer_kwargs()
        self.class_order_list()
        self.hidden_sizes()
        check_device(self.device)
        self.check_schedule()
        self.check_combinations()
        self.check_names()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Validate `values` (from flags, YAML or a stored run): unknown names get a suggestion."""
        values = dict(values)
        hparams = values.pop("hparams", None) or {}
        for name in values:
            if name not in SETTINGS:
                raise unknown_name("setting", name, [*SETTINGS, "hparams"])
        return cls(**values, hparams=hparams)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, **changes: Any) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **changes})

    def check_names(self) -> None:
        """The scenario, model and strategy exist and the strategy's hyperparameters are valid."""
        from lifelong.data.scenarios import convert_parameters, parse_scenario
        from lifelong.models.backbones import MODELS
        from lifelong.strategies import make_strategy

        convert_parameters(parse_scenario(self.scenario)[0], parse_key_values("scenario_params",
                                                                              self.scenario_params))
        if self.model != "auto":
            self.model_kwargs(MODELS.get(self.model))
        make_strategy(self.strategy, self.hparams)

    def model_kwargs(self, factory: Any, name: str | None = None) -> dict[str, Any]:
        """Keyword arguments of the backbone `factory`: --hidden for the MLP, then `model_params`, typed."""
        from lifelong.arguments import typed_arguments

        name = name or self.model
        base = {"hidden": self.hidden_sizes()} if name == "mlp" else {}
        given = typed_arguments(factory, parse_key_values("model_params", self.model_params),
                                f"parameter of model {name}", ("input_shape", "num_classes"))
        return {**base, **given}

    def build_model(self, input_shape: tuple[int, ...], num_classes: int, default_model: str = "") -> Any:
        """The configured backbone for inputs of `input_shape`; `auto` takes the dataset's `default_model`."""
        from lifelong.models.backbones import MODELS, make_model

        name = self.model if self.model != "auto" else default_model or "mlp"
        return make_model(name, input_shape, num_classes, **self.model_kwargs(MODELS.get(name), name))

    def optimizer_kwargs(self) -> dict[str, Any]:
        """`optimizer_params` as keyword arguments of the optimizer (checked against its signature)."""
        from lifelong.training.optimizers import parse_optimizer_params

        return parse_optimizer_params(self.optimizer_params, self.optimizer)

    def class_order_list(self) -> list[int] | None:
        if not self.class_order:
            return None
        try:
            return [int(c) for c in str(self.class_order).split(",") if c.strip()]
        except ValueError:
            raise LifelongError(f"class_order={self.class_order!r} must be comma-separated integers") from None

    def hidden_sizes(self) -> list[int]:
        try:
            sizes = [int(h) for h in str(self.hidden).split(",") if h.strip()]
        except ValueError:
            raise LifelongError(f"hidden={self.hidden!r} must be comma-separated integers") from None
        if any(h < 1 for h in sizes):
            raise LifelongError(f"hidden={self.hidden!r}: every layer needs at least 1 unit")
        if any(h > MAX_HIDDEN for h in sizes):
            raise LifelongError(f"hidden={self.hidden!r}: a layer may have at most {MAX_HIDDEN} units")
        return sizes

    @property
    def schedulefree(self) -> bool:
        return self.optimizer.endswith("-schedulefree")

    def schedule_values(self) -> dict[str, str]:
        """`schedule_params` as a dict; a piece without '=' continues the previous value (pit_stops=1,2,3)."""
        return parse_key_values("schedule_params", self.schedule_params)

    def make_stream(self, dataset: Any = None) -> Any:
        """The stream this run trains on: the scenario built on its dataset (or on `dataset`, a user's)."""
        from lifelong.data.scenarios import make_stream

        return make_stream(self.scenario, self.experiences or None, self.class_order_list(), self.seed,
                           self.shuffle_classes, self.data_dir or None, dataset=dataset,
                           params=parse_key_values("scenario_params", self.scenario_params))

    def build_schedule(self) -> Schedule:
        """The schedule named by `schedule` ('' = constant at `lr`), its peak defaulting to `lr`; unbound."""
        name = self.schedule or "constant"
        values = self.schedule_values()
        if self.schedule == "" and values:
            raise LifelongError("schedule_params is set but schedule is empty: name a schedule (--schedule)")
        if "peak" in SCHEDULES.get(name).params and "peak" not in values:
            values["peak"] = str(self.lr)
        return make_schedule(name, **values)

    def check_schedule(self) -> None:
        """Schedule name, parameters, mode and branch settings fit together (one-line errors)."""
        schedule = self.build_schedule()
        if getattr(schedule, "peak", None) == 0:
            raise LifelongError(f"schedule {self.schedule or 'constant'} with peak=0 would train at rate 0 "
                                "throughout: give a positive peak (it defaults to --lr)")
        if self.schedule_mode == "infinite" and not isinstance(schedule, Infinite):
            raise LifelongError(f"schedule_mode='infinite' needs schedule='infinite', not {self.schedule!r}")
        if self.schedulefree and self.schedule not in ("", "constant"):
            raise LifelongError(f"optimizer={self.optimizer!r} replaces the schedule: use schedule='' or "
                                f"'constant' (its warmup becomes the optimizer's warmup), not {self.schedule!r}")
        if self.branch_shape in NEEDS_POSITIVE_FLOOR and self.branch_min_lr <= 0:
            raise LifelongError(f"branch_min_lr={self.branch_min_lr:g} must be > 0 with "
                                f"branch_shape={self.branch_shape} (it decays geometrically)")


    def check_combinations(self) -> None:
        """Refuse a setting that another makes meaningless, rather than ignore it silently. Only values other
        than the default can be told apart from "not given", so a default is never refused."""
        if self.class_order and self.shuffle_classes:
            raise LifelongError("class_order fixes the class order and shuffle_classes would shuffle it: give one")
        if self.momentum != SETTINGS["momentum"].default and self.optimizer not in ("sgd", "sgd-schedulefree"):
            raise LifelongError(f"momentum={self.momentum:g} applies to sgd only; optimizer {self.optimizer} takes "
                                "its own (e.g. betas=(0.8,0.999) or momentum=0.5) in optimizer_params")
        if self.schedule == "" and self.schedule_mode != SETTINGS["schedule_mode"].default:
            raise LifelongError(f"schedule_mode={self.schedule_mode} has no effect without a schedule (the rate is "
                                "the constant lr): name one with schedule (--schedule)")
        if self.schedule_mode != "infinite" and self.infinite_continue != SETTINGS["infinite_continue"].default:
            raise LifelongError(f"infinite_continue={self.infinite_continue} applies to schedule_mode=infinite only")
        if not self.branch_every_experience:
            for name in ("branch_steps", "branch_shape", "branch_min_lr"):
                if getattr(self, name) != SETTINGS[name].default:
                    raise LifelongError(f"{name}={getattr(self, name)} applies to the decay branches only: add "
                                        "branch_every_experience (--branch-every-experience)")


def check_device(name: str) -> str:
    """`name` is auto, cpu, cuda or cuda:N (whether CUDA is present is checked when the run starts)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", name):
        raise LifelongError(f"device={name!r} is not supported: allowed auto, cpu, cuda or cuda:N")
    return name


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a flat dict of settings (strategy hyperparameters under `hparams`).

    The file must be UTF-8 text of at most 1 MiB holding a mapping of setting names; `hparams`, when given,
    a mapping of hyperparameter names. Anything else is one clear error."""
    import yaml

    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise LifelongError(f"cannot read config file {path}: {err.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise LifelongError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; is it a settings file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LifelongError(f"config file {path} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise LifelongError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise LifelongError(f"config file {path} nests too deeply") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise LifelongError(f"config file {path} must hold a mapping of settings (name: value)")
    for key in data:
        if not isinstance(key, str):
            raise LifelongError(f"config file {path}: setting name {key!r} is not a string (quote it, or use a "
                                "setting name from `lifelong run --help`)")
    hparams = data.get("hparams")
    if hparams is not None and (not isinstance(hparams, dict) or not all(isinstance(k, str) for k in hparams)):
        raise LifelongError(f"config file {path}: hparams must be a mapping of hyperparameter names to values, "
                            f"not {hparams!r}")
    return {k.replace("-", "_"): v for k, v in data.items()}
