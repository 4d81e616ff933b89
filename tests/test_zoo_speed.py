"""The zoo's speed changes (issue 15) leave every result as it was: each faster path against the arithmetic it
replaces, on a hand-sized case, and the overheads it removed gone."""

import random
import subprocess
import sys
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from lifelong.strategies import make_strategy
from lifelong.strategies.bic import BiasCorrection


def bic_for_correction(seed: int = 0):
    """A BiC strategy with two old and two new classes, ready for `fit_correction` (no engine)."""
    bic = make_strategy("bic", {"bias_epochs": 7})
    bic.ctx = SimpleNamespace(batch_size=4, stream=SimpleNamespace(num_classes=5))
    bic.groups, bic.current = [[0, 1]], [2, 3]
    bic.memory = SimpleNamespace(rng=random.Random(seed))
    return bic


def test_bic_bias_stage_is_torchs_adam_step_for_step():
    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(10, 5, generator=g), torch.randint(0, 4, (10,), generator=g)
    bic = bic_for_correction()
    bic.fit_correction(logits, y)
    corr = BiasCorrection([2, 3])  # the same stage by hand with torch.optim.Adam
    opt = torch.optim.Adam(corr.parameters(), lr=bic.hp["bias_lr"])
    rng = random.Random(0)
    masked = logits.masked_fill(~torch.tensor([True, True, True, True, False]), float("-inf"))
    for _ in range(7):
        order = torch.tensor(rng.sample(range(10), 10), dtype=torch.long)
        for s in range(0, 10, 4):
            rows = order[s:s + 4]
            loss = F.cross_entropy(corr(masked[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.equal(bic.correction.alpha, corr.alpha.detach())
    assert torch.equal(bic.correction.beta, corr.beta.detach())
    assert bic.correction.alpha.item() != 1.0


def test_bic_bias_stage_does_not_import_dynamo():
    """torch.optim.Adam's compile hooks import torch._dynamo on first use (~1.7 s of a BiC run)."""
    code = ("import sys, torch\n"
            "sys.path.insert(0, 'tests')\n"
            "from test_zoo_speed import bic_for_correction\n"
            "bic = bic_for_correction()\n"
            "bic.fit_correction(torch.randn(10, 5), torch.randint(0, 4, (10,)))\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_refresh_cached_divisors_give_the_same_update_bit_for_bit():
    from lifelong.strategies.refresh import damping, refresh_update
    g = torch.Generator().manual_seed(1)
    shapes = [(5, 4), (4,), (3, 5)]
    params = [torch.randn(s, generator=g) for s in shapes]
    grads = [torch.randn(s, generator=g) for s in shapes]
    fisher = [torch.rand(s, generator=g) * 50 for s in shapes]
    noise = [torch.randn(s, generator=g) for s in shapes]
    plain = [p.clone() for p in params]
    cached = [p.clone() for p in params]
    refresh_update(plain, grads, fisher, 0.3, noise)
    refresh_update(cached, grads, fisher, 0.3, noise, damping(fisher))
    for a, b, p in zip(plain, cached, params, strict=True):
        assert torch.equal(a, b) and not torch.equal(a, p)


def test_refresh_computes_the_fisher_divisor_once_per_fisher(digits_cfg, monkeypatch):
    from lifelong.strategies import refresh
    from lifelong.training.engine import Engine
    calls = []
    real = refresh.damping
    monkeypatch.setattr(refresh, "damping", lambda f: calls.append(1) or real(f))
    Engine(digits_cfg(strategy="refresh", epochs=1, checkpoint_every=0)).run()
    assert 0 < len(calls) <= 5  # once per Fisher (one per experience at most), not once per step


def test_gss_normalises_the_memory_gradients_once_with_max_cosines_arithmetic():
    from lifelong.strategies.gss import max_cosine_to
    from lifelong.strategies.retrieval import max_cosine
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(7, 300, generator=g), torch.randn(10, 300, generator=g)
    assert torch.equal(max_cosine_to(a, F.normalize(b, dim=1)), max_cosine(a, b))
    a, b = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0], [-3.0, 0.0]])  # by hand
    assert max_cosine_to(a, F.normalize(b, dim=1)).tolist() == [0.0, torch.tensor(0.5).sqrt().item()]


def test_scr_prepares_new_and_replayed_rows_in_one_conversion(digits_cfg):
    from lifelong.strategies.base import Batch
    from lifelong.training.engine import Engine
    engine = Engine(digits_cfg(strategy="scr", epochs=1, checkpoint_every=0,
                               hparams={"buffer_size": 40, "replay_batch_size": 8}))
    engine.run()
    s, data = engine.strategy, engine.learner.data
    exp = s.ctx.stream[1]
    raw, y = exp.raw(exp.train_idx[:6]), exp.labels(exp.train_idx[:6])
    calls = []
    real = data.prepare
    data.prepare = lambda r: calls.append(len(r)) or real(r)
    batch = s.training_batch(Batch(s.ctx.segment(raw, y, scored=True), 1))
    assert calls == [6 + 8]  # one uint8 -> float conversion of the new and the replayed rows
    mem = batch["scr.mem"]
    assert torch.equal(batch["new"].x, real(raw)) and torch.equal(mem.x, real(mem.raw))
    assert torch.equal(batch.x[:14], torch.cat([real(raw), real(mem.raw)]))


def test_mir_replays_the_scored_candidates_rows_without_preparing_them_again(digits_cfg):
    from lifelong.strategies.base import Batch
    from lifelong.training.engine import Engine
    engine = Engine(digits_cfg(strategy="mir", epochs=1, checkpoint_every=0,
                               hparams={"buffer_size": 40, "replay_batch_size": 4, "candidates": 12}))
    engine.run()
    s, data = engine.strategy, engine.learner.data
    exp = s.ctx.stream[1]
    raw, y = exp.raw(exp.train_idx[:6]), exp.labels(exp.train_idx[:6])
    calls = []
    real = data.prepare
    data.prepare = lambda r: calls.append(len(r)) or real(r)
    batch = s.training_batch(Batch(s.ctx.segment(raw, y, scored=True), 1))
    x = batch.x
    assert calls == [6, 12]  # the new batch (virtual step) and the candidates (scoring); the replay is their rows
    assert torch.equal(x, torch.cat([real(raw), real(batch["mir"].raw)]))
