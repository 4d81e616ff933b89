"""Optimizers by name: the built-in ones (sgd, adam, adamw, schedule-free) or any `torch.optim` class, with its
own arguments given as `optimizer_params` ("alpha=0.9,eps=1e-8")."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import torch

from lifelong.errors import LifelongError, unknown_name

BUILTIN = ("sgd", "adam", "adamw", "sgd-schedulefree", "adamw-schedulefree")
NEEDS_CLOSURE = ("lbfgs",)  # their step re-evaluates the loss: not a fit for a training loop of single steps
SPARSE_ONLY = ("sparseadam",)  # refuses every dense gradient, and every model here has dense parameters


def torch_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    """Every optimizer class in torch.optim, by lower-case name."""
    return {name.lower(): cls for name, cls in vars(torch.optim).items()
            if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer}


def resolve_optimizer(name: str) -> type[torch.optim.Optimizer] | None:
    """The torch.optim class for a non-built-in name (None for the built-in ones); one clear line if unknown.
    Names are lower case, like every name of the command line (RMSprop is `rmsprop`)."""
    key = str(name)
    if key in BUILTIN:
        return None
    if key in NEEDS_CLOSURE:
        raise LifelongError(f"optimizer={name!r} needs a closure that re-evaluates the loss in every step; "
                            "choose another optimizer")
    if key in SPARSE_ONLY:
        raise LifelongError(f"optimizer={name!r} takes only sparse gradients (nn.Embedding(sparse=True)) and fails "
                            "at the first step on any dense parameter: choose adam or another optimizer")
    found = torch_optimizers()
    if key not in found:
        raise unknown_name("optimizer", str(name), sorted(set(BUILTIN) | set(found) - set(NEEDS_CLOSURE)
                                                          - set(SPARSE_ONLY)))
    return found[key]


def accepted_arguments(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]


def parse_optimizer_params(text: str, name: str) -> dict[str, Any]:
    """`optimizer_params` as keyword arguments, checked against the optimizer's signature."""
    values: dict[str, Any] = {}
    pieces = [p.strip() for p in str(text).split(",") if p.strip()]
    merged: list[str] = []
    for piece in pieces:  # a tuple such as betas=(0.9,0.99) was split at its comma: join it back
        if merged and merged[-1].count("(") > merged[-1].count(")"):
            merged[-1] += "," + piece
        else:
            merged.append(piece)
    for piece in merged:
        key, eq, raw = piece.partition("=")
        if not eq or not key.strip():
            raise LifelongError(f"optimizer_params={text!r} must be key=value,key=value")
        raw = {"true": "True", "false": "False"}.get(raw.strip().lower(), raw.strip())
        try:
            values[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise LifelongError(f"optimizer_params: {key.strip()}={raw!r} is not a number, boolean or "
                                "tuple") from None
    cls = resolve_optimizer(name) or {"sgd": torch.optim.SGD, "adam": torch.optim.Adam,
                                       "adamw": torch.optim.AdamW}.get(str(name))
    allowed = accepted_arguments(cls) if cls is not None else None  # schedule-free: checked by the package
    for key in values:
        if key == "lr":
            raise LifelongError("optimizer_params: give the learning rate with lr (--lr), not here")
        if allowed is not None and key not in allowed:
            raise unknown_name(f"argument of {cls.__name__}", key, allowed)
    return values
