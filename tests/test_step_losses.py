"""Step losses read from the device in batches (what the engine does on an accelerator, forced here on the CPU)
are recorded exactly as losses read one step at a time: same values, same steps, same callbacks, same results;
a non-finite loss in a batch still stops the run naming its own step."""

import math

import pytest
import torch
from test_resume import Crash, crash_at

from lifelong.errors import LifelongError
from lifelong.schedules.refined import NORM_SCALARS
from lifelong.tracking.store import RunStore
from lifelong.training import runner
from lifelong.training.engine import Engine
from lifelong.training.recorder import Recorder, StepLosses

COMPARED = ("final_accuracy", "accuracy_matrix", "bwt", "forgetting", "initial_accuracy", "curve")


@pytest.fixture
def batched(monkeypatch):
    """Engines built while active read their losses 32 steps at a time, as on a GPU."""
    monkeypatch.setattr(Engine, "step_losses", lambda self: StepLosses(self.recorder, every=32, seconds=1e9))


def stored(run_dir, name):
    store = RunStore.open(run_dir)
    try:
        return store.scalars(name)
    finally:
        store.close()


def run_with_calls(cfg, run_dir):
    """The run's result and, for each on_step call, (step, loss, accuracy, the engine's global step then)."""
    calls, box = [], []

    def on_step(g, total, loss, acc):
        calls.append((g, loss, acc, box[0].position["global_step"]))

    engine = runner.build_engine(cfg, run_dir, on_step=on_step)
    box.append(engine)
    return runner.execute(engine), calls


def test_batched_losses_are_recorded_as_losses_read_one_step_at_a_time(tmp_path, digits_cfg, monkeypatch):
    cfg = digits_cfg(strategy="er", eval_every=5, eval_subsample=20, record_grad_norms=True)
    one, one_calls = run_with_calls(cfg, tmp_path / "one")
    monkeypatch.setattr(Engine, "step_losses", lambda self: StepLosses(self.recorder, every=32, seconds=1e9))
    many, many_calls = run_with_calls(cfg, tmp_path / "many")
    # (step, loss) of every call; the accuracy a call carries is the latest continual evaluation's, which the
    # background probe delivers whenever it finishes, in either mode
    assert [c[:2] for c in many_calls] == [c[:2] for c in one_calls]
    assert all(g == now for g, _, _, now in one_calls)  # one at a time: the callback right after its step
    assert any(g < now for g, _, _, now in many_calls)  # batched: some callbacks after later steps
    for name in ("loss", NORM_SCALARS[2.0], NORM_SCALARS[1.0]):
        steps, values = stored(tmp_path / "many", name)
        assert (steps, values) == stored(tmp_path / "one", name) and len(steps) == one_calls[-1][0], name
    for key in COMPARED:
        assert many[key] == one[key], key


def test_batched_run_crashed_in_a_callback_resumes_to_the_uninterrupted_numbers(tmp_path, digits_cfg, batched):
    cfg = digits_cfg(strategy="derpp", eval_every=5, eval_subsample=20)
    clean = runner.run(cfg, tmp_path / "clean")
    with pytest.raises(Crash):
        runner.run(cfg, tmp_path / "crashed", on_step=crash_at(40))
    resumed = runner.resume(tmp_path / "crashed")
    for key in COMPARED:
        assert resumed[key] == clean[key], key


def test_a_non_finite_loss_in_a_batch_names_its_step_and_nothing_after_it_is_recorded():
    seen = []
    losses = StepLosses(Recorder(None, lambda g, total, loss, acc: seen.append((g, loss))), every=10)
    for g, value in enumerate([1.5, 2.5, math.nan, 3.5], start=1):
        losses.add(g, 4, 0, torch.tensor(value), None, None, 0.1)
    assert seen == []  # still pending
    with pytest.raises(LifelongError, match="loss became nan at step 3 "):
        losses.flush()
    assert seen == [(1, 1.5), (2, 2.5)]


def test_losses_flush_on_their_own_after_every_steps_or_seconds():
    seen = []
    losses = StepLosses(Recorder(None, lambda g, total, loss, acc: seen.append(g)), every=3, seconds=1e9)
    for g in range(1, 8):
        losses.add(g, 7, 0, torch.tensor(float(g)), None, None, 0.1)
    assert seen == [1, 2, 3, 4, 5, 6]
    slow = StepLosses(Recorder(None, lambda g, total, loss, acc: seen.append(-g)), every=100, seconds=0.0)
    slow.add(1, 7, 0, torch.tensor(1.0), None, None, 0.1)
    assert seen[-1] == -1  # the oldest pending step is `seconds` old at once
