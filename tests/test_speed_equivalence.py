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
def test_engine_optimizers_equal_torch_single_tensor_step_bit_for_bit(name, cls, kw) -> None:
    cfg = RunConfig(optimizer=name, **kw)
    built = make_optimizer(cfg, [nn.Parameter(torch.zeros(2))])
    assert isinstance(built, cls) and built.param_groups[0]["foreach"] is True
    ours = train(lambda params: make_optimizer(cfg, params))
    reference = train(lambda params: cls(params, foreach=False, **kw))
    for a, b in zip(ours, reference, strict=True):
        assert torch.equal(a, b)


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
