"""Small backbones that train on a CPU: an MLP, a small CNN and a reduced ResNet-18 (as in GEM / Mammoth).

Every model is built as `factory(input_shape, num_classes, **options)`, where `input_shape` is one sample's
shape, (channels, height, width) for images or (features,) for vectors; it takes inputs as the datasets store
them (one flat row per sample) and ends in one linear head over every class of the stream. Task-aware
(multi-head) prediction masks that head per task, which is exactly a separate linear head per task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lifelong.errors import LifelongError
from lifelong.registry import Registry


def check_factory(name: str, obj: object) -> None:
    if not callable(obj):
        raise LifelongError(f"'{name}' is not callable: a model is built as factory(input_shape, num_classes)")


MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "lifelong.models", check_factory)


def register_model(name: str, help: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model class under `name`; `help` is its line in `lifelong list`."""
    return MODELS.register(name, help)


class MLP(nn.Sequential):
    """Fully connected ReLU network: input (a flat row) -> hidden... -> classes."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 256)) -> None:
        layers: list[nn.Module] = []
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


def image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """(channels, height, width) of image inputs; anything else is a user error naming the model."""
    if len(input_shape) != 3:
        raise LifelongError(f"model '{model}' needs image inputs (channels, height, width), but the data has inputs "
                            f"of shape {tuple(input_shape)}: use --model mlp, or give the dataset its image shape")
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head: fast enough for CPU image streams."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.shape = image_shape(input_shape, "cnn")
        if min(self.shape[1:]) < 2:
            raise LifelongError(f"model 'cnn' needs images of at least 2x2 pixels, got {self.shape[1]}x{self.shape[2]}")
        self.features = nn.Sequential(
            nn.Conv2d(self.shape[0], width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.view(-1, *self.shape)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ReducedResNet18(nn.Module):
    """ResNet-18 with `nf` base filters (20 in GEM's reduced version) instead of 64.

    Layer for layer GEM's `ResNet18(nclasses, nf=20)` (model/common.py): bias-free 3x3 stem + BN + ReLU, four
    stages of two BasicBlocks (strides 1, 2, 2, 2; 1x1 conv + BN shortcuts), linear head; 1.11 M parameters
    for 100 classes. GEM pools with avg_pool2d(out, 4), which is the global mean on 32x32 inputs; this class
    takes the global mean for every input size, as Mammoth's version does (TinyImageNet's 64x64, CORe50's
    128x128). The default backbone of the standard image benchmarks (`ArrayDataset.default_model`)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, nf: int = 20) -> None:
        super().__init__()
        self.shape = image_shape(input_shape, "resnet18")
        self.stem = nn.Sequential(nn.Conv2d(self.shape[0], nf, 3, 1, 1, bias=False), nn.BatchNorm2d(nf), nn.ReLU())
        blocks, cin = [], nf
        for i, mult in enumerate((1, 2, 4, 8)):
            for j in range(2):
                blocks.append(BasicBlock(cin, nf * mult, 2 if (j == 0 and i > 0) else 1))
                cin = nf * mult
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.stem(x.view(-1, *self.shape)))
        return self.head(h.mean(dim=(2, 3)))


register_model("mlp", "fully connected ReLU network (hidden sizes: --hidden 256,256)")(MLP)
register_model("cnn", "two-block convolutional network for square images")(SmallCNN)
register_model("resnet18", "reduced ResNet-18 (20 base filters), for square images")(ReducedResNet18)


def make_model(name: str, input_shape: Sequence[int] | int, num_classes: int, **kwargs) -> nn.Module:
    """The registered model `name` for inputs of `input_shape` (an int means vectors of that length)."""
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    factory = MODELS.get(name)
    try:
        model = factory(shape, num_classes, **kwargs)
    except TypeError as err:
        if ":" not in name:  # a built-in's own error is ours to see
            raise
        raise LifelongError(f"model '{name}' cannot be built: it is called as {name.split(':')[-1]}(input_shape, "
                            f"num_classes, **model_params) ({str(err).splitlines()[0][:160]})") from None
    if not isinstance(model, nn.Module):
        raise LifelongError(f"model '{name}' returned {type(model).__name__}, not a torch.nn.Module")
    return model

from lifelong.models import pretrained  # noqa: E402,F401  (registers tv-resnet*, torchvision, timm; imports neither)
