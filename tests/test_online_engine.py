"""The engine on online (task-free) streams, eval sets, output masking, label maps and the augmentation hook."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lifelong.data import load_dataset
from lifelong.data.scenarios import class_incremental
from lifelong.data.stream import Experience, Stream
from lifelong.errors import LifelongError
from lifelong.models.backbones import make_model
from lifelong.strategies import make_strategy
from lifelong.strategies.base import register
from lifelong.strategies.replay import ER
from lifelong.training import runner
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine


def online_stream(experiences=5, seed=0):
    """Class-incremental digits as an online stream (arrival order shuffled within each segment)."""
    s = class_incremental(load_dataset("digits"), experiences)
    g = torch.Generator().manual_seed(seed)
    for e in s:
        e.train_idx = e.train_idx[torch.randperm(len(e.train_idx), generator=g)]
    s.online = True
    return s


def cfg(**changes):
    base = {"scenario": "split-digits", "strategy": "naive", "hidden": "32", "lr": 0.05, "batch_size": 10,
            "threads": 1, "eval_every_samples": 300, "checkpoint_every": 0}
    return RunConfig.from_dict({**base, **changes})


def test_non_task_free_strategy_is_refused_in_one_line():
    with pytest.raises(LifelongError, match=r"ewc needs experience boundaries.*task-free strategies: .*\ber\b"):
        Engine(cfg(strategy="ewc"), stream=online_stream())
    with pytest.raises(LifelongError, match="epochs=2"):
        Engine(cfg(epochs=2), stream=online_stream())
    with pytest.raises(LifelongError, match="online_iter=3 applies to online streams only"):
        Engine(cfg(online_iter=3), stream=class_incremental(load_dataset("digits"), 5))


def test_composition_is_task_free_only_if_every_part_is():
    assert make_strategy("naive").task_free and make_strategy("er").task_free
    assert not make_strategy("er+lwf").task_free
    assert not make_strategy("agem").task_free and not make_strategy("fpf").task_free


def test_engine_equals_a_bare_online_loop():
    """Prequential hits, growing head (seen-label mask), arrival order and online_iter, against an independent
    loop: same init, same SGD, batches in train_idx order, each predicted first, then trained on twice."""
    stream = online_stream()
    c = cfg(online_iter=2, momentum=0.0)
    engine = Engine(c, stream=stream)
    result = engine.run()
    torch.manual_seed(c.seed)
    model = make_model("mlp", stream[0].data.shape, stream.num_classes, hidden=[32])
    opt = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=0.0)
    seen = torch.zeros(stream.num_classes, dtype=torch.bool)
    hits = samples = 0
    data = stream[0].data
    for e in stream:
        for b in range(0, e.num_train, c.batch_size):
            idx = e.train_idx[b:b + c.batch_size]
            x, y = data.prepare(data.train_x[idx]), data.train_y[idx]
            model.eval()
            with torch.no_grad():
                pred = model(x).masked_fill(~seen, float("-inf")).argmax(1)
            hits += int(((pred == y) & seen[y]).sum())
            samples += len(idx)
            seen[y] = True
            model.train()
            for _ in range(2):
                opt.zero_grad()
                F.cross_entropy(model(x).masked_fill(~seen, float("-inf")), y).backward()
                opt.step()
    assert result["online_accuracy"] == pytest.approx(hits / samples, abs=1e-12)
    for a, b in zip(engine.model.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # A_last: the final model on the test samples of the seen classes (all ten here), masked to seen labels
    test = torch.cat([e.test_idx for e in stream])
    model.eval()
    with torch.no_grad():
        pred = model(data.prepare(data.test_x[test])).argmax(1)
    assert result["a_last"] == pytest.approx(float((pred == data.test_y[test]).float().mean()), abs=1e-3)
    assert result["a_auc"] == pytest.approx(sum(result["anytime"]["accuracy"]) / len(result["anytime"]["accuracy"]))
    points = result["anytime"]["samples"]  # the first batch end at or past each multiple of 300 samples
    assert [p // 300 for p in points] == list(range(1, len(points) + 1)) and len(points) == samples // 300
    assert len(result["accuracy_matrix"]) == len(stream)


class Spy(ER):
    """ER that records what the engine tells it (registered only for this test)."""

    name = "spy-er"
    task_free = True
    calls: list = []

    def begin_experience(self, exp):
        Spy.calls.append(("begin", exp.index, len(exp.train_idx), list(exp.classes)))

    def end_experience(self, exp):
        Spy.calls.append(("end", exp.index, len(exp.train_idx)))

    def training_batch(self, batch):
        Spy.calls.append(("batch", batch.experience))
        return super().training_batch(batch)


register(Spy)


def test_the_strategy_never_learns_the_boundaries():
    stream = online_stream()
    Spy.calls = []
    Engine(cfg(strategy="spy-er"), stream=stream).run()
    begins = [c for c in Spy.calls if c[0] == "begin"]
    ends = [c for c in Spy.calls if c[0] == "end"]
    assert begins == [("begin", 0, 0, [])]  # once, with nothing from the future
    assert ends == [("end", 0, sum(e.num_train for e in stream))]  # once, with what arrived
    positions = [c[1] for c in Spy.calls if c[0] == "batch"]
    assert positions == list(range(len(positions)))  # counts incoming batches, no reset at segment ends
    assert Spy.calls[0][0] == "begin" and Spy.calls[-1][0] == "end"


class Crash(Exception):
    pass


def test_resume_mid_segment_is_exact(tmp_path):
    c = cfg(strategy="er", online_iter=3, checkpoint_every=7, eval_every=20, eval_subsample=20)
    clean = runner.run(c, tmp_path / "clean", stream=online_stream())

    def crash(g, total, loss, acc):
        if g == 100:  # inside segment 0 (360 samples, 36 batches, 108 steps); last checkpoint at step 99
            raise Crash

    with pytest.raises(Crash):
        runner.run(c, tmp_path / "crashed", stream=online_stream(), on_step=crash)
    resumed = runner.resume(tmp_path / "crashed", stream=online_stream())
    for key in ("accuracy_matrix", "a_auc", "a_last", "online_accuracy", "anytime", "curve", "final_accuracy"):
        assert resumed[key] == clean[key], key


def test_eval_sets_give_one_column_per_set():
    s = class_incremental(load_dataset("digits"), 5)
    d = s[0].data
    s.eval_sets = [Experience(j, d, torch.zeros(0, dtype=torch.long), (d.test_y == j).nonzero().flatten(), [j])
                   for j in range(10)]
    r = Engine(cfg(epochs=1, batch_size=32), stream=s).run()
    R = r["accuracy_matrix"]
    assert len(R) == 5 and all(len(row) == 10 for row in R)
    assert r["final_accuracy"] == pytest.approx(sum(R[-1]) / 10)  # all sets count as seen
    # set j (class j) is learned by experience j // 2
    expected_bwt = sum(R[4][j] - R[j // 2][j] for j in range(8)) / 8
    assert r["bwt"] == pytest.approx(expected_bwt)


def test_output_mask_scores_only_the_current_classes():
    s = class_incremental(load_dataset("digits"), 5)
    engine = Engine(cfg(output_mask="experience", batch_size=32), stream=s)
    learner = engine.learner
    learner.allow_experience(s[1])  # classes 2, 3
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([2, 3, 3, 2, 2, 3])
    # independent: the softmax over the two current columns only
    expected = F.cross_entropy(logits[:, [2, 3]], y - 2)
    assert learner.cross_entropy(logits, y) == pytest.approx(float(expected), abs=1e-6)
    # training on the first experience only never moves the output rows of other classes
    first = Stream("one", [s[0]], s.num_classes)
    engine = Engine(cfg(output_mask="experience", batch_size=32, epochs=1), stream=first)
    head = [p for p in engine.model.parameters()][-2:]
    before = [p.detach().clone() for p in head]
    engine.run()
    for p, q in zip(head, before, strict=True):
        assert torch.equal(p[2:], q[2:]) and not torch.equal(p[:2], q[:2])
    with pytest.raises(LifelongError, match="replay"):
        Engine(cfg(output_mask="experience", strategy="er"), stream=s)


def test_label_map_reaches_the_batch_and_the_memory():
    s = class_incremental(load_dataset("digits"), 5)
    swap = torch.arange(10).flip(0)  # stored label c is shown as 9 - c
    s.experiences = [dataclasses.replace(e, label_map=swap, classes=[9 - c for c in e.classes]) for e in s]
    engine = Engine(cfg(strategy="er", epochs=1, batch_size=32), stream=s)
    idx = s[0].train_idx[:8]
    batch = engine.learner.batch(s[0], idx)
    assert torch.equal(batch.new.y, 9 - s[0].data.train_y[idx])
    engine.run()
    stored = engine.strategy.memory.store["y"][:len(engine.strategy.memory)]
    assert set(stored.tolist()) <= set(range(10)) and stored.max() >= 8  # mapped labels (0,1 -> 9,8) kept


def test_augment_applies_to_every_training_segment_only():
    d = load_dataset("digits")
    s = class_incremental(d, 5)
    seen = {}

    def augment(x, g):
        seen["generator"] = g
        return x + 1.0

    d.augment = augment
    try:
        Spy.calls = []
        engine = Engine(cfg(strategy="er", epochs=1, batch_size=16), stream=s)
        captured = []
        original = engine.strategy.after_step

        def after_step(batch, out):
            captured.append(batch)
            original(batch, out)

        engine.strategy.after_step = after_step
        result = engine.run()
        assert seen["generator"] is engine.generator
        last = captured[-1]
        assert len(last.segments) == 2  # new + replay
        for _, seg in last:
            torch.testing.assert_close(seg.x, d.prepare(seg.raw) + 1.0)
        memory = engine.strategy.memory
        raw = memory.store["raw"][:len(memory)]
        assert raw.dtype == d.train_x.dtype and bool((raw[:, None] == d.train_x[None]).all(-1).any(1).all())
        assert result["accuracy_matrix"][-1] == engine.evaluate()  # evaluation is not augmented (deterministic)
    finally:
        del d.augment


def test_online_metrics_reach_the_store_and_the_report(tmp_path):
    from lifelong.report.html import read_run
    from lifelong.report.tables import comparison_table

    result = runner.run(cfg(strategy="er"), tmp_path / "run", stream=online_stream())
    run = read_run(tmp_path / "run")
    for key in ("a_auc", "a_last", "online_accuracy"):
        assert run["metrics"][key] == result[key]
    assert run["meta"]["anytime"] == result["anytime"]
    table = comparison_table([result])
    assert "A_auc" in table and "online acc" in table


@pytest.mark.parametrize("strategy", ["er", "derpp", "scr", "tame"])
def test_memory_receives_each_incoming_sample_once_whatever_online_iter(strategy):
    stream = online_stream()
    n = sum(e.num_train for e in stream)
    engine = Engine(cfg(strategy=strategy, online_iter=3, hparams={"buffer_size": n + 100}), stream=stream)
    engine.run()
    memory = engine.strategy.memory
    assert len(memory) == n
    stored = memory.store["raw"][:n]
    assert len(torch.unique(stored, dim=0)) == len(torch.unique(torch.cat([e.raw(e.train_idx) for e in stream]),
                                                                dim=0))
