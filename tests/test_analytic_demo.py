"""The demo protocol (accuracy matrix, forgetting, methods, saved run) on a tiny synthetic feature scenario."""

from __future__ import annotations

import types

import pytest
import torch

from lifelong.analytic import demo, store
from lifelong.errors import LifelongError


def scenario():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 8, generator=g) * 3
    ytr, yte = torch.arange(300) % 6, torch.arange(120) % 6
    xtr = centers[ytr] + torch.randn(300, 8, generator=g)
    xte = centers[yte] + torch.randn(120, 8, generator=g)
    exps = demo.split_classes([0, 1, 2, 3, 4, 5], 3)
    return demo.FeatureScenario("toy", xtr, ytr, xte, yte, exps, [str(c) for c in range(6)], raw_train=xtr,
                                raw_test=xte, backbone=torch.nn.Identity())  # fmt: skip


ARGS = dict(buffer_size=64, gamma=1.0, seed=0, epochs=3, lr=1e-2, batch_size=32, memory=30, slca_epochs=2,
            slca_lr=0.1)  # fmt: skip


def test_summarize_and_split():
    assert demo.split_classes(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    with pytest.raises(LifelongError):
        demo.split_classes([0, 1], 3)
    final, forg = demo.summarize([[1.0, 0.0], [0.5, 1.0]])
    assert final == 0.75 and forg == 0.5


@pytest.mark.parametrize("method", ["joint", "nmc", "acil", "ds-al", "er", "finetune", "slca"])
def test_every_method_runs_the_protocol(method):
    r = demo.run_method(method, scenario(), types.SimpleNamespace(**ARGS))
    T = 1 if method == "joint" else 3
    assert len(r["matrix"]) == T and all(len(row) == 3 for row in r["matrix"])
    assert 0.0 <= r["final_acc"] <= 1.0
    if method in ("nmc", "acil", "joint"):
        assert r["final_acc"] > 0.8  # well separated toy classes


def test_saved_demo_run_can_be_unlearned(tmp_path, capsys):
    sc = scenario()
    args = types.SimpleNamespace(**ARGS, run_dir=str(tmp_path))
    rows = [demo.run_method("acil", sc, args)]
    demo._save_run(args, sc, rows, print)
    from lifelong.analytic.cli import main

    assert main(["unlearn", str(tmp_path), "--classes", "4"]) == 0
    m, v, _ = store.load_model_version(tmp_path)
    assert v == 2 and 4 not in m.classes_
    assert main(["unlearn", str(tmp_path), "--classes", "4"]) == 2  # refused: one line on stderr
    assert capsys.readouterr().err.count("\n") == 1
