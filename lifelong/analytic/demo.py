"""`lifelong analytic-demo`: a preset of `lifelong compare` (the analytic learners against SGD baselines).

Every method is a strategy on the one engine; the preset only chooses the scenario, the model and the
analytic strategies' feature settings:

* fashion-mnist: `split-fashion-mnist` with the `cnn` model; the analytic learners (and nothing else) train it
  by SGD on the first experience (`base_experiences=1`), then freeze it and learn in closed form.
* fortunes: `split-fortunes-minilm` (MiniLM sentence embeddings of 10 fortune topics, see the dataset
  `fortunes-minilm`) with a linear model (`hidden=''`, Adam); the analytic learners see the embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lifelong.errors import LifelongError

METHODS = ("nmc", "acil", "ds-al", "er", "naive", "joint", "slca")


@dataclass(frozen=True)
class Preset:
    settings: dict[str, Any]  # run settings (flags given on the command line win)
    analytic: dict[str, Any] = field(default_factory=dict)  # hyperparameters of the analytic strategies


PRESETS = {
    "fashion-mnist": Preset({"scenario": "split-fashion-mnist", "model": "cnn"}, {"base_experiences": 1}),
    "fortunes": Preset({"scenario": "split-fortunes-minilm", "model": "mlp", "hidden": "", "optimizer": "adam",
                        "epochs": 10, "batch_size": 64}, {"features": "input"}),
}


def strategy_hparams(strategies: list[str], preset: Preset) -> dict[str, dict[str, Any]]:
    """The preset's analytic hyperparameters for the strategies that are analytic learners."""
    from lifelong.strategies import STRATEGIES
    from lifelong.strategies.analytic import AnalyticStrategy

    out = {}
    for spec in strategies:
        parts = [STRATEGIES.get(name.strip()) for name in spec.split("+")]
        analytic = [p for p in parts if issubclass(p, AnalyticStrategy)]
        if analytic:
            prefix = f"{analytic[0].name}." if len(parts) > 1 else ""
            out[spec] = {prefix + k: v for k, v in preset.analytic.items()}
    return out


def preset(dataset: str) -> Preset:
    if dataset not in PRESETS:
        raise LifelongError(f"analytic-demo has no preset for {dataset!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[dataset]
