"""Vision backbones with the user's own pretrained weights: torchvision ResNets and any timm/torchvision model.

Every model is built as `factory(input_shape, num_classes, weights=PATH|name, freeze=bool, ...)` and is a
`PretrainedBackbone`: the network without its classifier (`body`), then one `nn.Linear(feature_dim,
num_classes)` head, registered last, so the analytic strategies (`nmc`, `acil`, `ranpac`, ... with the default
`features=backbone`) read `feature_dim`-d features in front of it. `freeze=True` turns the body's gradients off
and keeps it in eval mode (BatchNorm statistics do not move), so it stays bit-identical while the head trains.

Inputs come as the datasets store them (one flat row per sample); each batch is reshaped to (channels, height,
width), grey images are repeated to 3 channels, resized (bilinear, antialiased) to `image_size` on the batch's
device, and with `normalize="imagenet"` mapped from [0, 1] pixels by the ImageNet mean and std. The library's
own datasets are already standardised by their own mean and std (`normalize="dataset"`, the default), which is
left as is.

- `tv-resnet18`, `tv-resnet34`, `tv-resnet50`: torchvision's ResNet architecture written here in plain torch with
  torchvision's state-dict keys, so the weight files of `torchvision.models.resnet*` (and torch.hub's
  `resnet18-f37072fd.pth`, ...) load without torchvision installed. `weights` is a local file; a torchvision
  weights name (e.g. `IMAGENET1K_V1`) needs torchvision and reads torch.hub's cache (downloading if absent).
- `torchvision` (`arch=<name>`) and `timm` (`arch=<name>`): any model of those packages, imported only when such a
  model is built (one clear line when the package is missing); the last Linear layer of the model is its
  classifier. timm's `weights="pretrained"` uses timm's own cache.

Weight files: a state dict, or a checkpoint holding one under `state_dict` or `model`; a `module.` prefix
(DataParallel) is dropped, and the original classifier's keys are ignored (its size is the pretraining's).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lifelong.errors import LifelongError
from lifelong.models.backbones import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE = ("dataset", "imagenet")


def import_optional(package: str) -> Any:
    """The module `package`, or one LifelongError line saying how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise LifelongError(f"this model needs {package}, which cannot be imported ({e}): install it with "
                            f"`pip install {package}`") from None


# --- torchvision's ResNet in plain torch (same module names, so the same state-dict keys) ----------------------
class TVBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample(cin, width * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TVBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride on the 3x3 (ResNet v1.5)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample(cin, width * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


RESNETS = {18: (TVBasicBlock, (2, 2, 2, 2)), 34: (TVBasicBlock, (3, 4, 6, 3)), 50: (TVBottleneck, (3, 4, 6, 3))}


class TVResNet(nn.Module):
    """torchvision's ResNet-18/34/50 (He et al. 2016; v1.5 bottlenecks) with `fc` as its classifier."""

    def __init__(self, depth: int, num_classes: int = 1000) -> None:
        super().__init__()
        block, counts = RESNETS[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
            layers = []
            for j in range(n):
                layers.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(cin, num_classes)
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- weights ------------------------------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict in the weights file `path` (see the module docstring for the accepted layouts)."""
    p = Path(path)
    if not p.is_file():
        raise LifelongError(f"weights file '{path}' not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise LifelongError(f"cannot read weights file '{path}': {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise LifelongError(f"weights file '{path}' holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_body(body: nn.Module, state: dict[str, Tensor], classifier: str, what: str) -> None:
    """Load `state` into `body` (the network with its classifier at `classifier` removed), checking every key."""
    state = {k: v for k, v in state.items() if not (classifier and k.startswith(classifier + "."))}
    own = body.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or extra or bad:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
                 f"{len(bad)} of another shape (e.g. {bad[0]})" if bad else ""]
        raise LifelongError(f"the weights do not fit {what}: keys " + ", ".join(p for p in parts if p))
    body.load_state_dict(state)


def remove_classifier(net: nn.Module) -> tuple[str, int]:
    """Replace the last nn.Linear of `net` by nn.Identity; (its qualified name, its input size)."""
    found = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise LifelongError(f"{type(net).__name__} has no nn.Linear classifier to replace")
    name, linear = found[-1]
    parent_name, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, attr, nn.Identity())
    return name, linear.in_features


# --- the model ----------------------------------------------------------------------------------------------
class PretrainedBackbone(nn.Module):
    """`body` (a network without its classifier, (N, 3, S, S) -> (N, feature_dim)) and a Linear head."""

    def __init__(self, body: nn.Module, feature_dim: int, input_shape: Sequence[int], num_classes: int, *,
                 image_size: int = 224, normalize: str = "dataset", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, freeze: bool = False, name: str = "pretrained") -> None:
        super().__init__()
        if len(input_shape) != 3 or input_shape[0] not in (1, 3):
            raise LifelongError(f"model '{name}' needs grey or RGB images (channels, height, width), but the data "
                                f"has inputs of shape {tuple(input_shape)}")
        if normalize not in NORMALIZE:
            raise LifelongError(f"normalize={normalize!r} is unknown; valid: {', '.join(NORMALIZE)}")
        if image_size < 1:
            raise LifelongError(f"image_size={image_size} must be at least 1")
        self.shape = tuple(int(s) for s in input_shape)
        self.image_size = int(image_size)
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.body = body
        self.feature_dim = int(feature_dim)
        self.frozen = bool(freeze)
        self.head = nn.Linear(self.feature_dim, num_classes)
        if self.frozen:
            self.body.requires_grad_(False)
            self.body.eval()

    def train(self, mode: bool = True) -> PretrainedBackbone:
        super().train(mode)
        if self.frozen:
            self.body.eval()
        return self

    def prepare(self, x: Tensor) -> Tensor:
        """Flat rows -> (N, 3, image_size, image_size) as the backbone expects (batched, on x's device)."""
        x = x.reshape(-1, *self.shape).float()
        if self.shape[0] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.shape[1:] != (self.image_size, self.image_size):
            x = nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                          align_corners=False, antialias=True)
        if self.normalize == "imagenet":
            x = (x - self.mean) / self.std
        return x

    def features(self, x: Tensor) -> Tensor:
        """(N, feature_dim) features of flat input rows."""
        return self.body(self.prepare(x)).reshape(len(x), -1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def check_options(name: str, options: dict[str, Any]) -> None:
    allowed = {"image_size", "normalize", "mean", "std"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise LifelongError(f"model '{name}' has no option {unknown[0]!r}; valid: weights, freeze, arch, "
                            f"{', '.join(sorted(allowed))}")


def tv_resnet(depth: int, input_shape: Sequence[int], num_classes: int, weights: str | os.PathLike | None = None,
              freeze: bool = False, **options: Any) -> PretrainedBackbone:
    """torchvision's ResNet-`depth` (plain torch) with `weights` (a file, or a torchvision weights name)."""
    name = f"tv-resnet{depth}"
    check_options(name, options)
    net = TVResNet(depth)
    classifier, dim = remove_classifier(net)
    if weights is not None:
        if Path(weights).suffix or os.sep in str(weights) or Path(weights).exists():
            state = read_state_dict(weights)
        else:
            models = import_optional("torchvision.models")
            try:
                state = models.get_model_weights(f"resnet{depth}")[str(weights)].get_state_dict(progress=False)
            except KeyError:
                raise LifelongError(f"'{weights}' is neither a weights file nor a torchvision weights name of "
                                    f"resnet{depth}") from None
        load_body(net, state, classifier, name)
    return PretrainedBackbone(net, dim, input_shape, num_classes, freeze=freeze, name=name, **options)


def torchvision_model(input_shape: Sequence[int], num_classes: int, arch: str = "resnet18",
                      weights: str | os.PathLike | None = None, freeze: bool = False,
                      **options: Any) -> PretrainedBackbone:
    """Any torchvision classification model `arch`, with a weights file or a torchvision weights name."""
    check_options("torchvision", options)
    models = import_optional("torchvision.models")
    try:
        net = models.get_model(arch, weights=None)
    except ValueError:
        raise LifelongError(f"torchvision has no model '{arch}'") from None
    state = None
    if weights is not None:
        if Path(weights).exists() or os.sep in str(weights):
            state = read_state_dict(weights)
        else:
            state = models.get_model_weights(arch)[str(weights)].get_state_dict(progress=False)
    classifier, dim = remove_classifier(net)
    if state is not None:
        load_body(net, state, classifier, f"torchvision model '{arch}'")
    return PretrainedBackbone(net, dim, input_shape, num_classes, freeze=freeze, name=f"torchvision {arch}",
                              **options)


def timm_model(input_shape: Sequence[int], num_classes: int, arch: str = "resnet18",
               weights: str | os.PathLike | None = None, freeze: bool = False, **options: Any) -> PretrainedBackbone:
    """Any timm model `arch` (`num_classes=0`: its pooled features), with a weights file or `pretrained`."""
    check_options("timm", options)
    timm = import_optional("timm")
    try:
        net = timm.create_model(arch, pretrained=weights == "pretrained", num_classes=0)
    except RuntimeError as e:
        raise LifelongError(f"timm cannot build '{arch}': {e}") from None
    if weights is not None and weights != "pretrained":
        classifier = net.default_cfg.get("classifier", "") if hasattr(net, "default_cfg") else ""
        load_body(net, read_state_dict(weights), classifier, f"timm model '{arch}'")
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    options.setdefault("mean", cfg.get("mean", IMAGENET_MEAN))
    options.setdefault("std", cfg.get("std", IMAGENET_STD))
    options.setdefault("image_size", int(cfg.get("input_size", (3, 224, 224))[-1]))
    return PretrainedBackbone(net, net.num_features, input_shape, num_classes, freeze=freeze, name=f"timm {arch}",
                              **options)


def _resnet_factory(depth: int):
    def factory(input_shape: Sequence[int], num_classes: int, weights: str | os.PathLike | None = None,
                freeze: bool = False, **options: Any) -> PretrainedBackbone:
        return tv_resnet(depth, input_shape, num_classes, weights, freeze, **options)

    factory.__name__ = f"tv_resnet{depth}"
    factory.__doc__ = f"torchvision's ResNet-{depth} with the user's weights (see lifelong.models.pretrained)."
    return factory


for _depth in RESNETS:
    register_model(f"tv-resnet{_depth}", f"torchvision's ResNet-{_depth} (plain torch) with your weights file "
                   "(weights=PATH, freeze=true for a frozen backbone)")(_resnet_factory(_depth))
register_model("torchvision", "any torchvision model (arch=NAME) with your weights; needs torchvision")(
    torchvision_model)
register_model("timm", "any timm model (arch=NAME) with your weights; needs timm")(timm_model)
