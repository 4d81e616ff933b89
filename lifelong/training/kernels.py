"""oneDNN for the large float32 linear layers of a CPU run: the same products as torch's default kernel, faster
on x86 CPUs where torch's BLAS (MKL) is slow, as on AMD's.

torch computes `F.linear` on the CPU with MKL's GEMM, whose fast paths are Intel-only: on an AMD EPYC (the
project's machine) oneDNN, the other GEMM library inside every x86 torch build (torch's convolutions already use
it), takes 0.45x MKL's time for a 4096-row evaluation chunk of a 784 x 256 layer and 0.5-0.75x for a training
step's products from 64 rows on (`benchmarks/bench_kernels.py`). Below that it loses: each oneDNN call has a
larger fixed cost and re-lays out the weight, which inside a step (weights out of cache) makes a 32-row SGD step
of the default MLP 1.13x slower although its products alone are faster. So a product goes to oneDNN only from
`MIN_ROWS` rows and `MIN_MACS` multiply-adds (rows x inputs x outputs) on.

`linear_kernel(...)` is the context the engine opens around the model's forward passes (training and
evaluation, and a teacher's targets through `Context.forward`): a `TorchFunctionMode` that sends each
qualifying `F.linear` call (every `nn.Linear`, and a user's module calling `F.linear`) to oneDNN, through
`OneDNNLinear` when gradients are needed (its backward computes the input and weight gradients with oneDNN too).
Anything else runs as torch runs it: CUDA, other dtypes, autocast, tensor subclasses, `torch.func` transforms
(stacked runs, per-sample gradients), and every operation outside those forward passes.

Rounding: oneDNN sums the products in another order than MKL, so a layer's output agrees with `F.linear` to
float32 rounding (relative ~1e-6; tests/test_kernels.py), not bit for bit; a run is still deterministic and
resumes bit-identically (the choice depends only on the shapes). `linear_kernel="torch"` in the run config
gives back torch's kernel everywhere.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

MIN_MACS = 1 << 20  # rows x in x out from which oneDNN beats MKL on the measured shapes (bench_kernels.py)
MIN_ROWS = 64  # rows from which it gains inside a training step (bench_kernels.py, part 2)


def onednn_available() -> bool:
    """oneDNN's linear operator is in this torch build and the CPU is x86-64 (elsewhere torch's BLAS and
    oneDNN are other libraries, unmeasured)."""
    return (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
            and _linear is not None)


_linear = torch.ops.mkldnn._linear_pointwise if hasattr(torch.ops.mkldnn, "_linear_pointwise") else None


class OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b by oneDNN; backward: dx = g W and dW = g^T x by oneDNN where the product reaches MIN_MACS
    (else torch's mm), db = the sum of g's rows. Under `create_graph` the backward uses torch's differentiable
    products, so higher derivatives stay exact. Lean on purpose: its Python is part of every step."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        return _linear(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        flat = grad.dim() == 2
        g = grad if flat else grad.reshape(-1, grad.shape[-1])
        large = g.shape[0] * weight.shape[0] * weight.shape[1] >= MIN_MACS and not torch.is_grad_enabled()
        dx = dw = None
        if need_x:
            dx = _linear(g, weight.t(), None, "none", [], "") if large else g.mm(weight)
            dx = dx if flat else dx.reshape(x.shape)
        if need_w:
            rows = x if flat else x.reshape(-1, x.shape[-1])
            dw = _linear(g.t(), rows.t(), None, "none", [], "") if large else g.t().mm(rows)
        return dx, dw, g.sum(0) if need_b else None


def _cpu_autocast_query() -> Callable[[], bool]:
    try:
        torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled
    return lambda: torch.is_autocast_enabled("cpu")


_autocast_on = _cpu_autocast_query()
_transformed: Callable[[], bool] = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


def _plain(t: Any) -> bool:
    return t is None or (type(t) in (Tensor, nn.Parameter) and t.dtype == torch.float32 and t.device.type == "cpu"
                         and t.layout == torch.strided)


def takes(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether `F.linear(x, weight, bias)` goes to oneDNN: plain float32 CPU tensors of matching sizes, at
    least MIN_ROWS rows and MIN_MACS multiply-adds, no autocast and no torch.func transform around it."""
    return (isinstance(x, Tensor) and isinstance(weight, Tensor) and _plain(x) and _plain(weight) and _plain(bias)
            and x.dim() >= 2 and weight.dim() == 2
            and x.shape[-1] == weight.shape[1] and (bias is None or bias.shape == weight.shape[:1])
            and x.numel() >= MIN_ROWS * weight.shape[1] and x.numel() * weight.shape[0] >= MIN_MACS
            and not _autocast_on() and not _transformed())


class _OneDNNLinearMode(TorchFunctionMode):
    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            x = args[0] if args else kwargs.get("input")
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if takes(x, weight, bias):
                if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                                or (bias is not None and bias.requires_grad)):
                    return OneDNNLinear.apply(x, weight, bias)
                return _linear(x, weight, bias, "none", [], "")
        return func(*args, **kwargs)


def gains(model: nn.Module, rows: int) -> bool:
    """Whether some linear layer of `model` goes to oneDNN with `rows` rows (else the mode's ~1 us per
    operation of the forward would buy nothing)."""
    return rows >= MIN_ROWS and any(isinstance(m, nn.Linear) and rows * m.in_features * m.out_features >= MIN_MACS
                                    for m in model.modules())


def linear_kernel(setting: str, device: torch.device, model: nn.Module,
                  rows: int) -> Callable[[], contextlib.AbstractContextManager]:
    """The context to open around `model`'s forward passes of about `rows` rows: oneDNN's linear layers
    (`setting` "auto", on a CPU that has them, when a layer gains), else nothing."""
    if setting == "auto" and device.type == "cpu" and onednn_available() and gains(model, rows):
        return _OneDNNLinearMode
    return contextlib.nullcontext
