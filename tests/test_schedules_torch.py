"""ScheduleLR with real optimizers (exact resume), StreamSchedule modes, and schedule-free eval mode."""

import io
import sys

import pytest
import torch

from lifelong.errors import LifelongError
from lifelong.schedules import (
    WSD,
    Cosine,
    Infinite,
    ScheduleLR,
    StreamSchedule,
    eval_mode,
    make_schedule,
    make_schedulefree,
)

X = torch.linspace(-1, 1, 32).reshape(8, 4)
Y = torch.arange(8, dtype=torch.float32).reshape(8, 1) / 8


def train(model, optimizer, scheduler, steps):
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(X), Y).backward()
        optimizer.step()
        scheduler.step()
    return seen


def setup(schedule):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr_scale": 0.5}]
    optimizer = torch.optim.SGD(groups, lr=123.0, momentum=0.9)
    return model, optimizer, ScheduleLR(optimizer, schedule)


def test_schedule_lr_sets_absolute_rates_on_a_real_optimizer():
    schedule = WSD(peak=0.1, warmup=4, decay_start=10, decay_steps=6, min_lr=0.01, shape="cosine")
    model, optimizer, scheduler = setup(schedule)
    seen = train(model, optimizer, scheduler, 20)
    assert [s[0] for s in seen] == [schedule.lr(t) for t in range(20)]
    assert [s[1] for s in seen] == [0.5 * schedule.lr(t) for t in range(20)]
    assert scheduler.get_last_lr() == [schedule.lr(20), 0.5 * schedule.lr(20)]
    assert scheduler.step_index == 20


def test_state_dict_round_trip_resumes_exactly():
    schedule = make_schedule("cosine", total_steps=12, peak=0.2, warmup=3, min_lr=0.02)
    model, optimizer, scheduler = setup(schedule)
    full = train(model, optimizer, scheduler, 12)
    expected = model.weight.detach().clone()

    model, optimizer, scheduler = setup(schedule)
    first = train(model, optimizer, scheduler, 5)
    buffer = io.BytesIO()
    torch.save({"m": model.state_dict(), "o": optimizer.state_dict(), "s": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    model, optimizer, scheduler = setup(schedule)
    model.load_state_dict(saved["m"])
    optimizer.load_state_dict(saved["o"])
    scheduler.load_state_dict(saved["s"])
    assert scheduler.step_index == 5 and optimizer.param_groups[0]["lr"] == schedule.lr(5)
    rest = train(model, optimizer, scheduler, 7)
    assert first + rest == full
    assert torch.equal(model.weight, expected)


def test_scheduler_state_alone_restores_the_rate():
    schedule = Cosine(peak=1.0, total=10)
    _, optimizer, scheduler = setup(schedule)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    _, optimizer2, scheduler2 = setup(schedule)
    scheduler2.load_state_dict(state)
    assert optimizer2.param_groups[0]["lr"] == schedule.lr(4)
    assert optimizer2.param_groups[1]["lr"] == 0.5 * schedule.lr(4)


LENGTHS = [100, 60, 40]


def test_stream_continue_is_one_schedule_over_the_stream():
    stream = StreamSchedule(Cosine(peak=1.0, warmup=10), LENGTHS, mode="continue")
    whole = Cosine(peak=1.0, warmup=10, total=200)
    assert [stream.lr(g) for g in range(220)] == [whole.lr(g) for g in range(220)]
    assert stream.lr_for(1, 5, 105) == whole.lr(105)
    assert stream.locate(100) == (1, 0) and stream.locate(99) == (0, 99) and stream.locate(250) == (2, 90)


def test_stream_restart_rewarms_every_experience():
    stream = StreamSchedule(Cosine(peak=1.0, warmup=10, min_lr=0.1), LENGTHS, mode="restart")
    for k, (start, n) in enumerate(zip(stream.starts, LENGTHS, strict=True)):
        own = Cosine(peak=1.0, warmup=10, min_lr=0.1, total=n)
        assert [stream.lr_for(k, t, start + t) for t in range(n)] == [own.lr(t) for t in range(n)]
        assert stream.lr(start) == 0.0 and stream.lr(start + 10) == 1.0


def test_stream_infinite_starts_later_experiences_in_the_constant_phase():
    first = Infinite(peak=1.0, constant=0.5, min_lr=0.05, warmup=10, cooldown_end=30, constant_end=80)
    stream = StreamSchedule(first, LENGTHS, mode="infinite")
    bound = first.bind(100)
    assert [stream.lr(g) for g in range(100)] == [bound.lr(t) for t in range(100)]
    assert stream.anneal_fraction == pytest.approx(0.2)
    assert [stream.anneal_start(k) for k in range(3)] == [80, 48, 32]
    assert stream.lr(100) == 0.5 and stream.lr(148) == 0.5  # no re-warm: constant from step 0 of experience 1
    assert stream.lr_for(1, 54, 154) == pytest.approx(0.5 * 0.1**0.5)
    assert max(stream.lr(g) for g in range(100, 200)) == 0.5
    never = StreamSchedule(first, LENGTHS, mode="infinite", anneal_fraction=0.0)
    assert all(never.lr(g) == 0.5 for g in range(100, 200))


def test_stream_drives_schedule_lr():
    stream = StreamSchedule(Cosine(peak=0.3, warmup=2), [5, 5], mode="restart")
    model, optimizer, scheduler = setup(stream)
    seen = train(model, optimizer, scheduler, 10)
    assert [s[0] for s in seen] == [stream.lr(g) for g in range(10)]


def test_schedulefree_eval_mode_swaps_in_the_averaged_weights():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = make_schedulefree(model.parameters(), "adamw", lr=0.05, warmup_steps=2)
    for _ in range(6):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(X), Y).backward()
        optimizer.step()
    train_weights = model.weight.detach().clone()
    with eval_mode(optimizer):
        eval_weights = model.weight.detach().clone()
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
    assert not torch.allclose(eval_weights, train_weights)
    assert torch.allclose(model.weight, train_weights), "train mode restored on exit"
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    assert torch.equal(checkpoint["weight"], eval_weights)
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(X), Y).backward()
    optimizer.step()  # still trainable after the context


def test_schedulefree_sgd_and_nested_eval_mode():
    model = torch.nn.Linear(4, 1)
    optimizer = make_schedulefree(model.parameters(), "sgd", lr=0.1)
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(X), Y).backward()
    optimizer.step()
    with eval_mode(optimizer):
        inside = model.weight.detach().clone()
        with eval_mode(optimizer):
            assert torch.equal(model.weight, inside)
        assert torch.equal(model.weight, inside), "inner context leaves eval mode on"
    assert optimizer.param_groups[0]["train_mode"]


def test_eval_mode_is_a_no_op_for_ordinary_optimizers():
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    with eval_mode(optimizer) as inside:
        assert inside is optimizer and torch.equal(model.weight, before)


def test_schedulefree_errors(monkeypatch):
    model = torch.nn.Linear(4, 1)
    with pytest.raises(LifelongError, match="name='lion'"):
        make_schedulefree(model.parameters(), "lion")
    monkeypatch.setitem(sys.modules, "schedulefree", None)
    with pytest.raises(LifelongError, match=r"pip install lifelong\[schedulefree\]"):
        make_schedulefree(model.parameters(), "adamw")
