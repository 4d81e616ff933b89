"""Defining properties of the seed-paper replay methods: UER, FPF, k-FPF and view-batch replay."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lifelong.errors import LifelongError
from lifelong.strategies import make_strategy
from lifelong.strategies.fpf import paper_modules
from lifelong.strategies.uer import angle_logits, norm_factor
from lifelong.strategies.view_batch import one_to_many_kl, translate_flip
from lifelong.training.engine import Engine


@pytest.fixture
def engine(digits_cfg):
    def make(strategy, hp=None, **changes):
        return Engine(digits_cfg(strategy=strategy, epochs=1, hparams=hp or {}, **changes))
    return make


def first_batch(eng, n=8):
    exp = eng.train_stream[0]
    eng.learner.adapt(exp)
    return eng.learner.batch(exp, exp.train_idx[:n])


# --- UER -------------------------------------------------------------------------------------------------
def test_uer_decomposition_on_a_hand_case():
    h = torch.tensor([[3.0, 4.0]])  # ||h|| = 5
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    angle = angle_logits(h, w)
    expected = torch.tensor([[3 / 5, 8 / 10, -7 / (5 * math.sqrt(2))]])
    assert torch.allclose(angle, expected, atol=1e-7)
    assert torch.allclose(norm_factor(h, w), torch.tensor([[5.0, 10.0, 5 * math.sqrt(2)]]))
    assert torch.allclose(norm_factor(h, w) * angle, h @ w.t(), atol=1e-6)  # z_c = ||w_c|| ||h|| cos(theta_c)
    assert angle.abs().max() <= 1


def test_uer_loss_is_cosine_ce_on_new_rows_plus_dot_product_ce_on_replay(engine):
    eng = engine("uer", {"scale": 5.0})
    s, model = eng.strategy, eng.model
    batch = first_batch(eng)
    old = first_batch(eng, 12)
    batch.add("uer", s.ctx.segment(old.new.raw[8:], old.new.y[8:], scored=True))
    out = batch.split(model(batch.x))
    loss = s.loss(batch, out)
    with torch.no_grad():
        h = torch.relu(model[0](batch.new.x))  # the MLP minus its head, computed independently
        w = model[-1].weight
        cos = (h / h.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).t()
        expected = F.cross_entropy(5.0 * cos, batch.new.y) + F.cross_entropy(model(batch["uer"].x), batch["uer"].y)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_uer_current_loss_ignores_the_class_weight_norms(engine):
    eng = engine("uer")
    s, model = eng.strategy, eng.model
    batch = first_batch(eng)
    before = s.loss(batch, batch.split(model(batch.x)))
    with torch.no_grad():
        model[-1].weight[3] *= 7.0
        model[-1].weight[0] *= 0.2
    batch = first_batch(eng)
    after = s.loss(batch, batch.split(model(batch.x)))
    assert torch.allclose(before, after, atol=1e-6)  # no buffer yet: L = L_cur, a function of angles only


# --- FPF and k-FPF ---------------------------------------------------------------------------------------
def test_fpf_selects_the_head_all_batchnorm_and_the_stem_conv(engine):
    model = engine("fpf", model="resnet18").model
    chosen = paper_modules(model)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert chosen[0] is model.stem[0] and chosen[-1] is model.head
    assert chosen[1:-1] == bns and len(bns) == 1 + 8 * 2 + 3  # stem, two per block, three shortcuts
    mlp = engine("fpf").model
    assert paper_modules(mlp) == [mlp[-1]]  # no BatchNorm, no convolution: the head alone


def filled(eng):
    for k in range(0, 64, 16):
        b = first_batch(eng, 64)
        eng.strategy.memory.add(raw=b.new.raw[k:k + 16], y=b.new.y[k:k + 16])
    return eng


@pytest.mark.parametrize("modules", ["paper", "head"])
def test_fpf_touches_only_the_selected_modules(engine, modules):
    eng = filled(engine("fpf", {"modules": modules, "replay_batch_size": 8, "fpf_lr": 0.1}, model="resnet18"))
    model = eng.model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eng.strategy.finetune(3)
    after = model.state_dict()
    selected = {id(p) for m in eng.strategy.selected_modules() for p in m.parameters(recurse=False)}
    selected |= {id(b) for m in eng.strategy.selected_modules() for b in m.buffers(recurse=False)}
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, t in tensors.items():
        same = torch.equal(before[name], after[name])
        if id(t) in selected and not name.endswith("num_batches_tracked"):
            assert not same, name
        elif id(t) not in selected:
            assert same, name
    assert model.training and all(m.training for m in model.modules())  # modes restored
    assert eng.strategy.fpf_steps == 3


def test_fpf_without_replay_and_at_end_finetunes_once_after_the_last_experience(engine):
    eng = engine("fpf", {"replay": False, "at": "end", "fpf_iters": 4})
    eng.run()
    assert eng.strategy.fpf_steps == 4


@pytest.mark.parametrize("k,iters", [(3, 1), (4, 2)])
def test_kfpf_makes_exactly_k_rounds_over_one_pass(engine, k, iters):
    eng = engine("kfpf", {"k": k, "fpf_iters": iters, "buffer_size": 40, "replay_batch_size": 8})
    takes = [0]
    take = eng.strategy.memory.take

    def counted(slots):
        takes[0] += 1
        return take(slots)
    eng.strategy.memory.take = counted
    eng.run()
    assert takes[0] == k * iters  # no per-step replay: the buffer is read by the fine-tuning only
    assert eng.strategy.rounds == k and eng.strategy.fpf_steps == k * iters


def test_kfpf_score_selection_picks_the_most_moving_modules(engine):
    eng = filled(engine("kfpf", {"modules": "score", "top_modules": 1}))
    s, model = eng.strategy, eng.model
    s.begin_experience(eng.train_stream[0])
    with torch.no_grad():
        model[0].weight.add_(0.001)  # 2048 parameters moved by 1e-3: score 1e-6
        model[2].bias.add_(0.1)  # 10 of 330 moved by 0.1: score 1e-2 / 33
    assert s.selected_modules() == [model[2]]


# --- view-batch ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("repeats", [1, 3])
def test_view_batch_puts_each_sample_repeats_times_in_the_step(engine, repeats):
    eng = engine("view-batch", {"repeats": repeats, "augment": "none", "buffer_size": 40, "replay_batch_size": 4})
    s = eng.strategy
    first = first_batch(eng)
    s.observe(first, None)  # the memory now holds these 8
    batch = s.training_batch(first_batch(eng, 8))
    x = batch.x
    originals = torch.cat([batch.new.x, batch["view-batch"].x])
    assert len(x) == repeats * len(originals)
    for row in originals:
        assert int((x == row).all(1).sum()) == repeats * int((originals == row).all(1).sum())
    names, y = batch.scored()
    assert len(y) == len(x)  # every view is scored


def test_view_batch_translation_and_flip_on_a_hand_image():
    img = torch.arange(1.0, 10.0).reshape(1, 9)  # 1x3x3: rows 1 2 3 / 4 5 6 / 7 8 9
    blank = torch.zeros(9)
    down_right = translate_flip(img, (1, 3, 3), torch.tensor([[1, 1]]), torch.tensor([False]), blank)
    assert down_right.tolist() == [[0, 0, 0, 0, 1, 2, 0, 4, 5]]
    flipped = translate_flip(img, (1, 3, 3), torch.tensor([[0, 0]]), torch.tensor([True]), blank)
    assert flipped.tolist() == [[3, 2, 1, 6, 5, 4, 9, 8, 7]]


def test_view_batch_one_to_many_kl_on_a_hand_case():
    anchor = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)  # p = (1/4, 3/4)
    views = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]], requires_grad=True)  # q = (1/2, 1/2), then q = p
    loss = one_to_many_kl(anchor, views, repeats=3)
    expected = (0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5) + 0.0) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-7)
    loss.backward()
    assert anchor.grad is None or not anchor.grad.any()  # the anchor is the fixed target


def test_view_batch_crop_flip_on_vectors_is_one_clear_line():
    s = make_strategy("view-batch", {"augment": "crop-flip"})
    vectors = SimpleNamespace(data=SimpleNamespace(input_shape=(64,)))
    ctx = SimpleNamespace(generator=torch.Generator(), stream=[vectors])
    with pytest.raises(LifelongError, match="needs image inputs") as err:
        s.setup(ctx)
    assert "\n" not in str(err.value)
