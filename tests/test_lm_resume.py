"""`lifelong lm --resume`: a run killed at any moment (mid-phase, during a decayed branch, by SIGKILL) continues from
its last resume checkpoint to the same numbers as an uninterrupted run, bit for bit on CPU with one thread."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lifelong.cli import main
from lifelong.errors import LifelongError
from lifelong.lm import resume as R
from lifelong.lm import train as T
from lifelong.lm.corpora import FORTUNES_DIR
from lifelong.lm.replay import MixtureSampler
from lifelong.tracking.store import RunStore, hold_run_dir

pytestmark = pytest.mark.skipif(
    not (FORTUNES_DIR / "de").is_dir(),
    reason="needs the Debian packages fortunes, fortunes-de, fortunes-es, fortunes-it",
)

ROOT = Path(__file__).resolve().parents[1]
# 2 phases x (12 main + 6 decayed-branch updates); a resume checkpoint every 4 updates and at each phase end:
# done 4, 8, 12 (before phase 1's branch), 16 (branch update 4 of 6), 18 (phase end), 20, 24, 28, 32 (branch
# update 2 of phase 2's branch), 36 (phase end)
SETTINGS = dict(corpora=["fortunes-en", "fortunes-de"], model="tiny-gpt2", steps_per_phase=12, batch_size=4,
                seq_len=32, eval_every=4, eval_windows=4, log_every=3, schedule="wsd", branch_frac=0.5, replay=0.25,
                probes=4, probe_len=8, probe_step=6, checkpoint_every=4, threads=1)
FLAGS = ["--corpora", "fortunes-en,fortunes-de", "--model", "tiny-gpt2", "--steps-per-phase", "12", "--batch-size",
         "4", "--seq-len", "32", "--eval-every", "4", "--eval-windows", "4", "--log-every", "3", "--schedule", "wsd",
         "--branch-frac", "0.5", "--replay", "0.25", "--probes", "4", "--probe-len", "8", "--probe-step", "6",
         "--checkpoint-every", "4", "--threads", "1", "--no-checkpoints"]
NUMBERS = ("train", "eval", "phase_end", "summary", "probes")


class Killed(BaseException):
    """Stands for a kill: nothing after the crash point runs (the handler only marks the store failed)."""


def config(out: Path, cache: Path) -> T.LMConfig:
    return T.LMConfig(**SETTINGS, out_dir=str(out), cache_dir=str(cache), progress=False, plot=False,
                      save_checkpoints=False)


def numbers(result: dict) -> dict:
    return {k: result[k] for k in NUMBERS}


def store_records(run: Path) -> dict:
    store = RunStore.open(run)
    try:
        names = [r[0] for r in store.conn.execute("SELECT DISTINCT name FROM scalars ORDER BY name")]
        return {"scalars": {n: store.scalars(n) for n in names}, "boundaries": store.meta()["boundaries"],
                "phase_ends": [e for e in store.events("phase_end")], "status": store.meta()["status"]}
    finally:
        store.close()


def max_abs_difference(a: dict, b: dict) -> float:
    """Largest |a - b| over every recorded train loss, held-out loss and phase-end loss."""
    worst = 0.0
    for x, y in zip(a["train"], b["train"], strict=True):
        worst = max(worst, abs(x["loss"] - y["loss"]))
    for key in ("eval", "phase_end"):
        for x, y in zip(a[key], b[key], strict=True):
            worst = max(worst, *(abs(x["loss"][n] - y["loss"][n]) for n in x["loss"]))
    return worst


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lm-cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("ref") / "run"
    return run, T.run_lm(config(run, cache))


def crash(monkeypatch, phase: int, step: int) -> None:
    """Raise Killed when the sampler is asked for the batch of update `step` of `phase` (a branch's updates
    continue the phase's step count)."""
    orig = MixtureSampler.batch

    def batch(self, s, rows=None):
        if self.phase == phase and s == step:
            raise Killed
        return orig(self, s, rows)

    monkeypatch.setattr(MixtureSampler, "batch", batch)


@pytest.mark.parametrize("phase, step, position", [
    (0, 7, {"phase": 0, "step": 4, "branch_step": None, "t": 4, "done": 4}),  # mid-phase
    (0, 17, {"phase": 0, "step": 12, "branch_step": 4, "t": 12, "done": 16}),  # in phase 1's decayed branch
    (1, 15, {"phase": 1, "step": 12, "branch_step": 2, "t": 24, "done": 32}),  # in phase 2's decayed branch
])
def test_crash_then_resume_gives_the_uninterrupted_numbers_bit_for_bit(tmp_path, cache, reference, monkeypatch,
                                                                       phase, step, position):
    ref_dir, ref = reference
    run = tmp_path / "run"
    crash(monkeypatch, phase, step)
    with pytest.raises(Killed):
        T.run_lm(config(run, cache))
    monkeypatch.undo()
    state = R.load_state(run)
    assert state["position"] == position
    assert (state["main_branch"] is not None) == (position["branch_step"] is not None)
    resumed = T.resume_lm(run, progress=False)
    assert max_abs_difference(resumed, ref) == 0.0
    assert json.dumps(numbers(resumed)) == json.dumps(numbers(ref))  # every number, probes included
    got, want = store_records(run), store_records(ref_dir)
    assert got["scalars"] == want["scalars"] and got["boundaries"] == want["boundaries"] == [12, 24]
    assert [e["loss"] for e in got["phase_ends"]] == [e["loss"] for e in want["phase_ends"]]
    assert [e["step"] for e in got["phase_ends"]] == [12, 24]
    assert got["status"] == "finished" and not (run / R.CHECKPOINT).exists()


def test_no_checkpoint_yet_restarts_from_the_beginning(tmp_path, cache, reference, monkeypatch):
    run = tmp_path / "run"
    crash(monkeypatch, 0, 2)
    with pytest.raises(Killed):
        T.run_lm(config(run, cache))
    monkeypatch.undo()
    assert not (run / R.CHECKPOINT).exists()
    assert numbers(T.resume_lm(run, progress=False)) == numbers(reference[1])


def test_sigkill_then_lifelong_lm_resume(tmp_path, cache, reference, capsys):
    """A `lifelong lm` process killed with SIGKILL just after a checkpoint appears, resumed from the command
    line; then `lifelong runs` lists the run once, finished."""
    run = tmp_path / "runs" / "lm"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lifelong.lm", "lm", *FLAGS, "--cache-dir", str(cache), "--out", str(run),
           "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (run / R.CHECKPOINT).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # some way into the next stretch of updates
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert R.load_state(run)["position"]["done"] < 36  # killed before the end
    assert RunStore.open(run).status == "running"  # nothing ran after the kill
    out = tmp_path / "resumed.json"
    assert main(["lm", "--resume", str(run), "--no-progress", "--json", str(out)]) == 0
    resumed = json.loads(out.read_text())
    assert json.dumps(numbers(resumed)) == json.dumps(numbers(reference[1]))
    capsys.readouterr()
    assert main(["runs", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].split()[:2] == ["lm", "finished"] and lines[1].endswith(str(run))


def one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_damaged_checkpoint_is_one_line(tmp_path, cache, monkeypatch, capsys):
    run = tmp_path / "run"
    crash(monkeypatch, 0, 6)
    with pytest.raises(Killed):
        T.run_lm(config(run, cache))
    monkeypatch.undo()
    data = bytearray((run / R.CHECKPOINT).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / R.CHECKPOINT).write_bytes(bytes(data))
    assert "is damaged" in one_line_error(capsys, ["lm", "--resume", str(run)])
    (run / R.CHECKPOINT).write_bytes(b"not a checkpoint")
    assert "is damaged" in one_line_error(capsys, ["lm", "--resume", str(run)])


def test_resume_refusals_are_one_line(tmp_path, reference, capsys):
    ref_dir, _ = reference
    assert "already finished; nothing to resume" in one_line_error(capsys, ["lm", "--resume", str(ref_dir)])
    assert "no run found" in one_line_error(capsys, ["lm", "--resume", str(tmp_path / "nothing")])
    assert "drop --lr" in one_line_error(capsys, ["lm", "--resume", str(ref_dir), "--lr", "0.1"])
    RunStore.create(tmp_path / "cl", {"config": {"strategy": "er"}}).close()
    assert "classification run" in one_line_error(capsys, ["lm", "--resume", str(tmp_path / "cl")])
    assert "lifelong lm --resume" in one_line_error(capsys, ["resume", str(ref_dir)])


def test_a_run_still_going_is_not_resumed_twice(tmp_path, cache, monkeypatch, capsys):
    run = tmp_path / "run"
    crash(monkeypatch, 0, 6)
    with pytest.raises(Killed):
        T.run_lm(config(run, cache))
    monkeypatch.undo()
    held = hold_run_dir(run)  # as the process still training would hold it
    try:
        assert "in use by another lifelong lm process" in one_line_error(capsys, ["lm", "--resume", str(run)])
    finally:
        held.close()


def test_another_world_size_or_other_settings_are_refused():
    state = {"world_size": 2, "config": json.dumps({"lr": 0.003, "threads": 1})}
    with pytest.raises(LifelongError, match="trained on 2 process.*torchrun --nproc_per_node=2"):
        R.check_state(state, {"lr": 0.003, "threads": 1}, 1, Path("r"))
    R.check_state({**state, "world_size": 1}, {"lr": 0.003, "threads": 4}, 1, Path("r"))  # threads: free
    with pytest.raises(LifelongError, match="other settings \\(lr 0.003, now 0.1\\)"):
        R.check_state({**state, "world_size": 1}, {"lr": 0.1, "threads": 1}, 1, Path("r"))


def test_checkpoint_holds_every_piece_of_state(tmp_path, cache, monkeypatch):
    run = tmp_path / "run"
    crash(monkeypatch, 0, 17)
    with pytest.raises(Killed):
        T.run_lm(config(run, cache))
    monkeypatch.undo()
    state = R.load_state(run)
    assert set(R.REQUIRED) <= set(state)
    assert set(state["main_branch"]) == {"model", "optimizer"}
    assert isinstance(state["ranks"][0]["rng"]["cpu"], torch.Tensor) and state["ranks"][0]["loss_n"] == 0
    assert state["boundaries"] == [] and state["probe_baseline"] is not None
    result = json.loads(state["result"])
    assert [e["step"] for e in result["eval"]] == [0, 4, 8, 12] and result["phase_end"] == []


def test_ctrl_c_says_how_to_resume(tmp_path, cache, monkeypatch, capsys):
    run = tmp_path / "run"
    orig = MixtureSampler.batch

    def batch(self, s, rows=None):
        if s == 6:
            raise KeyboardInterrupt
        return orig(self, s, rows)

    monkeypatch.setattr(MixtureSampler, "batch", batch)
    line = one_line_error(capsys, ["lm", *FLAGS, "--no-progress", "--cache-dir", str(cache), "--out", str(run)])
    assert line == f"error: interrupted; resume with: lifelong lm --resume {run}"
    assert RunStore.open(run).status == "interrupted" and R.load_state(run)["position"]["done"] == 4


def test_resume_refuses_a_local_corpus_that_changed(tmp_path, cache, monkeypatch, capsys):
    import random

    rng = random.Random(0)
    words = ["tide", "lamp", "river", "stone", "wind", "glass", "north", "ember", "salt", "reed"]
    text = tmp_path / "mine.txt"
    text.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(40)) for _ in range(800)))
    run = tmp_path / "run"
    cfg = dataclasses.replace(config(run, cache), corpora=[str(text)], probes=0, probe_step=None)
    crash(monkeypatch, 0, 7)
    with pytest.raises(Killed):
        T.run_lm(cfg)
    monkeypatch.undo()
    with text.open("a") as f:
        f.write("\n\nan added paragraph of the user's corpus")
    assert "changed since run" in one_line_error(capsys, ["lm", "--resume", str(run)])
