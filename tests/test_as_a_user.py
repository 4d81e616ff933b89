"""As a user: torchvision-shaped data, one's own model, optimizer and strategy, through the API and the CLI."""

import pytest
import torch

from lifelong.data.datasets import from_tensors, from_torch_dataset
from lifelong.errors import LifelongError
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine


class Images:
    """A torchvision-style dataset: `.data` (uint8 images) and `.targets`."""

    def __init__(self, shape, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.arange(n) % 4
        base = torch.randint(0, 60, (n, *shape), generator=g, dtype=torch.uint8)
        self.data = base + (self.targets * 40).to(torch.uint8).view(-1, *[1] * len(shape))  # learnable
        self.transform = None

    def __len__(self):
        return len(self.targets)


SHAPES = {"grey": ((28, 28), (1, 28, 28)), "colour-last": ((32, 32, 3), (3, 32, 32)),
          "colour-first": ((3, 32, 32), (3, 32, 32)), "grey-channel": ((1, 16, 16), (1, 16, 16))}


@pytest.mark.parametrize("kind", sorted(SHAPES))
@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet18"])
def test_torchvision_shaped_images_train_every_builtin_model(kind, model):
    given, expected = SHAPES[kind]
    data = from_torch_dataset("imgs", Images(given, 96, 0), Images(given, 40, 1), scale=1 / 255)
    assert data.shape == expected and data.train_x.shape == (96, expected[0] * expected[1] * expected[2])
    if kind == "colour-last":  # channels-last is transposed once: pixel (h, w, c) -> (c, h, w)
        src = Images(given, 96, 0).data
        assert torch.equal(data.train_x.view(96, *expected)[5, 2, 7, 3], src[5, 7, 3, 2])
    cfg = RunConfig(scenario="split-digits", experiences=2, model=model, hidden="16", batch_size=16,
                    threads=1, checkpoint_every=0)
    result = Engine(cfg, dataset=data).run()
    assert len(result["accuracy_matrix"]) == 2


def test_image_models_on_vectors_are_one_clear_line():
    x, y = torch.randn(40, 12), torch.arange(40) % 2
    data = from_tensors("vectors", (x, y), (x, y))
    with pytest.raises(LifelongError, match=r"model 'cnn' needs image inputs .* shape \(12,\)"):
        Engine(RunConfig(scenario="split-digits", experiences=1, model="cnn"), dataset=data)


def test_shape_mismatch_between_train_and_test_is_refused():
    with pytest.raises(LifelongError, match="differ in shape"):
        from_tensors("bad", (torch.zeros(4, 8, 8), torch.zeros(4)), (torch.zeros(4, 9, 9), torch.zeros(4)))
