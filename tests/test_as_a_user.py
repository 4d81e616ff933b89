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


PLUGIN = '''
import torch
from torch import nn
from lifelong.data.datasets import from_tensors
from lifelong.strategies import Strategy


class Mine(Strategy):
    """a strategy defined outside the package"""
    name = "mine"
    calls = 0

    def after_step(self, batch, out):
        type(self).calls += 1


def load(root=None):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 4
    x = torch.randn(120, 6, generator=g) + y.unsqueeze(1).float()
    return from_tensors("toy", (x[:80], y[:80]), (x[80:], y[80:]))


class Net(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.body = nn.Linear(input_shape[0], 8)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "myplug"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN)
    dist = tmp_path / "site" / "myplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lifelong.strategies]\nmine-ep = myplug:Mine\n\n"
                                            "[lifelong.datasets]\ntoy = myplug:load\n\n"
                                            "[lifelong.models]\ntiny-net = myplug:Net\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from lifelong.data.datasets import DATASETS
    from lifelong.models.backbones import MODELS
    from lifelong.strategies import STRATEGIES
    for reg in (STRATEGIES, DATASETS, MODELS):
        monkeypatch.setattr(reg, "_plugins_loaded", False)
        monkeypatch.setattr(reg, "_items", dict(reg._items))
        monkeypatch.setattr(reg, "_help", dict(reg._help))
    return tmp_path


def test_own_strategy_dataset_and_model_by_import_path_through_the_cli(plugin):
    from lifelong import cli

    code = cli.main(["run", "--scenario", "split-myplug:load", "--experiences", "2", "--strategy", "myplug:Mine",
                     "--model", "myplug:Net", "--run-dir", str(plugin / "run"), "-q", "--json",
                     str(plugin / "out.json")])
    assert code == 0
    import json

    import myplug
    result = json.loads((plugin / "out.json").read_text())
    result = result["results"][0] if "results" in result else result
    assert myplug.Mine.calls == 4 and len(result["accuracy_matrix"]) == 2  # 2 experiences x 40 samples / 32


def test_entry_points_make_plugins_names(plugin):
    from lifelong import cli
    from lifelong.strategies import STRATEGIES

    assert "mine-ep" in list(STRATEGIES)
    assert cli.main(["run", "--scenario", "split-toy", "--experiences", "2", "--strategy", "mine-ep+er",
                     "--model", "tiny-net", "--run-dir", str(plugin / "ep"), "-q"]) == 0


def test_import_path_mistakes_are_one_line(plugin):
    from lifelong.strategies import make_strategy

    with pytest.raises(LifelongError, match="cannot import nosuchpkg"):
        make_strategy("nosuchpkg.mod:Thing")
    with pytest.raises(LifelongError, match="has no 'Missing'"):
        make_strategy("myplug:Missing")
    with pytest.raises(LifelongError, match="not a subclass of lifelong.strategies.Strategy"):
        make_strategy("myplug:load")


class Crash(Exception):
    pass


def toy(seed=0, shift=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(200) % 4
    x = torch.randn(200, 6, generator=g) + shift * y.unsqueeze(1).float()
    return from_tensors("toy", (x[:160], y[:160]), (x[160:], y[160:]))


def test_runs_on_own_data_record_it_and_resume_only_on_the_same_data(tmp_path):
    from lifelong.tracking.store import RunStore
    from lifelong.training import runner

    cfg = RunConfig(scenario="split-digits", experiences=2, hidden="16", batch_size=16, threads=1,
                    checkpoint_every=3, strategy="er")
    clean = runner.run(cfg, tmp_path / "clean", dataset=toy())
    assert clean["scenario"] == "split-toy"  # listed as the user's data, not as the config's scenario

    def crash(g, total, loss, acc):
        if g == 7:
            raise Crash
    with pytest.raises(Crash):
        runner.run(cfg, tmp_path / "crashed", on_step=crash, dataset=toy())
    meta = RunStore.open(tmp_path / "crashed").meta()
    assert meta["data"]["name"] == "split-toy" and meta["data"]["source"] == "dataset"
    assert meta["data"]["fingerprint"] == Engine(cfg, dataset=toy()).stream.fingerprint()
    with pytest.raises(LifelongError, match=r"trained on your own data 'split-toy'.*dataset=\.\.\."):
        runner.resume(tmp_path / "crashed")
    with pytest.raises(LifelongError, match="other data than given now"):
        runner.resume(tmp_path / "crashed", dataset=toy(shift=1.5))
    assert RunStore.open(tmp_path / "crashed").meta()["status"] != "finished"  # refusals change nothing
    resumed = runner.resume(tmp_path / "crashed", dataset=toy())
    assert resumed["accuracy_matrix"] == clean["accuracy_matrix"]


def test_compare_takes_the_users_data(tmp_path):
    from lifelong.training import runner

    base = RunConfig(scenario="split-digits", experiences=2, hidden="16", batch_size=16, threads=1)
    out = runner.compare(base, ["naive", "er"], [0], tmp_path / "cmp", workers=2, dataset=toy())
    assert out["scenario"] == "split-toy" and all("error" not in r for r in out["results"])
    assert {r["scenario"] for r in out["results"]} == {"split-toy"}
    single = runner.run(base.with_overrides(strategy="er"), tmp_path / "single", dataset=toy())
    assert single["accuracy_matrix"] == out["results"][1]["accuracy_matrix"]  # same data in the workers


def test_continual_evaluation_on_small_data_works_with_defaults_and_refuses_an_impossible_size():
    data = toy()  # 40 test samples in all: fewer than the default 500 per experience
    cfg = RunConfig(scenario="split-digits", experiences=2, hidden="16", batch_size=16, threads=1, eval_every=2)
    result = Engine(cfg, dataset=data).run()
    assert result["curve"]["steps"][0] == 2
    with pytest.raises(LifelongError, match="eval_subsample=100 is larger than the data"):
        Engine(cfg.with_overrides(eval_subsample=100), dataset=data)


class TinyNet(torch.nn.Module):
    """A user's model: built from the data's input shape and the number of classes."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.body = torch.nn.Linear(input_shape[0], 12)
        self.head = torch.nn.Linear(12, num_classes)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


class OtherNet(torch.nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.net = torch.nn.Linear(input_shape[0], num_classes)

    def forward(self, x):
        return self.net(x)


def test_own_model_and_optimizer_through_the_api_store_and_resume(tmp_path):
    from lifelong.tracking.store import RunStore
    from lifelong.training import runner

    cfg = RunConfig(scenario="split-digits", experiences=2, batch_size=16, threads=1, checkpoint_every=3,
                    lr=0.005)
    engine = Engine(cfg, dataset=toy(), model=TinyNet, optimizer=torch.optim.RMSprop)
    assert isinstance(engine.model, TinyNet) and type(engine.optimizer) is torch.optim.RMSprop
    assert engine.optimizer.defaults["lr"] == 0.005  # a class is built with the config's learning rate
    clean = runner.run(cfg, tmp_path / "clean", dataset=toy(), model=TinyNet, optimizer=torch.optim.RMSprop)

    def crash(g, total, loss, acc):
        if g == 7:
            raise Crash
    with pytest.raises(Crash):
        runner.run(cfg, tmp_path / "crashed", on_step=crash, dataset=toy(), model=TinyNet,
                   optimizer=torch.optim.RMSprop)
    code = RunStore.open(tmp_path / "crashed").meta()["code"]
    assert code == {"model": "test_as_a_user.TinyNet", "optimizer": "torch.optim.rmsprop.RMSprop"}
    with pytest.raises(LifelongError, match="your own model test_as_a_user.TinyNet"):
        runner.resume(tmp_path / "crashed", dataset=toy())
    with pytest.raises(LifelongError, match="holds another optimizer's state"):  # KeyError 'momentum' before
        runner.resume(tmp_path / "crashed", dataset=toy(), model=TinyNet, optimizer=torch.optim.SGD)
    with pytest.raises(LifelongError, match="holds another model's weights"):  # load_state_dict's traceback before
        runner.resume(tmp_path / "crashed", dataset=toy(), model=OtherNet, optimizer=torch.optim.RMSprop)
    resumed = runner.resume(tmp_path / "crashed", dataset=toy(), model=TinyNet, optimizer=torch.optim.RMSprop)
    assert resumed["accuracy_matrix"] == clean["accuracy_matrix"]
    factory = Engine(cfg, dataset=toy(), model=TinyNet(toy().shape, 4),
                     optimizer=lambda params: torch.optim.Adagrad(params, lr=0.1))
    assert type(factory.optimizer) is torch.optim.Adagrad


def test_any_torch_optimizer_by_name_with_its_arguments():
    engine = Engine(RunConfig(scenario="split-digits", experiences=2, optimizer="rmsprop",
                              optimizer_params="alpha=0.9,eps=1e-6,centered=True"), dataset=toy())
    assert type(engine.optimizer) is torch.optim.RMSprop  # not AdamW, as it silently was
    assert engine.optimizer.defaults["centered"] is True and engine.optimizer.defaults["eps"] == 1e-6
    engine.run()
    with pytest.raises(LifelongError, match="unknown argument of RMSprop 'alpah'. Did you mean 'alpha'"):
        RunConfig(optimizer="rmsprop", optimizer_params="alpah=0.9")
    with pytest.raises(LifelongError, match="needs a closure"):
        RunConfig(optimizer="lbfgs")
    with pytest.raises(LifelongError, match="takes only sparse gradients"):  # it failed at the first step
        RunConfig(optimizer="sparseadam")


def test_compare_takes_a_model_factory_and_an_optimizer_class(tmp_path):
    from lifelong.training import runner

    base = RunConfig(scenario="split-digits", experiences=2, batch_size=16, threads=1)
    out = runner.compare(base, ["naive", "er"], [0], tmp_path / "cmp", workers=1, dataset=toy(), model=TinyNet,
                         optimizer=torch.optim.RMSprop)
    assert all("error" not in r for r in out["results"]), out["results"]
    with pytest.raises(LifelongError, match="not an instance"):
        runner.compare(base, ["naive"], [0], tmp_path / "cmp2", dataset=toy(), model=TinyNet((6,), 4))
    with pytest.raises(LifelongError, match="define it at the top level of a module"):
        runner.compare(base, ["naive"], [0], tmp_path / "cmp3", dataset=toy(), model=TinyNet,
                       optimizer=lambda params: torch.optim.Adam(params))


def test_bf16_mixed_precision_trains_resumes_exactly_and_fp16_needs_cuda(tmp_path):
    from lifelong.training import runner

    base = RunConfig(scenario="split-digits", hidden="32", batch_size=16, threads=1, checkpoint_every=5,
                     strategy="er", lr=0.05)
    fp32 = runner.run(base, tmp_path / "fp32")
    cfg = base.with_overrides(precision="bf16-mixed")
    clean = runner.run(cfg, tmp_path / "clean")
    assert abs(clean["final_accuracy"] - fp32["final_accuracy"]) < 0.1 and clean["accuracy_matrix"] != fp32[
        "accuracy_matrix"]  # bfloat16 arithmetic really ran, and learns as well

    def crash(g, total, loss, acc):
        if g == 33:
            raise Crash
    with pytest.raises(Crash):
        runner.run(cfg, tmp_path / "crashed", on_step=crash)
    assert runner.resume(tmp_path / "crashed")["accuracy_matrix"] == clean["accuracy_matrix"]
    if not torch.cuda.is_available():
        with pytest.raises(LifelongError, match="16-mixed' needs CUDA"):
            Engine(base.with_overrides(precision="16-mixed", device="cpu"))


def test_own_pieces_through_the_cli_are_logged_reported_and_listed(plugin):
    import csv

    from lifelong import cli

    run = plugin / "logged"
    assert cli.main(["run", "--scenario", "split-myplug:load", "--experiences", "2", "--strategy", "myplug:Mine",
                     "--model", "myplug:Net", "--optimizer", "rmsprop", "--optimizer-params", "alpha=0.9",
                     "--lr", "0.005", "--run-dir", str(run), "-q", "--log", "csv"]) == 0
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert any(r.get("loss") for r in rows) and any(r.get("accuracy/exp_1") for r in rows)
    assert cli.main(["report", str(run), "-o", str(plugin / "report.html")]) == 0
    page = (plugin / "report.html").read_text()
    assert "myplug:Mine" in page and "split-myplug:load" in page
    assert cli.main(["runs", str(plugin)]) == 0


class TupleOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.head(x), x


@pytest.mark.parametrize("model,message", [
    (TupleOut(), "returned a tuple, not a tensor of logits"),
    (torch.nn.Linear(64, 10).double(), "float64 parameters.*model.float()"),
    (torch.nn.Linear(64, 5), "5 outputs per input, and the stream has 10 classes"),
    (torch.nn.Linear(64, 12), "12 outputs per input, and the stream has 10 classes"),
    (torch.nn.Linear(100, 10), r"cannot take this data's inputs \(float32 rows of shape \(64,\)\)"),
    (torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.Flatten(0)), r"shape \(20,\) for 2 inputs"),
])
def test_users_model_that_cannot_train_on_the_stream_is_one_line(model, message):
    with pytest.raises(LifelongError, match=message):
        Engine(RunConfig(scenario="split-digits", checkpoint_every=0), model=model)


def test_checking_the_users_model_draws_nothing_and_leaves_it_as_it_was():
    model = torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.BatchNorm1d(10), torch.nn.Dropout(0.5))
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    Engine(RunConfig(scenario="split-digits", checkpoint_every=0, seed=7), model=model)
    assert model.training and all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.rand(3), expected)


def test_schedule_scales_each_of_the_users_param_groups_by_its_own_rate():
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))

    def groups(params):
        return torch.optim.Adam([{"params": list(model[0].parameters()), "lr": 1e-4},
                                 {"params": list(model[2].parameters()), "lr": 1e-3}])

    cfg = RunConfig(scenario="split-digits", checkpoint_every=0, schedule="cosine", lr=0.01, experiences=2)
    seen = []
    engine = Engine(cfg, model=model, optimizer=groups,
                    on_step=lambda g, total, loss, acc: seen.append([q["lr"] for q in engine.optimizer.param_groups]))
    own = Engine(cfg, on_step=lambda g, total, loss, acc: seen_own.append(own.optimizer.param_groups[0]["lr"]))
    seen_own = []
    engine.run()
    own.run()
    assert len(seen) == len(seen_own) > 10 and max(seen_own) <= 0.01 and len(set(seen_own)) > 10  # the cosine
    for (a, b), rate in zip(seen, seen_own, strict=True):
        assert a == pytest.approx(rate * 0.01, rel=1e-12) and b == pytest.approx(rate * 0.1, rel=1e-12)


def test_a_built_optimizer_is_refused_in_one_line():
    model = torch.nn.Linear(64, 10)
    with pytest.raises(LifelongError, match=r"lambda params: torch.optim.Adam\(params, ...\)"):
        Engine(RunConfig(scenario="split-digits", checkpoint_every=0), model=model,
               optimizer=torch.optim.Adam(model.parameters()))


@pytest.mark.parametrize("labels,message", [
    (["cat", "dog"] * 10, "not <U3 values"),
    ([0.5, 1.0] * 10, "fractional"),
    ([-1, 1] * 10, "found -1"),
])
def test_labels_that_are_not_class_ids_are_one_line(labels, message):
    x = torch.rand(20, 4)
    with pytest.raises(LifelongError, match=message):
        from_tensors("mine", (x, labels), (x, labels))


def test_whole_float_and_bool_labels_are_class_ids():
    x = torch.rand(4, 3)
    data = from_tensors("mine", (x, torch.tensor([0.0, 1.0, 2.0, 1.0])), (x, [True, False, True, False]))
    assert data.train_y.tolist() == [0, 1, 2, 1] and data.test_y.tolist() == [1, 0, 1, 0]


def test_an_optimizer_class_gets_the_configs_settings_as_the_same_optimizer_by_name():
    cfg = RunConfig(scenario="split-digits", checkpoint_every=0, lr=0.02, momentum=0.8, weight_decay=1e-3)
    by_class = Engine(cfg, optimizer=torch.optim.SGD).optimizer.param_groups[0]
    assert (by_class["lr"], by_class["momentum"], by_class["weight_decay"]) == (0.02, 0.8, 1e-3)
    rms = Engine(cfg, optimizer=torch.optim.RMSprop).optimizer.param_groups[0]
    assert (rms["lr"], rms["momentum"], rms["weight_decay"]) == (0.02, 0, 1e-3)  # SGD's momentum is not RMSprop's


BAD_MODELS = '''
import torch
from torch import nn


class DictNet(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(input_shape[0], num_classes)

    def forward(self, x):
        return {"logits": self.head(x)}


class SmallHead(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(input_shape[0], 2)

    def forward(self, x):
        return self.head(x)


def no_arguments():
    return nn.Linear(3, 3)
'''


@pytest.mark.parametrize("name,message", [("DictNet", "returned a dict, not a tensor of logits"),
                                          ("SmallHead", "gives 2 outputs per input"),
                                          ("no_arguments", "is called as no_arguments(input_shape, num_classes")])
def test_a_model_given_by_import_path_is_checked_like_one_given_from_python(plugin, capsys, name, message):
    from lifelong import cli

    (plugin / "site" / "badnets.py").write_text(BAD_MODELS)
    code = cli.main(["run", "--scenario", "split-myplug:load", "--experiences", "2", "--model", f"badnets:{name}",
                     "--run-dir", str(plugin / "run"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_a_strategy_defined_in_an_interactive_session_is_refused_before_compare_spawns_workers(tmp_path,
                                                                                                monkeypatch):
    """python -c, a notebook or the REPL: the workers cannot import __main__, and every run of the strategy
    failed with 'unknown strategy' while the others ran."""
    import __main__
    from lifelong.strategies import STRATEGIES, Strategy
    from lifelong.training import runner

    monkeypatch.delattr(__main__, "__file__", raising=False)
    Interactive = type("Interactive", (Strategy,), {"name": "interactive-test", "__module__": "__main__"})
    monkeypatch.setitem(STRATEGIES._items, "interactive-test", Interactive)
    base = RunConfig(scenario="split-digits", experiences=2, threads=1)
    with pytest.raises(LifelongError, match="interactive-test is defined in this interactive session"):
        runner.compare(base, ["naive", "interactive-test"], [0], tmp_path / "cmp", workers=1)


def test_a_dataset_loader_without_a_root_parameter_loads_and_refuses_a_data_dir(plugin, capsys):
    from lifelong import cli

    (plugin / "site" / "rootless.py").write_text(
        "import torch\nfrom lifelong.data.datasets import from_tensors\n\n\n"
        "def load():\n    g = torch.Generator().manual_seed(0)\n"
        "    return from_tensors('r', (torch.randn(40, 3, generator=g), torch.arange(40) % 4),\n"
        "                        (torch.randn(8, 3, generator=g), torch.arange(8) % 4))\n")
    argv = ["run", "--scenario", "split-rootless:load", "--experiences", "2", "-q"]
    assert cli.main([*argv, "--run-dir", str(plugin / "a")]) == 0  # TypeError: unexpected keyword 'root' before
    assert cli.main([*argv, "--run-dir", str(plugin / "b"), "--data-dir", str(plugin)]) == 2
    assert "takes no root argument" in capsys.readouterr().err
