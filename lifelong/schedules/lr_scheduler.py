"""ScheduleLR: any schedule (an object with `lr(step)`) as a standard torch LRScheduler, for any optimizer."""

from __future__ import annotations

from typing import Any, Protocol

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class RateFunction(Protocol):
    """Anything with a pure `lr(step) -> float`: a Schedule, or a StreamSchedule over global steps."""

    def lr(self, step: int) -> float: ...


class ScheduleLR(LRScheduler):
    """Sets every param group's lr to the absolute rate schedule.lr(step) (times its optional "lr_scale").

    The optimizer's own per-group lr (torch's base_lrs / "initial_lr") is ignored and overwritten: the
    schedule gives absolute rates so that the plotted curve is exactly what the optimizer uses. Give a group a
    different rate with e.g. {"params": head, "lr_scale": 10.0}. Step 0 is set at construction; call
    `step()` after each `optimizer.step()`. `state_dict()` holds only plain numbers (safe for
    torch.load(weights_only=True)); loading it restores the step and re-applies the rate exactly. The schedule
    itself is not stored: rebuild it from the run's config.
    """

    def __init__(self, optimizer: Optimizer, schedule: RateFunction, last_epoch: int = -1) -> None:
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    @property
    def step_index(self) -> int:
        """The step whose rate is currently set (0 before the first update)."""
        return self.last_epoch

    def get_lr(self) -> list[float]:  # type: ignore[override]
        rate = self.schedule.lr(self.last_epoch)
        return [rate * group.get("lr_scale", 1.0) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict["_step_count"])
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
