"""Resume after a crash gives the same numbers as a run that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lifelong.errors import LifelongError
from lifelong.training import runner

COMPARED = ("final_accuracy", "accuracy_matrix", "bwt", "forgetting", "initial_accuracy")


class Crash(Exception):
    pass


def crash_at(step):
    def on_step(g, total, loss, acc):
        if g == step:
            raise Crash
    return on_step


@pytest.mark.parametrize("strategy,crash_step,hparams", [("er", 23, {}), ("derpp", 40, {}),
                                                         ("ewc", 85, {"ewc_lambda": 5.0}), ("lwf", 50, {}),
                                                         ("er", 23, {"buffer": "class-balanced"})])
def test_resume_after_crash_equals_uninterrupted(tmp_path, digits_cfg, strategy, crash_step, hparams):
    cfg = digits_cfg(strategy=strategy, eval_every=5, eval_subsample=20, hparams=hparams)
    clean = runner.run(cfg, tmp_path / "clean")
    with pytest.raises(Crash):
        runner.run(cfg, tmp_path / "crashed", on_step=crash_at(crash_step))
    resumed = runner.resume(tmp_path / "crashed")
    for key in COMPARED:
        assert resumed[key] == clean[key], key
    assert resumed["curve"] == clean["curve"]


def test_resume_refuses_finished_and_unknown_runs(tmp_path, digits_cfg):
    runner.run(digits_cfg(epochs=1), tmp_path / "done")
    with pytest.raises(LifelongError, match="already finished"):
        runner.resume(tmp_path / "done")
    with pytest.raises(LifelongError, match="no run found"):
        runner.resume(tmp_path / "nothing-here")


def test_kill_9_then_resume_cli(tmp_path):
    """A real SIGKILL mid-run, then `lifelong resume`: same JSON metrics as an uninterrupted run."""
    common = ["--scenario", "split-digits", "--strategy", "er", "--seed", "3", "--hidden", "64", "--epochs", "30",
              "--batch-size", "8", "--checkpoint-every", "50", "-q"]
    cli = [sys.executable, "-m", "lifelong"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    subprocess.run(cli + ["run", *common, "--run-dir", str(tmp_path / "clean"), "--json", str(tmp_path / "a.json")],
                   check=True, env=env, timeout=300)
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(cli + ["run", *common, "--run-dir", str(run_dir)], env=env)
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(cli + ["resume", str(run_dir), "--json", str(tmp_path / "b.json"), "-q"], check=True, env=env,
                   timeout=300)
    a = json.loads((tmp_path / "a.json").read_text())["results"][0]
    b = json.loads((tmp_path / "b.json").read_text())["results"][0]
    for key in COMPARED:
        assert a[key] == b[key], key


def test_resume_of_a_model_with_dropout_draws_the_same_masks(tmp_path, digits_cfg):
    """Dropout draws from torch's global generator, which the checkpoint keeps: the resumed run equals the
    uninterrupted one (before it was kept, the accuracy matrices differed)."""
    import torch
    from torch import nn

    def model():  # the same initial weights every time
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))

    cfg = digits_cfg(strategy="er")
    clean = runner.run(cfg, tmp_path / "clean", model=model())
    with pytest.raises(Crash):
        runner.run(cfg, tmp_path / "crashed", model=model(), on_step=crash_at(30))
    fresh = model()
    torch.manual_seed(12345)  # whatever the resuming process drew before does not matter
    resumed = runner.resume(tmp_path / "crashed", model=fresh)
    for key in COMPARED:
        assert resumed[key] == clean[key], key
