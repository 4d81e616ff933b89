"""oneDNN's linear layers (lifelong.training.kernels): the same products as F.linear to float32 rounding, gradients
included; used only where it applies; the engine's runs with it are deterministic and close to torch's kernel."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.training import kernels
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine
from lifelong.training.kernels import OneDNNLinear, linear_kernel, onednn_available

pytestmark = pytest.mark.skipif(not onednn_available(), reason="oneDNN's linear operator is not in this build")


def leaves(*tensors, grad=True):
    return [None if t is None else t.detach().clone().requires_grad_(grad) for t in tensors]


def reference(x, w, b, g):
    """Output and gradients in float64: an independent computation of y = x W^T + b and its backward."""
    x64, w64 = x.double(), w.double()
    y = x64 @ w64.t() + (0 if b is None else b.double())
    g64 = g.double().reshape(-1, w.shape[0])
    dx = (g64 @ w64).reshape(x.shape)
    dw = g64.t() @ x64.reshape(-1, w.shape[1])
    db = None if b is None else g64.sum(0)
    return y, dx, dw, db


@pytest.mark.parametrize("shape,bias,contiguous", [((32, 784), True, True), ((4, 16, 256), False, True),
                                                   ((64, 256), True, False)])
def test_forward_and_backward_equal_the_float64_products(shape, bias, contiguous):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    w = torch.randn(256, shape[-1]) if contiguous else torch.randn(shape[-1], 256).t()
    b = torch.randn(256) if bias else None
    xs, ws, bs = leaves(x, w, b)
    y = OneDNNLinear.apply(xs, ws, bs)
    g = torch.randn_like(y)
    y.backward(g)
    want = reference(x, w, b, g)
    got = (y, xs.grad, ws.grad, None if b is None else bs.grad)
    for a, r in zip(got, want, strict=True):
        if r is None:
            assert a is None
            continue
        assert a.shape == r.shape
        assert (a.double() - r).abs().max() <= 2e-6 * r.abs().max()
    # and to torch's own kernel within the same float32 rounding
    xt, wt, bt = leaves(x, w, b)
    assert torch.allclose(F.linear(xt, wt, bt), y, rtol=1e-5, atol=1e-4)


def test_second_derivatives_are_exact():
    """Under create_graph the backward is differentiable: a gradient penalty's gradient equals torch's."""
    torch.manual_seed(1)
    x, w, b = torch.randn(64, 256), torch.randn(256, 256), torch.randn(256)
    results = []
    for f in (F.linear, OneDNNLinear.apply):
        xs, ws, bs = leaves(x, w, b)
        (gx,) = torch.autograd.grad(f(xs, ws, bs).pow(2).sum(), xs, create_graph=True)
        gx.pow(2).sum().backward()
        results.append((gx.detach(), ws.grad))
    for plain, fast in zip(results[0], results[1], strict=True):
        assert (plain - fast).abs().max() <= 1e-5 * plain.abs().max()


def calls(monkeypatch):
    counted = {"n": 0}
    real = kernels._linear

    def counting(*args):
        counted["n"] += 1
        return real(*args)

    monkeypatch.setattr(kernels, "_linear", counting)
    return counted


def model():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def test_the_context_routes_only_large_float32_cpu_products(monkeypatch):
    torch.manual_seed(2)
    net = model()
    mode = linear_kernel("auto", torch.device("cpu"), net, 64)
    counted = calls(monkeypatch)
    x = torch.randn(64, 784)
    with mode():
        y = net[0](x)
        assert counted["n"] == 1
        small = net[2](torch.randn(64, 256))  # 64 x 256 x 10 multiply-adds: torch's kernel is faster
        few = net[0](x[:32])  # 32 rows: slower inside a training step
        dbl = F.linear(x.double(), net[0].weight.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cast = net[0](x)
        per_sample = torch.func.vmap(net[0])(x)
    assert counted["n"] == 1
    assert type(y.grad_fn).__name__ == "OneDNNLinearBackward"
    assert type(small.grad_fn).__name__ == "AddmmBackward0" and type(few.grad_fn).__name__ == "AddmmBackward0"
    assert dbl.dtype == torch.float64 and cast.dtype == torch.bfloat16
    assert torch.allclose(per_sample, y, rtol=1e-5, atol=1e-4)
    assert linear_kernel("torch", torch.device("cpu"), net, 64) is not mode
    assert linear_kernel("auto", torch.device("cpu"), net, 32) is not mode
    assert linear_kernel("auto", torch.device("cpu"), nn.Sequential(nn.Linear(16, 8)), 64) is not mode
    assert linear_kernel("auto", torch.device("meta"), net, 64) is not mode


def test_inference_mode_and_no_grad_forwards_match():
    torch.manual_seed(3)
    net = model().eval()
    x = torch.randn(500, 784)
    mode = linear_kernel("auto", torch.device("cpu"), net, len(x))
    with torch.inference_mode():
        plain = net(x)
        with mode():
            fast = net(x)
    assert torch.allclose(plain, fast, rtol=1e-5, atol=1e-4)


def test_engine_runs_use_it_by_default_deterministically_and_close_to_torch(monkeypatch):
    counted = calls(monkeypatch)
    cfg = RunConfig(scenario="split-digits", strategy="er", seed=0, hidden="512", threads=1)
    first = Engine(cfg).run()
    used = counted["n"]
    again = Engine(cfg).run()
    plain = Engine(cfg.with_overrides(linear_kernel="torch")).run()
    assert used > 0 and counted["n"] == 2 * used  # the torch run made no oneDNN call
    assert first["accuracy_matrix"] == again["accuracy_matrix"]
    assert abs(first["final_accuracy"] - plain["final_accuracy"]) < 0.05
