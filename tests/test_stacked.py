"""Many runs at once (lifelong.training.stacked): a stack of K runs equals the K runs trained one by one.

The defining property is checked at two levels: one round (the vmapped forward and the single backward give
every member exactly the outputs, gradients and BatchNorm statistics of its own model alone) and whole runs
(accuracy matrices equal, final weights within float rounding, for strategies with memories, penalties and
old-model distillation), plus what a user meets: a member that diverges or needs its gradient alone, members
with other models, `compare --stack`, `tune --stack`, resuming a stacked run and stopping a stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import LifelongError
from lifelong.training import runner
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine
from lifelong.training.stacked import Stack, StackAborted, Stacked, stackable, train_together

ROOT = Path(__file__).resolve().parents[1]
WEIGHT_TOL = 1e-5  # observed: 0.0 to 2.1e-7 on split-digits (stacked Linear weights are stored transposed)


def config(strategy: str, seed: int, **extra: Any) -> RunConfig:
    return RunConfig.from_dict({"scenario": "split-digits", "strategy": strategy, "seed": seed, "threads": 1,
                                **extra})


def weights(engine: Engine) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in engine.model.parameters()])


def together(cfgs: list[RunConfig]) -> tuple[list[Any], list[Engine]]:
    engines: list[Engine] = []

    def build(cfg: RunConfig):
        def make() -> Engine:
            engines.append(Engine(cfg))
            return engines[-1]
        return make

    outcomes = train_together([build(c) for c in cfgs], runner.execute)
    engines.sort(key=lambda e: [c.seed for c in cfgs].index(e.cfg.seed))
    return outcomes, engines


@pytest.mark.parametrize("strategy", ["naive", "er", "derpp", "ewc", "lwf"])
def test_a_stack_equals_the_runs_one_by_one(strategy: str) -> None:
    cfgs = [config(strategy, s) for s in (0, 1, 2)]
    alone = [Engine(c) for c in cfgs]
    expected = [runner.execute(e) for e in alone]
    outcomes, stacked = together(cfgs)
    for want, got, a, b in zip(expected, outcomes, alone, stacked, strict=True):
        assert isinstance(got, dict), got
        assert got["accuracy_matrix"] == want["accuracy_matrix"]
        assert got["stacked_with"] == 3 and "stacked_with" not in want
        assert torch.allclose(weights(a), weights(b), rtol=0, atol=WEIGHT_TOL)
    stats = stacked[0].learner.stack.stats
    assert stats["batched_forwards"] == stats["rounds"] // 2 > 0  # every forward batched, none one by one
    assert stats["separate_forwards"] == 0 and not stats["not_batched"]
    assert stats["stacks_built"] == 1  # built once: the members' parameters stay views of it all run long


@pytest.mark.parametrize("strategy", ["hat", "packnet"])
def test_a_stack_of_strategies_with_forward_hooks_or_pruning_equals_the_runs_one_by_one(strategy: str) -> None:
    """HAT's gates are forward hooks: a batched forward through member 0's model ran member 0's gates on every
    member (accuracies off by up to 0.83); such members are forwarded one by one. PackNet prunes Linear weights
    in place, which the stack stores transposed (a RuntimeError from view(-1) before)."""
    cfgs = [config(strategy, s, experiences=5, hidden="32") for s in (0, 1)]
    expected = [runner.execute(Engine(c)) for c in cfgs]
    outcomes, stacked = together(cfgs)
    for want, got in zip(expected, outcomes, strict=True):
        assert isinstance(got, dict), got
        assert got["accuracy_matrix"] == want["accuracy_matrix"]
    if strategy == "hat":
        assert stacked[0].learner.stack.stats["separate_forwards"] > 0


class Tied(nn.Module):
    """One hidden layer registered under two names (shared parameters)."""

    def __init__(self, input_shape: Any, num_classes: int) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
        self.h = nn.Linear(16, 16)
        self.h2 = self.h
        self.out = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.h2(F.relu(self.h(F.relu(self.inp(x)))))))


def test_a_stack_of_models_with_shared_parameters_equals_the_runs_one_by_one() -> None:
    """The batched forward failed on a module used twice and left member 0's parameters swapped for batched
    tensors (its run failed with functorch's 'tensor may have escaped')."""
    cfgs = [config("naive", s, experiences=5) for s in (0, 1)]
    expected = [runner.execute(Engine(c, model=Tied)) for c in cfgs]
    engines: list[Engine] = []

    def build(cfg: RunConfig):
        def make() -> Engine:
            engines.append(Engine(cfg, model=Tied))
            return engines[-1]
        return make

    outcomes = train_together([build(c) for c in cfgs], runner.execute)
    for want, got in zip(expected, outcomes, strict=True):
        assert isinstance(got, dict), got
        assert got["accuracy_matrix"] == want["accuracy_matrix"]


class Small(nn.Module):
    def __init__(self, norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.norm = nn.BatchNorm2d(3) if norm else nn.Identity()
        self.head = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.norm(self.conv(x))).flatten(1))


class FakeLearner:
    """What a round reads from a learner: the model and the autocast context."""

    autocast_dtype = None

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def autocast(self) -> Any:
        import contextlib
        return contextlib.nullcontext()


@pytest.mark.parametrize("norm", [False, True])
def test_one_round_gives_each_member_its_own_outputs_gradients_and_statistics(norm: bool) -> None:
    torch.manual_seed(0)
    models = [Small(norm) for _ in range(3)]
    copies = [Small(norm) for _ in range(3)]
    for a, b in zip(models, copies, strict=True):
        b.load_state_dict(a.state_dict())
    xs = [torch.randn(5, 1, 8, 8) for _ in range(3)]
    ys = [torch.randint(0, 4, (5,)) for _ in range(3)]
    for m, x, y in zip(copies, xs, ys, strict=True):  # each alone, with a penalty on its own weights
        (F.cross_entropy(m(x), y) + 0.1 * m.head.weight.square().sum()).backward()
    stack = Stack(3)
    out = stack.forward_all({k: (FakeLearner(m), x) for k, (m, x) in enumerate(zip(models, xs, strict=True))})
    assert stack.stats["batched_forwards"] == 1
    objectives = {k: F.cross_entropy(out[k], ys[k]) + 0.1 * models[k].head.weight.square().sum() for k in range(3)}
    answers = stack.backward_all(objectives)
    assert answers == {0: None, 1: None, 2: None}
    for a, b in zip(models, copies, strict=True):
        for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-6), n
        for (n, s), t in zip(a.named_buffers(), b.buffers(), strict=True):
            assert torch.equal(s, t) if s.dtype == torch.long else torch.allclose(s, t, atol=1e-6), n
    if norm:  # the members' running statistics moved (and differ: their inputs differ)
        assert not torch.equal(models[0].norm.running_mean, models[1].norm.running_mean)
        assert int(models[0].norm.num_batches_tracked) == 1


class ItemCall(nn.Module):
    """A model vmap cannot batch (`.item()` on a batched tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * float(x.abs().max().item() > 0)


def test_a_model_vmap_cannot_batch_is_forwarded_one_by_one_with_a_warning() -> None:
    torch.manual_seed(0)
    models, xs = [ItemCall() for _ in range(2)], [torch.randn(3, 4) for _ in range(2)]
    stack = Stack(2)
    with pytest.warns(UserWarning, match="cannot batch this model"):
        out = stack.forward_all({k: (FakeLearner(m), x) for k, (m, x) in enumerate(zip(models, xs, strict=True))})
    for k in range(2):
        assert torch.equal(out[k], models[k](xs[k]))
    assert stack.stats["separate_forwards"] == 2 and stack.stats["not_batched"]


def test_members_parameters_are_views_of_the_stack_until_replaced() -> None:
    models = [Small() for _ in range(2)]
    group = Stacked(models)
    assert group.holds(models)
    with torch.no_grad():
        models[1].head.weight.add_(1.0)  # an optimizer step on a member's own parameter moves the stack
    assert torch.equal(group.params["head.weight"][1], models[1].head.weight)
    models[0].head = nn.Linear(3 * 6 * 6, 4)  # a strategy replaced a layer: the stack is rebuilt
    assert not group.holds(models)


def test_a_diverging_member_fails_alone() -> None:
    cfgs = [config("er", 0), config("er", 1, lr=1e12), config("er", 2)]
    outcomes, engines = together(cfgs)
    assert isinstance(outcomes[1], LifelongError) and "loss became" in str(outcomes[1])
    for k in (0, 2):
        alone = runner.execute(Engine(cfgs[k]))
        assert outcomes[k]["accuracy_matrix"] == alone["accuracy_matrix"]


def test_members_with_other_models_are_forwarded_one_by_one_and_still_equal() -> None:
    cfgs = [config("naive", 0), config("naive", 1, hidden=64)]
    outcomes, engines = together(cfgs)
    for cfg, got in zip(cfgs, outcomes, strict=True):
        assert got["accuracy_matrix"] == runner.execute(Engine(cfg))["accuracy_matrix"]
    stats = engines[0].learner.stack.stats
    assert stats["batched_forwards"] == 0 and stats["separate_forwards"] > 0


def test_strategies_needing_their_task_gradient_alone_are_refused_and_not_stacked() -> None:
    cfgs = [config("si", 0), config("si", 1)]
    outcomes, _ = together(cfgs)
    assert all(isinstance(o, LifelongError) and "without --stack" in str(o) for o in outcomes)
    assert not stackable(cfgs[0]) and stackable(config("er", 0)) and stackable(config("agem", 0))
    jobs = [(c, Path(f"/nonexistent/{c.strategy}-{c.seed}")) for c in
            [config("si", 0), config("si", 1), config("er", 0), config("er", 1), config("er", 2)]]
    assert runner.stack_groups(jobs, 2) == [[0], [1], [2, 3], [4]]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_a_bad_stack_size_is_one_line(bad: Any) -> None:
    with pytest.raises(LifelongError, match="stack="):
        runner.check_stack(bad)


def test_a_stopped_stack_ends_every_waiting_member() -> None:
    stack = Stack(2)
    caught: list[BaseException] = []

    def member() -> None:
        try:
            stack.forward(0, FakeLearner(Small()), torch.randn(2, 1, 8, 8))
        except BaseException as err:  # noqa: BLE001 - the test looks at it
            caught.append(err)

    t = threading.Thread(target=member)
    t.start()  # waits for member 1, which never comes
    stack.stop(RuntimeError("shutting down"))
    t.join(timeout=10)
    assert not t.is_alive() and isinstance(caught[0], StackAborted)


def test_a_stacked_member_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    cfg0, cfg1 = config("er", 0), config("er", 1)

    def stop_after_second(i: int, row: list[float]) -> None:
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg0, tmp_path / "a", on_experience=stop_after_second)
    jobs = [(0, cfg0.to_dict(), str(tmp_path / "a"), True), (1, cfg1.to_dict(), str(tmp_path / "b"), False)]
    results = runner.stacked_runs(jobs, None)
    assert results[0]["accuracy_matrix"] == runner.execute(Engine(cfg0))["accuracy_matrix"]
    assert results[1]["accuracy_matrix"] == runner.execute(Engine(cfg1))["accuracy_matrix"]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifelong", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_compare_with_stack_equals_compare_without(tmp_path: Path) -> None:
    common = ["compare", "--scenario", "split-digits", "--strategies", "naive,er,agem,si", "--seeds", "0,1",
              "--no-report", "--workers", "2"]
    plain = cli(*common, "--out", "plain", "--json", "plain.json", cwd=tmp_path)
    stacked = cli(*common, "--out", "stacked", "--json", "stacked.json", "--stack", "2", cwd=tmp_path)
    assert plain.returncode == 0 and stacked.returncode == 0, plain.stderr + stacked.stderr
    assert "up to 2 seeds at once" in stacked.stderr
    a = json.loads((tmp_path / "plain.json").read_text())["results"]
    b = json.loads((tmp_path / "stacked.json").read_text())["results"]
    assert [(r["strategy"], r["seed"]) for r in a] == [(r["strategy"], r["seed"]) for r in b]
    for x, y in zip(a, b, strict=True):
        assert x["accuracy_matrix"] == y["accuracy_matrix"], (x["strategy"], x["seed"])
    bad = cli(*common, "--out", "bad", "--stack", "0", cwd=tmp_path)
    assert bad.returncode != 0 and "stack=0 is out of range" in bad.stderr and "Traceback" not in bad.stderr


def test_tune_with_stack_counts_every_trial_and_adds_to_the_study(tmp_path: Path) -> None:
    common = ["tune", "--scenario", "split-digits", "--strategies", "er", "--trials", "3", "--workers", "1",
              "--stack", "3", "--store", "store", "--json"]
    first = cli(*common, "one.json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = cli(*common, "two.json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    one = json.loads((tmp_path / "one.json").read_text())["studies"][0]
    two = json.loads((tmp_path / "two.json").read_text())["studies"][0]
    assert (one["n_trials"], two["n_trials"]) == (3, 6)
    import optuna
    study = optuna.load_study(study_name="split-digits:er",
                              storage=f"sqlite:///{tmp_path / 'store' / 'tune.db'}")
    states = [t.state.name for t in study.get_trials()]
    assert len(states) == 6 and set(states) <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states
