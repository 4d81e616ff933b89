"""MIR's virtual step and GSS's gradients (lifelong.strategies.retrieval) on models with BatchNorm and dropout:
the torch.func passes must run such models as plain autograd on a copy of them does, and leave the model's own
running statistics alone."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import LifelongError
from lifelong.strategies.retrieval import batch_gradient, per_sample_gradients, virtual_step
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine


def conv_bn(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Dropout(dropout), nn.Flatten(), nn.Linear(256, 10))


def autograd_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The independent computation: backward through a copy of the model in train mode."""
    twin = copy.deepcopy(model).train()
    loss = F.cross_entropy(twin(x), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(twin.parameters()))])


def test_batch_and_virtual_gradients_with_batchnorm_equal_autograd_and_keep_the_running_statistics():
    model = conv_bn().train()
    x, y = torch.randn(6, 64), torch.randint(0, 10, (6,))
    stats = {k: v.clone() for k, v in model.named_buffers()}
    expected = autograd_gradient(model, x, y)
    assert torch.allclose(batch_gradient(model, x, y, F.cross_entropy), expected, atol=1e-6)
    theta, theta_v, _ = virtual_step(model, x, y, F.cross_entropy, lr=0.1)
    step = torch.cat([(theta[k] - theta_v[k]).reshape(-1) for k in theta]) / 0.1
    assert torch.allclose(step, expected, atol=1e-5)
    assert all(torch.equal(v, stats[k]) for k, v in model.named_buffers())


def test_per_sample_gradients_with_batchnorm_are_each_sample_alone():
    model = conv_bn().train()
    x, y = torch.randn(3, 64), torch.randint(0, 10, (3,))
    stats = {k: v.clone() for k, v in model.named_buffers()}
    got = per_sample_gradients(model, x, y, F.cross_entropy)
    for i in range(3):
        assert torch.allclose(got[i], autograd_gradient(model, x[i:i + 1], y[i:i + 1]), atol=1e-5)
    assert all(torch.equal(v, stats[k]) for k, v in model.named_buffers())


def test_per_sample_gradients_draw_a_dropout_mask_per_sample():
    model = conv_bn(dropout=0.5).train()
    x = torch.randn(1, 64).expand(4, 64)  # four copies of one sample: only their masks differ
    got = per_sample_gradients(model, x, torch.zeros(4, dtype=torch.long), F.cross_entropy)
    assert not torch.equal(got[0], got[1])


def test_batchnorm_over_features_is_refused_in_one_line():
    model = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10)).train()
    with pytest.raises(LifelongError, match="BatchNorm1d"):
        per_sample_gradients(model, torch.randn(3, 64), torch.zeros(3, dtype=torch.long), F.cross_entropy)


@pytest.mark.parametrize("strategy", ["mir", "gss"])
def test_mir_and_gss_train_a_model_with_batchnorm_and_dropout(strategy):
    cfg = RunConfig(scenario="split-digits", strategy=strategy, experiences=2, checkpoint_every=0,
                    hparams={"buffer_size": 40})
    result = Engine(cfg, model=conv_bn(dropout=0.1)).run()
    assert result["final_accuracy"] > 0.5
