"""End-to-end runs of `lifelong lm` (tiny) and its bad-input messages."""

import json

import pytest
import torch

from lifelong.errors import LifelongError
from lifelong.lm.cli import main
from lifelong.lm.corpora import FORTUNES_DIR
from lifelong.lm.models import build_model
from lifelong.lm.train import LMConfig, run_lm

requires_fortunes = pytest.mark.skipif(
    not (FORTUNES_DIR / "de").is_dir(),
    reason="needs the Debian packages fortunes, fortunes-de, fortunes-es, fortunes-it",
)


TINY = [
    "--steps-per-phase",
    "30",
    "--batch-size",
    "8",
    "--seq-len",
    "32",
    "--eval-every",
    "15",
    "--eval-windows",
    "16",
    "--no-progress",
    "--threads",
    "1",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lm-cache"))


@requires_fortunes
def test_two_phase_run_json_and_adaptation(tmp_path, cache):
    out = tmp_path / "r.json"
    rc = main(
        [
            "lm",
            "--corpora",
            "fortunes-en,fortunes-de",
            "--replay",
            "0.25",
            "--schedule",
            "infinite",
            "--json",
            str(out),
            "--out",
            str(tmp_path / "run"),
            "--cache-dir",
            cache,
            "--probes",
            "4",
            "--probe-step",
            "20",
            "--probe-len",
            "24",
            *TINY,
        ]
    )
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["tokens_per_second"] > 0
    ev = r["eval"]
    assert [e["step"] for e in ev] == [0, 15, 30, 45, 60] and [e["phase"] for e in ev] == [0, 0, 0, 1, 1]
    assert set(ev[0]["loss"]) == {"fortunes-en", "fortunes-de"}
    en, de = (
        (lambda k: [e["loss"][k] for e in ev])("fortunes-en"),
        (lambda k: [e["loss"][k] for e in ev])("fortunes-de"),
    )
    assert en[2] < en[0] - 1.0  # phase 1 learns English
    assert de[4] < de[2]  # phase 2 lowers the loss on the current corpus (German)
    ends = r["phase_end"]
    assert [e["deployable"] for e in ends] == ["decayed", "decayed"]
    assert (tmp_path / "run" / "checkpoints" / "phase2-fortunes-de" / "config.json").is_file()
    assert (tmp_path / "run" / "loss.png").is_file() and (tmp_path / "run" / "result.json").is_file()
    since = [p["since_exposure"] for p in r["probes"]]
    assert since[:3] == [-1, 0, 1] and all(0.0 <= p["recognition"] <= 1.0 for p in r["probes"])
    assert set(r["summary"]["forgetting"]) == {"fortunes-en", "fortunes-de"}


@requires_fortunes
def test_union_phase_and_gpt2(tmp_path, cache):
    r = run_lm(
        LMConfig(
            corpora=["fortunes-es+fortunes-it"],
            model="tiny-gpt2",
            steps_per_phase=10,
            batch_size=4,
            seq_len=16,
            eval_every=10,
            eval_windows=4,
            out_dir=str(tmp_path),
            cache_dir=cache,
            progress=False,
            save_checkpoints=False,
            plot=False,
        )
    )
    assert set(r["eval"][-1]["loss"]) == {"fortunes-es", "fortunes-it"} and len(r["phase_end"]) == 1


def _err(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@requires_fortunes
def test_bad_inputs_one_line_each(tmp_path, capsys, cache):
    base = ["lm", "--out", str(tmp_path / "o"), "--cache-dir", cache, *TINY]
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.txt").write_text("\n \n\n")
    (tmp_path / "small.txt").write_text("a few words\n\nand a second paragraph\n\nthird one\n")
    assert "replay fraction 1 is outside [0, 1)" in _err(capsys, [*base, "--replay", "1.0"])
    assert "outside [0, 1)" in _err(capsys, [*base, "--replay", "-0.1"])
    assert "is empty" in _err(capsys, [*base, "--corpora", str(tmp_path / "empty")])
    assert "is empty" in _err(capsys, [*base, "--corpora", str(tmp_path / "blank.txt")])
    assert "does not exist" in _err(capsys, [*base, "--corpora", str(tmp_path / "missing.txt")])
    assert "cannot read corpus file" in _err(capsys, [*base, "--corpora", "/proc/self/mem"])
    assert "fewer than one batch" in _err(
        capsys, [*base, "--corpora", f"fortunes-en,{tmp_path / 'small.txt'}"]
    )
    assert "exceeds the model's maximum of 1024" in _err(capsys, [*base, "--seq-len", "2048"])
    assert "Did you mean 'fortunes-de'" in _err(capsys, [*base, "--corpora", "fortune-de"])
    assert "unknown model preset" in _err(capsys, [*base, "--model", "tiny-lama"])


def test_model_dir_vocab_and_length_mismatch(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(
        GPT2Config(vocab_size=100, n_embd=16, n_layer=1, n_head=2, n_positions=64)
    ).save_pretrained(tmp_path)
    with pytest.raises(LifelongError, match="tokenizer has 257 tokens but the model's vocabulary has 100"):
        build_model(str(tmp_path), 257, 32)
    with pytest.raises(LifelongError, match="sequence length 128 exceeds the model's maximum of 64"):
        build_model(str(tmp_path), 100, 128)
    assert isinstance(build_model(str(tmp_path), 100, 64), torch.nn.Module)
