"""Vision backbones with the user's weights (lifelong.models.pretrained): no network, random weights in a file."""

import functools
import subprocess
import sys

import pytest
import torch

from lifelong.errors import LifelongError
from lifelong.models.backbones import make_model
from lifelong.models.pretrained import TVResNet, read_state_dict
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A torchvision-layout ResNet-18 checkpoint (1000-class fc, DataParallel prefix) with random weights."""
    torch.manual_seed(0)
    net = TVResNet(18)
    for m in net.modules():  # non-trivial BatchNorm statistics, so loading them is visible
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path, net.state_dict()


def test_resnets_have_torchvisions_parameter_counts_and_keys():
    # torchvision.models.resnet18() / resnet50() have 11,689,512 / 25,557,032 parameters (1000 classes)
    assert sum(p.numel() for p in TVResNet(18).parameters()) == 11_689_512
    assert sum(p.numel() for p in TVResNet(50).parameters()) == 25_557_032
    keys = set(TVResNet(18).state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv2.weight", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias", "fc.weight"} <= keys


def test_torchvision_state_dict_keys_match_when_installed():
    models = pytest.importorskip("torchvision.models")
    for depth in (18, 34, 50):
        ours = {k: v.shape for k, v in TVResNet(depth).state_dict().items()}
        theirs = {k: v.shape for k, v in getattr(models, f"resnet{depth}")().state_dict().items()}
        assert ours == theirs


def test_loading_a_weights_file_replaces_the_head(weights):
    path, saved = weights
    model = make_model("tv-resnet18", (3, 32, 32), 7, weights=str(path))
    assert model.feature_dim == 512 and model.head.in_features == 512 and model.head.out_features == 7
    body = model.body.state_dict()
    assert all(torch.equal(body[k], saved[k]) for k in body) and "fc.weight" not in body
    assert [m for m in model.modules() if isinstance(m, torch.nn.Linear)] == [model.head]


def test_features_are_the_networks_pooled_features_of_the_resized_input(weights):
    path, saved = weights
    model = make_model("tv-resnet18", (1, 8, 8), 3, weights=str(path), image_size=32).eval()
    x = torch.rand(4, 64)
    reference = TVResNet(18)
    reference.load_state_dict(saved)
    reference.fc = torch.nn.Identity()
    rgb = x.view(4, 1, 8, 8).repeat(1, 3, 1, 1)
    big = torch.nn.functional.interpolate(rgb, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        assert torch.allclose(model.features(x), reference.eval()(big), atol=1e-5)
        assert model(x).shape == (4, 3)


def test_imagenet_normalisation_of_unit_range_pixels(weights):
    path, _ = weights
    model = make_model("tv-resnet18", (3, 4, 4), 2, weights=str(path), image_size=4, normalize="imagenet")
    x = torch.full((1, 48), 0.485)
    prepared = model.prepare(x)
    assert torch.allclose(prepared[0, 0], torch.zeros(4, 4), atol=1e-6)
    assert torch.allclose(prepared[0, 1], torch.full((4, 4), (0.485 - 0.456) / 0.224), atol=1e-6)


def test_frozen_backbone_stays_bit_identical_after_a_training_step(weights):
    path, _ = weights
    model = make_model("tv-resnet18", (3, 16, 16), 4, weights=str(path), freeze=True, image_size=32)
    before = {k: v.clone() for k, v in model.body.state_dict().items()}
    head = model.head.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3 * 16 * 16)), torch.arange(8) % 4)
    loss.backward()
    opt.step()
    after = model.body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert not torch.equal(head, model.head.weight) and not model.body.training


def test_unfrozen_backbone_trains(weights):
    path, _ = weights
    model = make_model("tv-resnet18", (3, 16, 16), 4, weights=str(path), image_size=32)
    before = model.body.conv1.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(model(torch.randn(8, 768)), torch.arange(8) % 4).backward()
    opt.step()
    assert not torch.equal(before, model.body.conv1.weight)


def test_nmc_runs_on_the_frozen_backbone(weights, tmp_path):
    path, _ = weights
    factory = functools.partial(make_model, "tv-resnet18", weights=str(path), freeze=True, image_size=32)
    cfg = RunConfig.from_dict({"scenario": "split-digits", "strategy": "nmc", "seed": 0, "threads": 1,
                               "device": "cpu", "batch_size": 64})
    engine = Engine(cfg, model=lambda shape, n: factory(shape, n))
    result = engine.run()
    learner = engine.strategy.learner
    assert learner.in_features == 512 and sorted(learner.classes_) == list(range(10))
    assert result["final_accuracy"] > 0.3  # random conv features of 8x8 digits; chance is 0.1


def test_bad_weights_and_inputs_are_one_line_errors(weights, tmp_path):
    path, saved = weights
    with pytest.raises(LifelongError, match="not found"):
        make_model("tv-resnet18", (3, 8, 8), 2, weights=str(tmp_path / "nope.pth"))
    torch.save({k: v for k, v in saved.items() if not k.startswith("layer4")}, tmp_path / "partial.pth")
    with pytest.raises(LifelongError, match="missing"):
        make_model("tv-resnet18", (3, 8, 8), 2, weights=str(tmp_path / "partial.pth"))
    with pytest.raises(LifelongError, match="missing"):
        make_model("tv-resnet34", (3, 8, 8), 2, weights=str(path))  # a ResNet-18 file: fewer blocks
    torch.save({**saved, "conv1.weight": torch.zeros(64, 1, 7, 7)}, tmp_path / "grey.pth")
    with pytest.raises(LifelongError, match=r"1 of another shape \(e.g. conv1.weight\)"):
        make_model("tv-resnet18", (3, 8, 8), 2, weights=str(tmp_path / "grey.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(LifelongError, match="cannot read"):
        read_state_dict(tmp_path / "junk.pth")
    with pytest.raises(LifelongError, match="grey or RGB images"):
        make_model("tv-resnet18", (64,), 2)
    with pytest.raises(LifelongError, match="no option 'imagesize'"):
        make_model("tv-resnet18", (3, 8, 8), 2, imagesize=32)


def test_missing_timm_or_torchvision_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(LifelongError, match=r"needs timm.*pip install timm"):
        make_model("timm", (3, 8, 8), 2, arch="resnet18")
    with pytest.raises(LifelongError, match="needs torchvision.models"):
        make_model("torchvision", (3, 8, 8), 2, arch="resnet18")


def test_importing_the_module_imports_neither_torchvision_nor_timm():
    code = ("import sys, lifelong.models.pretrained, lifelong.training.engine; "
            "print(sorted(m for m in ('torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
