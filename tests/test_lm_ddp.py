"""`lifelong lm` under torchrun: 2 CPU processes (gloo) match one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifelong.lm.cli import main
from lifelong.lm.corpora import FORTUNES_DIR

requires_fortunes = pytest.mark.skipif(
    not (FORTUNES_DIR / "de").is_dir(),
    reason="needs the Debian packages fortunes, fortunes-de, fortunes-es, fortunes-it",
)


ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "lm",
    "--corpora",
    "fortunes-en,fortunes-de",
    "--replay",
    "0.25",
    "--schedule",
    "wsd",
    "--steps-per-phase",
    "10",
    "--batch-size",
    "8",
    "--seq-len",
    "32",
    "--eval-every",
    "5",
    "--eval-windows",
    "8",
    "--no-progress",
    "--threads",
    "1",
    "--no-checkpoints",
]
TOL = (
    5e-4  # nats/token; observed ~2e-7 (train) and ~2e-5 (eval): reduction order differs (gradient all-reduce)
)


@requires_fortunes
def test_torchrun_two_cpu_processes_match_single_process(tmp_path):
    cache = str(tmp_path / "cache")
    single = tmp_path / "single.json"
    assert main([*ARGS, "--cache-dir", cache, "--out", str(tmp_path / "s"), "--json", str(single)]) == 0
    ddp = tmp_path / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "lifelong.lm",
        *ARGS,
        "--cache-dir",
        cache,
        "--out",
        str(tmp_path / "d"),
        "--json",
        str(ddp),
    ]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun did not finish within 240 s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s, d = json.loads(single.read_text()), json.loads(ddp.read_text())
    assert d["world_size"] == 2 and s["world_size"] == 1
    assert [e["step"] for e in d["train"]] == [e["step"] for e in s["train"]]
    assert d["train"][-1]["step"] == 20  # 20 updates (plus the WSD decay branches)
    for a, b in zip(s["train"], d["train"], strict=True):
        assert abs(a["loss"] - b["loss"]) < TOL, (a, b)
    for a, b in zip(s["eval"] + s["phase_end"], d["eval"] + d["phase_end"], strict=True):
        for k in a["loss"]:
            assert abs(a["loss"][k] - b["loss"][k]) < TOL, (k, a, b)
