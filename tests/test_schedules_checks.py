"""Schedules that cannot finish their decay are refused; branch floors; gradient-norm records; exact eval mode."""

import copy

import pytest
import torch

from lifelong.errors import LifelongError
from lifelong.schedules import (
    WSD,
    WSDC,
    WSDS,
    Constant,
    Cosine,
    Infinite,
    Linear,
    Refined,
    RepeatedCosine,
    StreamSchedule,
    eval_mode,
    make_schedule,
)
from lifelong.schedules.cli import add_schedule_parser, run_schedule_command
from lifelong.schedules.refined import gradient_norms, load_norms
from lifelong.schedules.wsd import check_branch_floor
from lifelong.tracking.store import RunStore


def refused(build, *fragments):
    """`build()` raises one LifelongError line containing every fragment."""
    with pytest.raises(LifelongError) as err:
        build()
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


# --- decays that would not finish within the length they are bound to ------------------------------------
def test_wsd_decay_past_an_experience_is_refused_in_restart_mode():
    wsd = WSD(peak=0.1, warmup=10, decay_start=800, decay_steps=300, min_lr=0.01)
    refused(
        lambda: StreamSchedule(wsd, [1000, 1200], mode="restart"),
        "decay_start=800 + decay_steps=300 ends at step 1100 but experience 0 (schedule_mode=restart) has "
        "1000 steps: lower decay_start or decay_steps",
    )
    refused(lambda: StreamSchedule(wsd, [1200, 1000], mode="restart"), "experience 1 (schedule_mode=restart)")
    StreamSchedule(wsd, [1100, 1200], mode="restart")  # ends exactly at the end: fits


def test_wsd_decay_past_the_stream_is_refused_in_continue_mode():
    wsd = WSD(peak=0.1, warmup=10, decay_start=1500, decay_steps=600, min_lr=0.01)
    refused(
        lambda: StreamSchedule(wsd, [1000, 1000], mode="continue"),
        "decay_start=1500 + decay_steps=600 ends at step 2100",
        "the stream (schedule_mode=continue) has 2000 steps",
    )
    fits = StreamSchedule(WSD(peak=0.1, warmup=10, decay_start=1400, decay_steps=600, min_lr=0.01), [1000, 1000])
    assert fits.lr(1999) == pytest.approx(0.01 + 0.09 / 600)  # the last update is one step before min-lr


def test_wsd_whose_decay_never_starts_is_refused():
    never = WSD(peak=0.1, warmup=5, decay_start=10**6, decay_steps=0)  # a stable phase that never ends
    refused(lambda: never.bind(500), "decay_start=1000000", "500 steps", "constant schedule")
    refused(lambda: WSD(warmup=5, decay_start=500, decay_steps=0).bind(500), "decay_start=500")
    assert WSD(peak=0.1, warmup=5, decay_start=499, decay_steps=0, min_lr=0.0).bind(500).lr(499) == 0.0


@pytest.mark.parametrize(
    "build, length, fragment",
    [
        (lambda: Linear(peak=1.0, total=2000), 1000, "total=2000 is after the end of the run, which has 1000 steps"),
        (lambda: Cosine(peak=1.0, total=1001), 1000, "total=1001"),
        (lambda: Infinite(constant_end=800, total=1200), 1000, "total=1200"),
        (lambda: RepeatedCosine(period=300), 200, "period=300 is longer than the run, which has 200 steps"),
        (lambda: RepeatedCosine(period=300), 1000, "period=300 does not divide the run, which has 1000 steps"),
        (lambda: WSDS(pit_stops=(100, 200, 400)), 300, "pit_stops=400 is after the end of the run, which has 300"),
        (lambda: WSDC(warmup=10, decay_steps=200, tail_steps=100), 300, "warmup=10 + decay_steps=200 + tail_steps=100"),
        (lambda: WSDC(warmup=10, decay_steps=20, tail_steps=10, total=100), 200, "total=100 but the run has 200 steps"),
        (lambda: Refined(grad_norms=(1.0,) * 800), 1000, "grad_norms has 800 values but the run has 1000 steps"),
        (lambda: Refined(grad_norms=(1.0,) * 1200), 1000, "grad_norms has 1200 values"),
    ],
)
def test_a_decay_that_does_not_fit_the_run_names_the_field_and_length(build, length, fragment):
    refused(lambda: build().bind(length), fragment)


def test_the_same_schedules_fit_when_the_decay_ends_by_the_last_step():
    assert Linear(peak=1.0, total=1000).bind(1000).lr(999) == pytest.approx(1e-3)
    assert RepeatedCosine(period=250).bind(1000).period == 250
    assert WSDS(pit_stops=(100, 200, 300)).bind(300).pit_stops == (100, 200, 300)
    assert len(Refined(grad_norms=(1.0,) * 1000).bind(1000).multipliers) == 1000
    assert WSDC(warmup=10, decay_steps=200, tail_steps=90).bind(300).decay_start == 10


def test_a_refined_record_shorter_than_an_experience_is_refused_in_a_stream():
    refined = Refined(peak=1.0, grad_norms=(1.0,) * 100)
    refused(
        lambda: StreamSchedule(refined, [100, 60], mode="restart"),
        "grad_norms has 100 values but experience 1 (schedule_mode=restart) has 60 steps",
    )
    refused(lambda: StreamSchedule(refined, [100, 100], mode="continue"), "the stream (schedule_mode=continue)")


def test_make_schedule_and_the_cli_refuse_a_decay_past_the_run():
    refused(lambda: make_schedule("wsd", total_steps=500), "decay_start=800 + decay_steps=200")
    import argparse

    parser = argparse.ArgumentParser()
    add_schedule_parser(parser.add_subparsers())
    args = parser.parse_args("schedule wsd --steps 900".split())
    refused(lambda: run_schedule_command(args), "ends at step 1000 but the run has 900 steps")


# --- decay branches ------------------------------------------------------------------------------------------
def test_stream_end_rates_are_the_rates_of_each_experience_last_step():
    stream = StreamSchedule(Linear(peak=1.0), [4, 10], mode="restart")
    assert stream.end_rates() == pytest.approx([0.25, 0.1])  # 1 - 3/4, 1 - 9/10
    whole = StreamSchedule(Linear(peak=1.0), [4, 10], mode="continue")
    assert whole.end_rates() == pytest.approx([1 - 3 / 14, 1 - 13 / 14])


def test_branch_floor_above_a_branch_start_rate_is_refused():
    rates = StreamSchedule(Linear(peak=1.0), [4, 10], mode="restart").end_rates()
    refused(
        lambda: check_branch_floor(0.2, rates),
        "branch_min_lr=0.2 is above the learning rate at the end of experience 1 (0.1)",
    )
    check_branch_floor(rates[1], rates)  # equal to the lowest start rate: allowed
    check_branch_floor(0.05, [0.05] * 3)  # a constant rate: the floor may equal it
    refused(lambda: check_branch_floor(0.06, [0.05] * 3), "experience 0 (0.05)")


# --- gradient-norm records -------------------------------------------------------------------------------------
def test_gradient_norms_match_the_norms_of_all_gradients_concatenated():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    frozen = torch.nn.Parameter(torch.ones(4))  # no gradient: skipped
    model(torch.randn(8, 5)).pow(2).sum().backward()
    l2, l1 = gradient_norms([*model.parameters(), frozen]).tolist()
    flat = torch.cat([p.grad.flatten() for p in model.parameters()]).double()
    assert l2 == pytest.approx(flat.pow(2).sum().sqrt().item(), rel=1e-6)
    assert l1 == pytest.approx(flat.abs().sum().item(), rel=1e-6)
    assert gradient_norms([frozen]).tolist() == [0.0, 0.0]


def store_with_norms(path, l2, l1, steps=None):
    store = RunStore.create(path, {"config": {}})
    steps = steps or list(range(1, len(l2) + 1))
    store.log_scalars([(g, "grad_norm", v) for g, v in zip(steps, l2, strict=True)])
    store.log_scalars([(g, "grad_norm_l1", v) for g, v in zip(steps, l1, strict=True)])
    store.log_scalars([(g, "loss", 1.0) for g in steps])
    store.close()
    return str(path)


def test_refined_from_a_run_directory_uses_its_l2_or_l1_record(tmp_path):
    l2, l1 = [3.0, 2.0, 2.0, 1.0, 0.5], [9.0, 1.0, 4.0, 4.0, 2.0]
    run = store_with_norms(tmp_path / "run", l2, l1)
    sgd = make_schedule("refined", peak=1.0, grad_norms=run, smoothing=0, total_steps=5)
    adam = make_schedule("refined", peak=1.0, grad_norms=run, smoothing=0, power=1, total_steps=5)
    assert sgd.grad_norms == tuple(l2) and adam.grad_norms == tuple(l1)
    assert sgd.lrs(5) == Refined(peak=1.0, grad_norms=l2, smoothing=0).lrs(5)
    assert adam.lrs(5) == Refined(peak=1.0, grad_norms=l1, smoothing=0, power=1).lrs(5)
    refused(lambda: make_schedule("refined", grad_norms=run, total_steps=6), "grad_norms has 5 values")


def test_the_cli_refines_from_a_run_directory_over_its_length(tmp_path, capsys):
    import argparse
    import json

    run = store_with_norms(tmp_path / "run", [1.0] * 8, [1.0] * 8)
    parser = argparse.ArgumentParser()
    add_schedule_parser(parser.add_subparsers())
    out = tmp_path / "lr.json"
    run_schedule_command(parser.parse_args(["schedule", "refined", "--grad-norms", run, "--peak", "1",
                                            "--smoothing", "0", "--json", str(out)]))
    assert json.loads(out.read_text())["lr"] == pytest.approx([1 - t / 7 for t in range(8)])  # constant: linear


def test_run_directories_without_a_usable_record_are_refused(tmp_path):
    RunStore.create(tmp_path / "old", {"config": {}}).close()
    refused(lambda: load_norms(str(tmp_path / "old")), "has no 'grad_norm' record")
    gappy = store_with_norms(tmp_path / "gappy", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], steps=[1, 2, 4])
    refused(lambda: load_norms(gappy, power=1.0), "'grad_norm_l1' record has gaps")


# --- schedule-free evaluation leaves training untouched ------------------------------------------------------
X = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
Y = torch.randn(32, 1, generator=torch.Generator().manual_seed(2))


def schedulefree_run(name, steps, eval_every):
    from lifelong.schedules import make_schedulefree

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    optimizer = make_schedulefree(model.parameters(), name, lr=0.05, warmup_steps=3)
    evals = []
    for step in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(X), Y).backward()
        optimizer.step()
        if eval_every and (step + 1) % eval_every == 0:
            with eval_mode(optimizer), torch.no_grad():
                evals.append(torch.nn.functional.mse_loss(model(X), Y).item())
    return [p.detach().clone() for p in model.parameters()], evals


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_schedulefree_eval_round_trips_are_bit_identical(name):
    pytest.importorskip("schedulefree")
    plain, _ = schedulefree_run(name, 40, 0)
    evaluated, evals = schedulefree_run(name, 40, 1)
    assert len(evals) == 40
    assert all(torch.equal(a, b) for a, b in zip(plain, evaluated, strict=True))


def test_engine_with_and_without_continual_evaluation_trains_the_same_schedulefree_model(digits_cfg):
    pytest.importorskip("schedulefree")
    from lifelong.training.engine import Engine

    runs = []
    for eval_every in (0, 3):
        cfg = digits_cfg(optimizer="adamw-schedulefree", lr=0.01, eval_every=eval_every, eval_subsample=20,
                         schedule="constant", schedule_params="warmup=5")
        engine = Engine(cfg)
        result = engine.run()
        runs.append((result["accuracy_matrix"], engine.model.state_dict()))
    (rows_a, model_a), (rows_b, model_b) = runs
    assert rows_a == rows_b
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)


def test_constant_is_the_never_ending_stable_phase_of_wsd():
    wsd = WSD(peak=0.1, warmup=5, decay_start=100, decay_steps=0, min_lr=0.0)
    assert Constant(peak=0.1, warmup=5).lrs(100) == wsd.lrs(100)


def test_resuming_from_a_schedulefree_checkpoint_continues_at_the_exact_training_point():
    pytest.importorskip("schedulefree")
    from lifelong.schedules import make_schedulefree
    from lifelong.schedules.schedulefree_support import resume_training_point, training_point

    def setup():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        return model, make_schedulefree(model.parameters(), "adamw", lr=0.05, warmup_steps=3)

    def train(model, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(X), Y).backward()
            optimizer.step()

    model, optimizer = setup()
    train(model, optimizer, 10)
    point = training_point(optimizer, model)
    with eval_mode(optimizer):  # what a checkpoint holds: eval-mode weights and optimizer state
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        state = copy.deepcopy(optimizer.state_dict())  # as saved to disk: not the live tensors
    train(model, optimizer, 10)
    finals = []
    for train_point in (point, None):
        resumed, resumed_optimizer = setup()
        resumed.load_state_dict(saved)
        resumed_optimizer.load_state_dict(state)
        resume_training_point(resumed_optimizer, resumed, train_point)
        train(resumed, resumed_optimizer, 10)
        finals.append([torch.equal(a, b) for a, b in zip(model.parameters(), resumed.parameters(), strict=True)])
    assert all(finals[0])
    assert not all(finals[1])  # re-deriving the training point from the eval weights rounds
    assert training_point(torch.optim.SGD(model.parameters(), lr=0.1), model) is None
