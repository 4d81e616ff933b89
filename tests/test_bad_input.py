"""Bad input: every invalid invocation (CLI or Python API) ends with one clear line and a non-zero exit, never a
traceback, a silently accepted value or a hang. The full list of cases is generated in tests/fuzz_cases.py; each
run tries a seeded sample of them (set LIFELONG_FUZZ_SEED / LIFELONG_FUZZ_N to replay or widen it)."""

from __future__ import annotations

import json
import os
import random

import fuzz_cases as fc
import pytest
import torch

from lifelong.data.datasets import from_tensors
from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.training.config import RunConfig, load_yaml


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return fc.build_fixtures(tmp_path_factory.mktemp("fixtures"))


def assert_clean(case: fc.Case, tmp_path) -> str:
    out = fc.run_case(case, tmp_path / "w")
    assert out.kind == "clean", f"{case.name}: {out.kind}: {out.detail}"
    return out.detail


def test_sampled_bad_invocations(fixtures, tmp_path):
    """A seeded sample of several hundred generated cases: each is a clean one-line refusal."""
    seed = int(os.environ.get("LIFELONG_FUZZ_SEED", random.randrange(10**6)))
    n = int(os.environ.get("LIFELONG_FUZZ_N", 40))
    cases = [c for c in fc.all_cases(fixtures) if c.timeout <= 60 and not c.name.startswith(("lm --lr 30",))]
    assert len(cases) > 300
    failures = []
    for case in random.Random(seed).sample(cases, n):
        out = fc.run_case(case, tmp_path / "w")
        if out.kind != "clean":
            failures.append(f"{case.name}: {out.kind}: {out.detail}")
    assert not failures, f"LIFELONG_FUZZ_SEED={seed}:\n" + "\n".join(failures)


def refuse_constant(name: str) -> None:
    pytest.fail(f"bare {name} in a JSON file")


# --- item 5: lifelong lm checks the loss -----------------------------------------------------------------------


@pytest.mark.parametrize("lr", ["1e4", "inf"])  # 1e4: NaN by update 10; 30 stayed finite here
def test_lm_nonfinite_loss_stops_with_valid_json(tmp_path, capsys, lr):
    from lifelong.cli import main

    if lr == "inf":  # refused before training: a learning rate must be finite
        assert main(["lm", *fc.LM_BASE, "--lr", lr, "--out", str(tmp_path / "o")]) == 2
        assert "lr" in capsys.readouterr().err
        return
    code = main(["lm", *fc.LM_BASE, "--steps-per-phase", "30", "--eval-every", "10", "--lr", lr,
                 "--out", str(tmp_path / "o"), "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "loss became" in err and "Traceback" not in err
    for path in (tmp_path / "o" / "result.json", tmp_path / "r.json"):
        data = json.loads(path.read_text(), parse_constant=refuse_constant)
        assert data["status"] == "failed" and data["eval"], data.keys()


# --- item 6: the Python API validates ---------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [
    ("optimizer", "SGD"), ("batch_size", -4), ("lr", 0), ("shuffle_classes", "maybe"), ("shuffle_classes", 2),
    ("seed", True), ("seed", 10**29), ("epochs", True), ("experiences", 100000), ("hidden", "100000000"),
    ("device", "meta"), ("device", "mps"), ("threads", 10**29), ("lr", float("inf")), ("hparams", {1: 2}),
    ("eval_background", 0.5), ("hidden", [16]), ("scenario", None),
])
def test_python_api_refuses(field, value):
    with pytest.raises(LifelongError, match=field):
        RunConfig(**{field: value})


def test_python_api_schedulefree_with_a_schedule_refused():
    with pytest.raises(LifelongError, match="replaces the schedule"):
        RunConfig(optimizer="adamw-schedulefree", schedule="cosine")


def test_param_conversions_are_unambiguous():
    flag, count = Param(False, "x"), Param(1, "x", low=0)
    assert flag.coerce("f", "no") is False and flag.coerce("f", 1) is True and count.coerce("n", 3.0) == 3
    for bad in (2, 0.5, None, [True]):
        with pytest.raises(LifelongError, match="not a valid bool"):
            flag.coerce("f", bad)
    for bad in (True, 1.5, None, "1e3", [1]):
        with pytest.raises(LifelongError, match="not a valid int"):
            count.coerce("n", bad)


# --- item 9: the causes of the tracebacks ---------------------------------------------------------------------


@pytest.mark.parametrize("data,match", [
    (b"1: 2\n", "not a string"), (b"yes: 3\n", "not a string"), (b"hparams: 5\n", "hparams must be a mapping"),
    (b"hparams: [1]\n", "hparams must be a mapping"), (b"scenario: \xff\xfe\n", "not UTF-8"),
    (b"- a\n", "must hold a mapping"),
])
def test_yaml_refused(tmp_path, data, match):
    (tmp_path / "c.yaml").write_bytes(data)
    with pytest.raises(LifelongError, match=match):
        load_yaml(tmp_path / "c.yaml")


def test_yaml_endless_file_refused():
    with pytest.raises(LifelongError, match="larger than"):
        load_yaml("/dev/zero")


ITEM9 = ["run --seed huge", "run --threads huge", "run --hidden 100000000", "run --epochs 1000000000",
         "run permuted --experiences 100000", "run rotated --experiences 100000", "run --config /dev/zero",
         "schedule --steps 10^9", "schedule --json a dir", "schedule --plot under a file",
         "schedule --plot unknown format", "report -o a dir", "report -o under a file", "lm --out a file",
         "lm --json a dir", "lm --cache-dir a file", "run --device 'meta'", "run --device 'mps'",
         "run --device 'xla'", "lm --device tpu", "lm --device cuda", "run --model cnn on 1-D data",
         "compare --workers huge", "lm --threads -1", "lm --seed -1", "resume on meta config bad json",
         "resume on ckpt without model", "unlearn corrupt model_v1.pt", "run --config yaml int key",
         "run --config yaml hparams int", "run --config yaml non-utf8"]

ITEM10 = ["run permuted --class-order", "run --config yaml seed true", "run --config yaml shuffle_classes 2",
          "unlearn --samples bools", "compare --workers 0", "compare --workers -1", "runs on 0-byte db",
          "report on 0-byte db", "api RunConfig(optimizer='SGD')", "api RunConfig(batch_size=-4)",
          "api RunConfig(lr=0)", "api RunConfig(shuffle_classes='maybe')"]


@pytest.mark.parametrize("name", ITEM9 + ITEM10)
def test_listed_cases_are_clean(fixtures, tmp_path, name):
    """The tracebacks (item 9) and silently accepted inputs (item 10) the issue lists, one by one."""
    (case,) = [c for c in fc.all_cases(fixtures) if c.name == name]
    assert_clean(case, tmp_path)
    if name.endswith("0-byte db"):
        assert (tmp_path / "w" / "r" / "run.sqlite").stat().st_size == 0


def _with(**change):
    x, y = torch.rand(20, 4), torch.arange(20) % 2
    parts = {"train_x": x, "train_y": y, "test_x": x.clone(), "test_y": y.clone(), **change}
    return lambda: from_tensors("mine", (parts["train_x"], parts["train_y"]), (parts["test_x"], parts["test_y"]))


@pytest.mark.parametrize("make,message", [
    (_with(train_y=torch.eye(2, dtype=torch.long)[torch.arange(20) % 2]), r"shape \(20, 2\) \(one-hot\? give"),
    (_with(test_y=(torch.arange(20) % 2)[:, None]), r"test labels must be one class id per sample"),
    (_with(test_x=torch.rand(20, 5)), r"train inputs have \(4,\) features, test inputs \(5,\)"),
    (_with(test_x=torch.rand(0, 4), test_y=torch.zeros(0, dtype=torch.long)), "the test split is empty"),
    (_with(train_x=torch.rand(20, 4).index_put_((torch.tensor([3]), torch.tensor([2])), torch.tensor(float("nan")))),
     "train input 3 holds NaN or infinite values"),
])
def test_users_data_that_cannot_be_learned_is_refused_when_made(make, message):
    with pytest.raises(LifelongError, match=message):
        make()


def test_a_users_loader_that_cannot_be_imported_says_why(tmp_path, monkeypatch):
    from lifelong.data.scenarios import parse_scenario

    (tmp_path / "broken_loader_mod.py").write_text("import no_such_package_xyz\n\ndef load(root=None):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LifelongError, match=r"cannot import broken_loader_mod \(No module named 'no_such_package_xyz'"):
        parse_scenario("split-broken_loader_mod:load")
    with pytest.raises(LifelongError, match="cannot import no_such_mod_abc"):
        parse_scenario("task-split-no_such_mod_abc.data:load")


@pytest.mark.parametrize("optimizer,params,message", [
    ("adam", "betas=0.9", "optimizer adam cannot be built with optimizer_params='betas=0.9'"),
    ("adam", "eps=-1", "Invalid epsilon value"),
    ("rmsprop", "alpha=-1", "optimizer rmsprop cannot be built"),
])
def test_optimizer_arguments_torch_refuses_are_one_line(optimizer, params, message):
    from lifelong.training.engine import Engine

    with pytest.raises(LifelongError, match=message):
        Engine(RunConfig(scenario="split-digits", optimizer=optimizer, optimizer_params=params, checkpoint_every=0))


def test_a_logger_that_cannot_be_made_leaves_the_run_directory_free(tmp_path):
    from lifelong.training import runner

    cfg = RunConfig(scenario="split-digits", epochs=1, hidden="8")
    with pytest.raises(LifelongError, match="unknown logger 'foo'"):
        runner.run(cfg, tmp_path / "r", loggers=["csv", "foo"])
    assert not (tmp_path / "r" / "run.sqlite").exists()
    assert runner.run(cfg, tmp_path / "r", loggers=["csv"])["final_accuracy"] > 0


def test_the_default_number_of_experiences_that_does_not_fit_the_data_says_it_is_the_default():
    from lifelong.data import make_stream

    x, y = torch.rand(40, 3), torch.arange(40) % 4
    with pytest.raises(LifelongError, match=r"allowed \[1, 4\] for 4 classes \(experiences=5 is the split "
                                            r"scenarios' default: set --experiences"):
        make_stream("split-digits", dataset=from_tensors("t", (x, y), (x, y)))
    with pytest.raises(LifelongError, match=r"for 4 classes$"):  # given by the user: no hint
        make_stream("split-digits", n_experiences=5, dataset=from_tensors("t", (x, y), (x, y)))
