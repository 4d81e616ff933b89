"""The strategy contract, checked for every registered strategy and every composable pair.

A strategy joins these tests by being registered: exact resume after a crash, a state that round-trips through
torch.load(weights_only=True), determinism, "neutral hyperparameters train exactly like naive", and, for
compositions, that each part adds and scores only its own batch rows.
"""

import io
import itertools

import pytest
import torch

from lifelong.errors import LifelongError
from lifelong.strategies import STRATEGIES, Batch, make_strategy
from lifelong.training import runner
from lifelong.training.engine import Engine

FAST = {"buffer_size": 40, "replay_batch_size": 8, "fisher_samples": 50,  # small settings, where declared
        "ewc_lambda": 5.0, "si_c": 0.01, "mas_lambda": 0.01, "projection_size": 64}
NAMES = [n for n in STRATEGIES if n != "naive"]
PAIRED = [n for n in NAMES if STRATEGIES.get(n).family in ("replay", "regularisation")]


def fast_hparams(spec):
    names = spec.split("+")
    hp = {}
    for n in names:
        for k, v in FAST.items():
            if k in STRATEGIES.get(n).params:
                hp[f"{n}.{k}" if len(names) > 1 else k] = v
    return hp


@pytest.fixture
def cfg(digits_cfg):
    def make(strategy, **changes):
        return digits_cfg(strategy=strategy, epochs=1, hparams={**fast_hparams(strategy), **changes.pop("hp", {})},
                          **changes)
    return make


class Crash(Exception):
    pass


def same(a, b):
    """Deep equality of nested state (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def weights_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", NAMES)
def test_resume_after_crash_is_exact_and_runs_are_deterministic(tmp_path, cfg, name):
    config = cfg(name, eval_every=5, eval_subsample=20)
    try:
        Engine(config)
    except LifelongError as err:  # closed-form strategies take no step to evaluate between: refused
        assert "takes no SGD step" in str(err)
        config = cfg(name)
    clean = runner.run(config, tmp_path / "clean")
    again = runner.run(config, tmp_path / "again")
    for key in ("accuracy_matrix", "initial_accuracy", "curve"):
        assert again.get(key) == clean.get(key), key
    engine = Engine(config, tmp_path / "crashed")
    steps = engine.experience_steps()
    if steps[min(2, len(steps) - 1)] > 0:  # crash mid-experience (after a step checkpoint)
        target = sum(steps[:2]) + steps[2] // 2 + 1 if len(steps) > 2 else steps[0] // 2 + 1

        def crash(g, total, loss, acc):
            if g == target:
                raise Crash
        engine.recorder.on_step = crash
    else:  # closed-form experiences: crash while evaluating experience 2
        calls, evaluate = [0], engine.evaluator.evaluate

        def crash_on_evaluate():
            calls[0] += 1
            if calls[0] == 4:
                raise Crash
            return evaluate()
        engine.evaluator.evaluate = crash_on_evaluate
    with pytest.raises(Crash):
        runner.execute(engine)
    resumed = runner.resume(tmp_path / "crashed")
    for key in ("accuracy_matrix", "initial_accuracy", "curve", "final_accuracy"):
        assert resumed.get(key) == clean.get(key), key


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips_through_weights_only_load(cfg, name):
    engine = Engine(cfg(name))
    engine.run()
    state = engine.strategy.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    other = Engine(cfg(name))
    other.strategy.load_state_dict(loaded)
    assert same(other.strategy.state_dict(), state)


NEUTRAL = [n for n in NAMES if STRATEGIES.get(n).neutral]


@pytest.mark.parametrize("name", NEUTRAL)
def test_neutral_hyperparameters_train_exactly_like_naive(cfg, name):
    naive = Engine(cfg("naive"))
    r0 = naive.run()
    other = Engine(cfg(name, hp=dict(STRATEGIES.get(name).neutral)))
    r1 = other.run()
    assert weights_equal(naive.model, other.model)
    assert r0["accuracy_matrix"] == r1["accuracy_matrix"]


def test_every_strategy_with_a_strength_declares_its_neutral_setting():
    strengths = {"ewc_lambda", "l2_lambda", "alpha", "beta"}
    for name in NAMES:
        cls = STRATEGIES.get(name)
        assert not (strengths & set(cls.params)) or cls.neutral, name


def own_rows(batch, part):
    """The batch with only the new data and the segments `part` added."""
    own = Batch(batch.new, batch.experience)
    for seg_name, seg in batch:
        if seg_name != "new" and seg_name.split(".")[0] == part.name:
            own.add(seg_name, seg)
    return own


def check_alignment(engine):
    """Wrap the strategy's before_step: every segment's logits are the model's output for that segment's
    inputs, segments are named after their part, and each part's penalty and loss read only its own rows."""
    strategy, model = engine.strategy, engine.model
    parts = {p.name for p in strategy.parts}
    original = strategy.before_step
    checked = [0]

    def before_step(batch, out, grads):
        with torch.no_grad():
            for seg_name, seg in batch:
                assert seg_name == "new" or seg_name.split(".")[0] in parts, seg_name
                assert torch.allclose(out[seg_name], model(seg.x), atol=1e-5), seg_name
            for part in strategy.parts:
                own = own_rows(batch, part)
                mine = own.split(model(own.x))
                for hook in ("penalty", "loss"):
                    a, b = getattr(part, hook)(batch, out), getattr(part, hook)(own, mine)
                    assert (a is None) == (b is None), (part.name, hook)
                    if a is not None:
                        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (part.name, hook)
        checked[0] += 1
        original(batch, out, grads)
    strategy.before_step = before_step
    return checked


@pytest.mark.parametrize("a,b", list(itertools.combinations(PAIRED, 2)))
def test_composed_parts_add_and_score_their_own_rows(cfg, a, b):
    """Every pair of replay and regularisation strategies, on two experiences (memories and teachers exist in
    the second); the order of the parts does not change what each reads, so one order per pair suffices."""
    spec = f"{a}+{b}"
    try:
        make_strategy(spec, fast_hparams(spec))
    except LifelongError as err:  # refused compositions say why in one line
        assert "\n" not in str(err) and any(w in str(err) for w in ("cannot be combined", "twice", "replaces the"))
        return
    engine = Engine(cfg(spec, experiences=2))
    checked = check_alignment(engine)
    engine.run()
    assert checked[0] > 0 or not any(engine.strategy.learns_by_sgd(e) for e in engine.train_stream)


def test_references_cannot_be_combined():
    with pytest.raises(LifelongError, match="cannot be combined"):
        make_strategy("joint+er")


def test_ambiguous_bare_hyperparameter_is_refused_with_the_candidates():
    with pytest.raises(LifelongError, match=r"derpp\.alpha or lwf\.alpha"):
        make_strategy("derpp+lwf", {"alpha": 0.3})
    with pytest.raises(LifelongError, match=r"er\.buffer_size or derpp\.buffer_size"):
        make_strategy("er+derpp", {"buffer_size": 10})
    s = make_strategy("derpp+lwf", {"lwf.alpha": 0.3, "derpp.alpha": 0.2, "beta": 0.1})
    assert s.parts[0].hp["alpha"] == 0.2 and s.parts[1].hp["alpha"] == 0.3 and s.parts[0].hp["beta"] == 0.1
    with pytest.raises(LifelongError, match="not a part"):
        make_strategy("er+lwf", {"ewc.alpha": 1.0})


@pytest.mark.parametrize("a,b", [("derpp", "er"), ("lwf", "derpp"), ("si", "er")])
def test_reversed_order_reads_the_same_rows(cfg, a, b):
    engine = Engine(cfg(f"{a}+{b}", experiences=2))
    checked = check_alignment(engine)
    engine.run()
    assert checked[0] > 0


def test_strategies_that_cannot_be_composed_are_refused_in_one_line():
    alone = [n for n in NAMES if not STRATEGIES.get(n).composable]
    for name in alone:
        with pytest.raises(LifelongError, match=f"{name} cannot be combined"):
            make_strategy(f"{name}+er")
