"""Issue 15's speed-ups change no number: each fast path against the plain computation it replaces."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from lifelong.strategies.base import Batch, Segment
from lifelong.strategies.buffers import ReservoirBuffer
from lifelong.training.config import RunConfig
from lifelong.training.learner import make_optimizer

OPTIMIZERS = [
    ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
    ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.0, "weight_decay": 0.0}),
    ("adam", torch.optim.Adam, {"lr": 1e-2, "weight_decay": 1e-3}),
    ("adamw", torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 1e-2}),
]


def train(make, steps: int = 12) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5))
    opt = make(list(model.parameters()))
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 20, generator=g), torch.randint(5, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(("name", "cls", "kw"), OPTIMIZERS)
def test_foreach_in_optimizer_params_equals_torch_single_tensor_step_bit_for_bit(name, cls, kw) -> None:
    cfg = RunConfig(optimizer=name, optimizer_params="foreach=True", **kw)
    built = make_optimizer(cfg, [nn.Parameter(torch.zeros(2))])
    assert isinstance(built, cls) and built.param_groups[0]["foreach"] is True
    assert not built.param_groups[0]["fused"]
    ours = train(lambda params: make_optimizer(cfg, params))
    reference = train(lambda params: cls(params, foreach=False, **kw))
    for a, b in zip(ours, reference, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("name", "cls", "kw"), OPTIMIZERS)
def test_engine_optimizers_take_the_fused_step_within_rounding_of_torch_single_tensor_step(name, cls, kw) -> None:
    cfg = RunConfig(optimizer=name, **kw)
    assert make_optimizer(cfg, [nn.Parameter(torch.zeros(2))]).param_groups[0]["fused"] is True
    eps = torch.finfo(torch.float32).eps
    for steps, ulps in ((1, 2), (12, 8)):  # within a few units in the last place of the largest weight
        ours = train(lambda params: make_optimizer(cfg, params), steps)
        reference = train(lambda params: cls(params, foreach=False, **kw), steps)
        for a, b in zip(ours, reference, strict=True):
            torch.testing.assert_close(a, b, rtol=0.0, atol=ulps * eps * b.abs().max().item())


@pytest.mark.parametrize(("text", "fused", "foreach"), [("", True, None), ("fused=false", False, True),
                                                        ("fused=True", True, None), ("foreach=False", None, False),
                                                        ("foreach=true", None, True)])
def test_optimizer_params_choose_the_step_kernel(text, fused, foreach) -> None:
    built = make_optimizer(RunConfig(optimizer_params=text), [nn.Parameter(torch.zeros(2))])
    assert (built.param_groups[0]["fused"], built.param_groups[0]["foreach"]) == (fused, foreach)


def test_float64_is_fused_and_a_torch_without_a_fused_kernel_for_the_device_falls_back_to_foreach(
        monkeypatch) -> None:
    import torch.optim.optimizer as torch_optimizer

    params = [nn.Parameter(torch.zeros(2, dtype=torch.float64))]
    assert make_optimizer(RunConfig(), params).param_groups[0]["fused"] is True
    monkeypatch.setattr(torch_optimizer, "_get_fused_kernels_supported_devices", lambda: ["cuda"])
    built = make_optimizer(RunConfig(), params)
    assert built.param_groups[0]["foreach"] is True and not built.param_groups[0]["fused"]


def test_a_sparse_gradient_takes_the_plain_step_under_the_fused_default() -> None:
    out = []
    for make in (lambda ps: make_optimizer(RunConfig(lr=0.1), ps),
                 lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False)):
        torch.manual_seed(0)
        table, dense = nn.Embedding(6, 3, sparse=True), nn.Linear(3, 2)
        opt = make([*table.parameters(), *dense.parameters()])
        for _ in range(3):
            opt.zero_grad()
            dense(table(torch.tensor([1, 4, 1]))).square().sum().backward()
            opt.step()
        out.append([p.detach().clone() for p in (*table.parameters(), *dense.parameters())])
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=0.0, atol=1e-6)


def fused_and_reference(make_state, steps: int = 2, dampening: float = 0.0) -> tuple[list[torch.Tensor],
                                                                                  list[torch.Tensor]]:
    """`steps` steps of fused SGD (through the engine) and of torch's single-tensor SGD on the same parameters,
    gradients and starting state (`make_state(params, optimizer)` sets it up)."""
    out = []
    fused = RunConfig(optimizer_params=f"fused=True,dampening={dampening}", momentum=0.9)
    for cfg in (fused, None):
        g = torch.Generator().manual_seed(3)
        whole = torch.randn(2, 6, 4, generator=g).mT.contiguous().mT  # stored [2, 4, 6]: views are not contiguous
        params = [nn.Parameter(torch.zeros(6, 4)), nn.Parameter(torch.zeros(3))]
        params[0].data, params[1].data = whole[1], torch.randn(3, generator=g)
        opt = make_optimizer(cfg, params) if cfg else torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=False,
                                                                     dampening=dampening)
        make_state(params, opt)
        for _ in range(steps):
            for p in params:
                grad = torch.randn(p.shape, generator=g)
                p.grad = grad.mT.contiguous().mT if p.dim() == 2 else grad
            opt.step()
        out.append([p.detach().clone() for p in params])
    return out[0], out[1]


def test_fused_step_with_a_checkpointed_buffer_of_another_layout_equals_the_plain_step() -> None:
    def load(params, opt):  # a checkpoint written by an unstacked run: contiguous buffers
        state = opt.state_dict()
        state["state"] = {i: {"momentum_buffer": torch.arange(float(p.numel())).view(p.shape) / 10}
                          for i, p in enumerate(params)}
        opt.load_state_dict(state)

    ours, reference = fused_and_reference(load)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0.0, atol=1e-6)  # torch's fused kernel alone mixes elements up


@pytest.mark.parametrize("dampening", [0.0, 0.3])  # 0: a zero buffer, exact; 0.3: the multi-tensor step
def test_fused_sgd_takes_a_parameter_joining_a_momentum_group_like_the_plain_step(dampening) -> None:
    def grown(params, opt):  # the model grew: the old parameter has a buffer, the new one none yet
        opt.state[params[0]]["momentum_buffer"] = torch.ones_like(params[0])

    for steps in (1, 2):
        ours, reference = fused_and_reference(grown, steps, dampening)
        for a, b in zip(ours, reference, strict=True):
            torch.testing.assert_close(a, b, rtol=0.0, atol=1e-6)


def test_engine_optimizer_state_round_trips_through_torch_classes() -> None:
    cfg = RunConfig(optimizer="adam", lr=1e-2)
    p = nn.Parameter(torch.ones(3))
    opt = make_optimizer(cfg, [p])
    p.grad = torch.ones(3)
    opt.step()
    plain = torch.optim.Adam([nn.Parameter(torch.ones(3))], lr=1e-2)
    plain.load_state_dict(opt.state_dict())
    assert torch.equal(plain.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt.load_state_dict(plain.state_dict())


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_optimizers_never_import_torch_dynamo() -> None:
    code = """
import sys, torch
from torch import nn
from lifelong.training.config import RunConfig
from lifelong.training.learner import make_optimizer
for name in ("sgd", "adam", "adamw"):
    p = nn.Parameter(torch.ones(3))
    opt = make_optimizer(RunConfig(optimizer=name, lr=0.1), [p])
    p.grad = torch.ones(3)
    opt.step(); opt.zero_grad(set_to_none=True); opt.load_state_dict(opt.state_dict())
print("torch._dynamo" in sys.modules)
"""
    assert run_python(code) == "False"


def test_importing_the_cli_loads_no_torch() -> None:
    assert run_python("import sys, lifelong.cli; print('torch' in sys.modules)") == "False"
    assert run_python("import lifelong; print(lifelong.RunConfig.__name__, callable(lifelong.run))") == "RunConfig True"


def test_batch_prepares_all_stored_segments_in_one_conversion() -> None:
    calls = []

    def prepare(raw: torch.Tensor) -> torch.Tensor:
        calls.append(len(raw))
        return raw.to(torch.float32).mul_(1 / 255 / 0.353).sub_(0.286 / 0.353)

    g = torch.Generator().manual_seed(0)
    raws = [torch.randint(256, (n, 7), generator=g, dtype=torch.uint8) for n in (5, 3, 4)]
    batch = Batch(Segment.stored(raws[0], prepare, torch.zeros(5, dtype=torch.long), scored=True), 0)
    batch.add("a", Segment.stored(raws[1], prepare, torch.ones(3, dtype=torch.long)))
    batch.add("b", Segment.stored(raws[2], prepare))
    x = batch.x
    assert calls == [12]
    separately = [prepare(r) for r in raws]
    assert torch.equal(x, torch.cat(separately))
    for (name, seg), alone in zip(batch, separately, strict=True):
        assert torch.equal(seg.x, alone), name
    out = batch.split(torch.arange(12.0).unsqueeze(1))
    assert out["a"].flatten().tolist() == [5.0, 6.0, 7.0] and len(batch["b"]) == 4


def test_batch_with_an_already_prepared_segment_stacks_inputs() -> None:
    prepare = lambda raw: raw.float() / 2  # noqa: E731
    first = Segment.stored(torch.tensor([[2], [4]], dtype=torch.uint8), prepare)
    assert first.x.tolist() == [[1.0], [2.0]]  # read early: already prepared
    batch = Batch(first, 0)
    batch.add("given", Segment(torch.tensor([[9.0]]), torch.tensor([1])))
    assert batch.x.tolist() == [[1.0], [2.0], [9.0]]


def test_segment_needs_inputs() -> None:
    from lifelong.errors import LifelongError

    with pytest.raises(LifelongError, match="needs its inputs"):
        Segment(None)


def reference_reservoir(capacity: int, seed: int, offers: list[int]) -> list[int]:
    """Algorithm R one sample at a time, as the buffer made its choices before the fast path."""
    import random

    rng, seen, slots = random.Random(seed), 0, []
    for _ in range(offers):
        slot = seen if seen < capacity else rng.randrange(seen + 1)
        slots.append(slot if slot < capacity else -1)
        seen += 1
    return slots


def test_reservoir_slots_match_one_by_one_algorithm_r_across_the_fill_boundary() -> None:
    buf = ReservoirBuffer(10, seed=7)
    got = []
    for n in (4, 4, 4, 7, 3):  # the third batch crosses the point where the memory fills
        slots = buf.slots_for(list(range(n)))
        buf.seen += n
        got += slots
    assert got == reference_reservoir(10, 7, 22)


def test_one_gather_for_two_draws_equals_two_samples() -> None:
    a, b = ReservoirBuffer(50, seed=3), ReservoirBuffer(50, seed=3)
    for buf in (a, b):
        buf.add(raw=torch.arange(80 * 2, dtype=torch.uint8).reshape(80, 2), y=torch.arange(80) % 7,
                logits=torch.arange(80.0).unsqueeze(1))
    first, second = a.draw(6), a.draw(6)
    both = a.take(first + second)
    one, two = b.sample(6), b.sample(6)
    for k in ("raw", "y", "logits"):
        assert torch.equal(both[k][:6], one[k]) and torch.equal(both[k][6:], two[k])


def test_evaluation_runs_the_model_in_inference_mode_and_custom_predictions_with_no_grad() -> None:
    from lifelong.training.engine import Engine

    modes = []
    engine = Engine(RunConfig(scenario="split-digits", strategy="naive", experiences=2))
    engine.learner.model.register_forward_hook(lambda m, i, o: modes.append(
        (torch.is_inference_mode_enabled(), torch.is_grad_enabled())))
    engine.evaluate()
    assert modes and all(m == (True, False) for m in modes)
    modes.clear()
    engine.evaluator.model_forward = False  # as for a strategy that overrides predict: no_grad only
    engine.evaluate()
    assert modes and all(m == (False, False) for m in modes)


def evaluations(monkeypatch, keep: int, times: int = 2, hook=None) -> tuple[list[list[float]], int]:
    """`times` end-of-run evaluations of an untrained run with KEEP_BYTES=`keep`, and how many chunks of
    stored test inputs were prepared for them."""
    from lifelong.training import evaluator
    from lifelong.training.engine import Engine

    monkeypatch.setattr(evaluator, "KEEP_BYTES", keep)
    engine = Engine(RunConfig(scenario="split-digits", strategy="naive", experiences=5))
    prepared = []
    plain = engine.learner.prepare
    engine.learner.prepare = lambda raw: prepared.append(len(raw)) or plain(raw)
    if hook is not None:
        engine.learner.model.register_forward_pre_hook(hook)
    return [engine.evaluate() for _ in range(times)], len(prepared)


def test_evaluation_prepares_the_test_inputs_once_and_scores_them_as_before(monkeypatch) -> None:
    kept, prepared = evaluations(monkeypatch, keep=2**30, times=3)
    fresh, prepared_fresh = evaluations(monkeypatch, keep=0, times=3)
    assert kept == fresh and kept[0] == kept[2]
    assert prepared == 5 and prepared_fresh == 15  # one chunk per experience: once, or once per evaluation


def test_a_model_that_changes_its_input_in_place_gets_freshly_prepared_inputs(monkeypatch) -> None:
    def negate(module, args):
        args[0].neg_()

    kept, prepared = evaluations(monkeypatch, keep=2**30, hook=negate)
    fresh, _ = evaluations(monkeypatch, keep=0, hook=negate)
    assert kept == fresh and prepared == 10


def test_step_hooks_and_the_profiler_range_still_run_around_the_engine_optimizers_step() -> None:
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.profiler import profile

    p = nn.Parameter(torch.ones(2))
    opt = make_optimizer(RunConfig(), [p])
    calls: list[str] = []
    opt.register_step_pre_hook(lambda *args: calls.append("pre"))
    handle = register_optimizer_step_post_hook(lambda *args: calls.append("global post"))
    try:
        p.grad = torch.ones(2)
        opt.step()
    finally:
        handle.remove()
    assert calls == ["pre", "global post"] and torch.equal(p.detach(), torch.full((2,), 0.99))
    plain = make_optimizer(RunConfig(), [p])
    with profile() as prof:
        p.grad = torch.ones(2)
        plain.step()
    assert "Optimizer.step#SGD.step" in {e.name for e in prof.events()}


def test_lwf_distils_consecutive_old_classes_through_a_slice_with_the_same_result(monkeypatch) -> None:
    from lifelong.strategies import lwf
    from lifelong.training.engine import Engine

    def run() -> tuple[list[list[float]], list[torch.Tensor], list]:
        engine = Engine(RunConfig(scenario="split-digits", strategy="lwf", experiences=5))
        result = engine.run()
        return (result["accuracy_matrix"], [p.detach() for p in engine.model.parameters()],
                lwf.head_columns(engine.strategy.heads))

    matrix, weights, columns = run()
    assert columns == [slice(0, 8)]  # the last experience distils classes 0-7
    assert lwf.head_columns([[0, 1, 2], [3, 5], [7]]) == [slice(0, 3), [3, 5], slice(7, 8)]
    monkeypatch.setattr(lwf, "head_columns", lambda heads: heads)  # index with the class lists, a gather
    plain_matrix, plain_weights, plain_columns = run()
    assert plain_columns == [list(range(8))]
    assert matrix == plain_matrix and all(torch.equal(a, b) for a, b in zip(weights, plain_weights, strict=True))
