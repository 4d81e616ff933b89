"""Data-parallel classification runs: `torchrun --nproc_per_node=N -m lifelong run ...`.

Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment, WORLD_SIZE > 1), a run joins a process
group (gloo on the CPU, NCCL on CUDA, one GPU per local rank) and trains ONE run data-parallel. Without that
environment nothing here runs: a single process trains exactly as before, with no new per-step cost (the
learner's `step` is replaced by the sharded one only when the world has more than one process).

Design: one global replay buffer replicated by identical seeded updates.

- Every rank builds the full global batch of every step: the same new rows (the data order is a function of the
  seed) and the same replayed rows (the strategy draws them from the engine's generator, seeded and checkpointed
  alike on every rank). Strategies therefore keep identical state on every rank without any communication:
  buffers, stored logits, old models, counters.
- Each rank forwards only its contiguous shard of the batch's rows (`shard`: ceil(n / N) rows per rank, the
  last ranks fewer or none). The shard logits are all-gathered with autograd (`gather_rows`: its
  backward all-reduces the gradient of the gathered logits and keeps the rank's rows), so every rank holds the
  same full `Outputs`: strategies'
  `loss`, `penalty`, `before_step` and `after_step` see the full batch and full outputs, identical everywhere.
- Every rank computes the same objective L = loss + penalty on the full outputs and backpropagates L / N; the
  parameter gradients are then all-reduced (SUM), in one flat buffer (`all_reduce_gradients`).

Why the gradient equals the one-process gradient. Write out_r for the logits of shard r (computed on rank r
only) and let L depend on θ both through the outputs and directly (a penalty on the weights, or a strategy's
own forward pass):

    dL/dθ = Σ_r (∂L/∂out_r) · (∂out_r/∂θ) + ∂L/∂θ|direct.

On rank k the backward of L / N reaches the gathered outputs as (1/N) ∂L/∂out (every row). The gather's
backward sums these over the N ranks and rank r keeps its rows, so rank r's shard receives
Σ_k (1/N) ∂L/∂out_r = ∂L/∂out_r (every rank computed the same L), and rank r's parameter gradient is

    g_r = (∂L/∂out_r) · (∂out_r/∂θ) + (1/N) ∂L/∂θ|direct.

Summing over ranks: Σ_r g_r = Σ_r (∂L/∂out_r)(∂out_r/∂θ) + ∂L/∂θ|direct = dL/dθ, up to the order of
floating-point summation (and the row blocking of the shard's matrix products). The all-reduce gives every
rank the same sum, so every rank takes the same optimizer step and the weights stay identical
(tests/test_ddp.py checks the gradient against one process and the final weights of the ranks).

Evaluation is done once: the evaluator splits each evaluated set's test rows across the ranks and all-reduces the
hit counts, so every rank gets the same row of the accuracy matrix. Online streams: the prequential prediction
of each incoming batch is computed on every rank (identical, no communication), anytime evaluations are split.
Only rank 0 writes the run store, checkpoints, artifacts, progress and loggers; a new run's directory is chosen
by rank 0 and broadcast; on resume every rank loads the same checkpoint. The weights are broadcast from rank 0
once when training starts, so a user's model built differently per process starts from rank 0's weights.

Refused, in one line: strategies that need the task gradient on its own (`separate_gradients`: GEM, A-GEM,
...), since the sharded backward gives only the total; models with BatchNorm (each shard would normalise with
its own batch statistics) and models with dropout (each rank would draw its masks from its own RNG for its own
rows, not the one-process masks, and ranks forwarding different row counts would then consume their global RNG
differently). Continual evaluation (`eval_every`) runs on every rank on the full probe (identical results).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import LifelongError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether the run is data-parallel (more than one process)."""
        return self.size > 1

    @property
    def main(self) -> bool:
        """Whether this process writes (the run store, checkpoints, progress)."""
        return self.rank == 0


SINGLE = World()


def launched() -> bool:
    """Whether torchrun started this process as one of several (WORLD_SIZE > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def main_process() -> bool:
    """Whether this process prints and writes for the run: always in one process, rank 0 under torchrun."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def join(device: torch.device) -> tuple[World, torch.device]:
    """This process's `World` and the device it trains on; joins the process group (gloo on the CPU, NCCL on
    CUDA) when torchrun launched several processes and no group exists yet. CUDA: one GPU per local rank."""
    if not launched():
        return SINGLE, device
    from lifelong.lm.train import _dist_env  # the LM trainer's reading of torchrun's environment (imported late:
    # a single-process run does not pay for the LM modules)

    rank, size, local_rank = _dist_env()
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise LifelongError(f"{size} processes on this machine but {count} CUDA devices: give "
                                f"--nproc_per_node={count} or fewer, or device=cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local_rank), device


@contextlib.contextmanager
def session(device_name: str) -> Iterator[World]:
    """The process group for one run (a no-op in a single process): joined on entry, left on exit if it was
    joined here."""
    own = launched() and not torch.distributed.is_initialized()
    if launched():
        from lifelong.training.engine import pick_device

        world, _ = join(pick_device(device_name))
    else:
        world = SINGLE
    finished = False
    try:
        yield world
        finished = True
    finally:
        if own and torch.distributed.is_initialized():
            if finished:  # every rank reaches the end before any leaves the group (gloo aborts a rank left alone)
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's `obj` on every rank (e.g. the run directory it chose)."""
    if not world.active:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def count_true(flag: bool, world: World, device: torch.device) -> int:
    """On how many ranks `flag` holds (every rank gets the count; also a barrier)."""
    if not world.active:
        return int(flag)
    t = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(t)
    return int(t)


def check_model(model: nn.Module, strategy_name: str, separate_gradients: bool, world: World) -> None:
    """Refuse, in one line, what data-parallel training cannot match to one process (see the module's notes)."""
    if not world.active:
        return
    if separate_gradients:
        raise LifelongError(f"{strategy_name} needs the task gradient on its own, which data-parallel training "
                            "(sharded backward, one all-reduce of the total) does not give: run it in one process")
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise LifelongError(f"the model has BatchNorm ({name or type(m).__name__}), whose statistics would "
                                "differ between the processes' shards: run it in one process or use a model "
                                "without BatchNorm")
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            raise LifelongError(f"the model has dropout ({name or type(m).__name__}, p={m.p}), whose masks would "
                                "be drawn per process, not as in one process: run it in one process or set the "
                                "dropout to 0")


def shard(n: int, world: World, rank: int | None = None) -> tuple[int, int]:
    """Rows [lo, hi) of `n` that `rank` (default: this process) handles: contiguous blocks of ceil(n / size)."""
    per = -(-n // world.size)
    lo = min(n, (world.rank if rank is None else rank) * per)
    return lo, min(n, lo + per)


class _GatherRows(torch.autograd.Function):
    """Forward: every rank's shard of `n` rows, in rank order (an all-gather of shards padded to one size).
    Backward: the gradient of the gathered rows summed over the ranks (an all-reduce), this rank's rows kept."""

    @staticmethod
    def forward(ctx: Any, local: Tensor, n: int, rank: int, size: int) -> Tensor:  # type: ignore[override]
        world = World(rank, size)
        per = -(-n // size)
        padded = local.new_zeros((per, *local.shape[1:]))
        padded[:len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(size)]
        torch.distributed.all_gather(parts, padded)
        ctx.rows = shard(n, world)
        return torch.cat([p[:hi - lo] for p, (lo, hi) in zip(parts, (shard(n, world, r) for r in range(size)),
                                                              strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        total = grad.contiguous().clone()
        torch.distributed.all_reduce(total)
        lo, hi = ctx.rows
        return total[lo:hi], None, None, None


def gather_rows(local: Tensor, n: int, world: World) -> Tensor:
    """The `n` rows of every rank's shard (`shard`), in rank order, differentiable: in the backward, each
    rank's shard gets the sum over the ranks of the gradient each computed for it."""
    return _GatherRows.apply(local, n, world.rank, world.size)


def all_reduce_gradients(params: list[nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks, in one flat buffer per dtype. A parameter whose gradient
    is None on every rank stays None (as in one process); on some ranks only, the others count it as zero."""
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for dtype, group in by_dtype.items():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group]
                         + [torch.tensor([p.grad is not None for p in group], dtype=dtype, device=group[0].device)])
        torch.distributed.all_reduce(flat)
        start = 0
        for p, present in zip(group, flat[-len(group):].tolist(), strict=True):
            n = p.numel()
            if not present:
                p.grad = None
            elif p.grad is None:
                p.grad = flat[start:start + n].view_as(p).clone()
            else:
                p.grad.copy_(flat[start:start + n].view_as(p))
            start += n


def broadcast_module(model: nn.Module, world: World) -> None:
    """Rank 0's parameters and buffers on every rank."""
    if not world.active:
        return
    with torch.no_grad():
        for t in model.state_dict().values():
            if isinstance(t, Tensor):
                torch.distributed.broadcast(t, src=0)


def all_reduce_sum(t: Tensor, world: World) -> Tensor:
    """`t` summed over the ranks (in place; a no-op in one process)."""
    if world.active:
        torch.distributed.all_reduce(t)
    return t
