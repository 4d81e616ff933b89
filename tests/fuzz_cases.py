"""Bad-input cases for every command and the Python API, and the classification of what each one did.

Each case is run in the current process (`lifelong.cli.main(argv)` or a Python call) in a fresh working
directory, with an alarm for hangs and an address-space limit for huge allocations. Outcomes:

    clean      non-zero exit (or LifelongError from the API) and no traceback
    traceback  an exception other than LifelongError escaped
    wrong      the bad input was accepted (exit 0 / the call returned)
    hang       the alarm fired

Used by tests/test_bad_input.py (a seeded sample) and by a stand-alone harness (all cases).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
import sqlite3
import stat
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE = ["--scenario", "split-digits", "--hidden", "16", "--epochs", "1", "-q"]
LM_BASE = ["--corpora", "fortunes-en", "--steps-per-phase", "4", "--batch-size", "2", "--seq-len", "16",
           "--eval-every", "2", "--eval-windows", "2", "--no-checkpoints", "--no-progress", "--threads", "1"]
HUGE = str(10 ** 29)


class Hang(BaseException):
    """Raised by the alarm."""


@dataclass
class Case:
    name: str
    argv: list[str] | None = None          # CLI arguments, or
    call: Callable[[Path], Any] | None = None  # a Python API call taking the working directory
    setup: Callable[[Path], None] | None = None
    outside: list[str] = field(default_factory=list)  # paths (relative to the work dir) that must stay untouched
    timeout: int = 60
    expect: str = "error"  # "error": must be refused; "any": success is fine too (only no traceback/hang)


@dataclass
class Outcome:
    case: str
    kind: str  # clean | traceback | wrong | hang
    detail: str = ""


# --- fixtures: built once per session, copied into each case's work dir -----------------------------------


def build_fixtures(root: Path) -> Path:
    """A finished run, an interrupted run with a checkpoint, and an analytic run with model_v1.pt."""
    from lifelong.training import runner
    from lifelong.training.config import RunConfig

    root.mkdir(parents=True, exist_ok=True)
    if (root / "done").exists():
        return root
    small = {"scenario": "split-digits", "hidden": "16", "epochs": 1, "threads": 1}
    runner.run(RunConfig(**small, checkpoint_every=5), root / "fin")
    runner.run(RunConfig(**small, strategy="acil"), root / "acil")

    def stop(step: int, total: int, loss: float, acc: float | None) -> None:
        if step == 12:
            raise KeyboardInterrupt

    try:
        runner.run(RunConfig(**small, checkpoint_every=5), root / "int", on_step=stop)
    except KeyboardInterrupt:
        pass
    (root / "done").write_text("")
    return root


def copy_fixture(fixtures: Path, name: str, work: Path, as_name: str | None = None) -> Path:
    dst = work / (as_name or name)
    shutil.copytree(fixtures / name, dst)
    return dst


# --- damage ----------------------------------------------------------------------------------------------


def set_meta(run: Path, key: str, raw: str) -> None:
    conn = sqlite3.connect(run / "run.sqlite")
    with conn:
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, raw))
    conn.close()


def plant_pickle(path: Path, marker: Path) -> None:
    """A checkpoint file whose unpickling would write `marker` (torch.load with weights_only=False runs it)."""
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil()}, path)


# --- the cases -------------------------------------------------------------------------------------------


def setting_cases() -> list[Case]:
    from lifelong.training.config import SETTINGS

    bad_int = ["abc", "1.5", "-1", "nan", "inf", "", "1e400", HUGE]
    bad_float = ["abc", "nan", "inf", "-1", "1e400", "", "-inf"]
    cases = []
    for name, p in SETTINGS.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(p.default, bool):
            continue
        if isinstance(p.default, int):
            values = [v for v in bad_int if not (v == "-1" and p.low is None)]
            if name in ("experiences",):
                values = [v for v in values if v != HUGE] + ["7"]
        elif isinstance(p.default, float):
            values = [v for v in bad_float if not (v == "-1" and p.low is None)]
        elif p.choices:
            values = ["bogus", "", *[c.upper() for c in p.choices[:1] if c.upper() not in p.choices]]
        else:
            values = {"scenario": ["bogus", "split-", "split-digits-x", ""],
                      "strategy": ["bogus", "er+", "+", "naive+naive+bogus"],
                      "class_order": ["a,b", "0,1", "0,0,1,2,3,4,5,6,7,8", "0,1,2,3,4,5,6,7,8,99"],
                      "model": ["bogus", "MLP"],
                      "hidden": ["a", "0", "-3", "16,,x"],
                      "device": ["bogus", "meta", "mps", "xla", "cuda:99", "tpu"],
                      "data_dir": [],
                      "schedule": ["bogus", "cosine2"],
                      "schedule_params": ["peak", "=1", "bogus=1", "peak=abc"]}.get(name, ["bogus"])
        for v in values:
            cases.append(Case(f"run {flag} {v!r}", ["run", *BASE, flag, v, "--run-dir", "r"]))
    cases += [
        Case("run --seed huge", ["run", *BASE, "--seed", HUGE, "--run-dir", "r"]),
        Case("run --threads huge", ["run", *BASE, "--threads", HUGE, "--run-dir", "r"]),
        Case("run --hidden 100000000", ["run", *BASE, "--hidden", "100000000", "--run-dir", "r"]),
        Case("run --epochs 1000000000", ["run", *BASE, "--epochs", "1000000000", "--run-dir", "r"], timeout=30),
        Case("run --batch-size 0", ["run", *BASE, "--batch-size", "0", "--run-dir", "r"]),
        Case("run --eval-subsample huge", ["run", *BASE, "--eval-subsample", HUGE, "--run-dir", "r"]),
        Case("run permuted --experiences 100000",
             ["run", *BASE, "--scenario", "permuted-digits", "--experiences", "100000", "--run-dir", "r"],
             timeout=30),
        Case("run rotated --experiences 100000",
             ["run", *BASE, "--scenario", "rotated-digits", "--experiences", "100000", "--run-dir", "r"],
             timeout=30),
        Case("run permuted --class-order", ["run", *BASE, "--scenario", "permuted-digits", "--class-order",
                                            "9,8,7,6,5,4,3,2,1,0", "--run-dir", "r"]),
        Case("run rotated --shuffle-classes", ["run", *BASE, "--scenario", "rotated-digits", "--shuffle-classes",
                                               "--run-dir", "r"]),
        Case("run --model cnn on 1-D data", ["run", *BASE, "--scenario", "split-mnist1d", "--model", "cnn",
                                             "--run-dir", "r"]),
        Case("run -p x", ["run", *BASE, "-p", "x", "--run-dir", "r"]),
        Case("run -p bogus=1", ["run", *BASE, "-p", "bogus=1", "--run-dir", "r"]),
        Case("run er -p buffer_size=1e9", ["run", *BASE, "--strategy", "er", "-p", "buffer_size=1e9",
                                           "--run-dir", "r"]),
        Case("run er -p buffer_size=-1", ["run", *BASE, "--strategy", "er", "-p", "buffer_size=-1",
                                          "--run-dir", "r"]),
        Case("run er -p buffer_size=abc", ["run", *BASE, "--strategy", "er", "-p", "buffer_size=abc",
                                           "--run-dir", "r"]),
        Case("run ewc -p ewc_lambda=nan", ["run", *BASE, "--strategy", "ewc", "-p", "ewc_lambda=nan",
                                           "--run-dir", "r"]),
        Case("run --lr 1e30 (diverges)", ["run", *BASE, "--lr", "1e30", "--run-dir", "r"]),
        Case("run --optimizer sgd-schedulefree --schedule cosine",
             ["run", *BASE, "--optimizer", "sgd-schedulefree", "--schedule", "cosine", "--run-dir", "r"]),
        Case("run --schedule-mode infinite --schedule cosine",
             ["run", *BASE, "--schedule-mode", "infinite", "--schedule", "cosine", "--run-dir", "r"]),
        Case("run --unknown-flag", ["run", *BASE, "--bogus-flag", "1"]),
        Case("bogus command", ["bogus"]),
    ]
    return cases


YAMLS: dict[str, bytes] = {
    "int key": b"1: 2\n",
    "bool key": b"yes: 3\n",
    "hparams int": b"hparams: 5\n",
    "hparams list": b"hparams: [1, 2]\n",
    "hparams int key": b"hparams: {1: 2}\n",
    "seed true": b"seed: true\n",
    "shuffle_classes 2": b"shuffle_classes: 2\n",
    "shuffle_classes 'no'": b"shuffle_classes: 'maybe'\n",
    "eval_background 0.5": b"eval_background: 0.5\n",
    "non-utf8": b"scenario: \xff\xfe\x00bad\n",
    "list": b"- a\n- b\n",
    "scalar": b"42\n",
    "lr list": b"lr: [1]\n",
    "lr dict": b"lr: {a: 1}\n",
    "model null": b"model: null\n",
    "unknown": b"bogus_setting: 1\n",
    "seed float": b"seed: 1.5\n",
    "lr nan": b"lr: .nan\n",
    "lr inf": b"lr: .inf\n",
    "batch str": b"batch_size: x\n",
    "invalid": b"a: [\n",
    "tab": b"a:\n\t- b\n",
    "hparams huge buffer": b"strategy: er\nhparams: {buffer_size: 1000000000}\n",
    "experiences bool": b"experiences: true\n",
    "momentum list": b"momentum: [1, 2]\n",
    "data_dir list": b"data_dir: [16, 16]\n",
    "anchors": b"a: &x [*x]\n",
    "date": b"class_order: 2024-01-01\n",
    "optimizer SGD": b"optimizer: SGD\n",
}


def yaml_cases() -> list[Case]:
    cases = []
    for label, data in YAMLS.items():
        def setup(w: Path, data: bytes = data) -> None:
            (w / "c.yaml").write_bytes(data)
        cases.append(Case(f"run --config yaml {label}", ["run", *BASE, "--config", "c.yaml", "--run-dir", "r"],
                          setup=setup))
    cases += [
        Case("run --config /dev/zero", ["run", *BASE, "--config", "/dev/zero", "--run-dir", "r"], timeout=30),
        Case("run --config missing", ["run", *BASE, "--config", "nope.yaml", "--run-dir", "r"]),
        Case("run --config dir", ["run", *BASE, "--config", ".", "--run-dir", "r"]),
        Case("run --config huge file", ["run", *BASE, "--config", "big.yaml", "--run-dir", "r"],
             setup=lambda w: (w / "big.yaml").write_bytes(b"# " + b"x" * (20 << 20) + b"\n")),
    ]
    return cases


def ro_dir(w: Path) -> None:
    (w / "ro").mkdir()
    os.chmod(w / "ro", stat.S_IRUSR | stat.S_IXUSR)


def a_file(w: Path) -> None:
    (w / "f").write_text("x")


def path_cases() -> list[Case]:
    both = lambda w: (a_file(w), ro_dir(w))  # noqa: E731
    cases = [
        Case("run --run-dir a file", ["run", *BASE, "--run-dir", "f"], setup=a_file),
        Case("run --run-dir under a file", ["run", *BASE, "--run-dir", "f/r"], setup=a_file),
        Case("run --run-dir read-only", ["run", *BASE, "--run-dir", "ro/r"], setup=ro_dir),
        Case("run --json a dir", ["run", *BASE, "--run-dir", "r", "--json", "."]),
        Case("run --json under a file", ["run", *BASE, "--run-dir", "r", "--json", "f/x.json"], setup=a_file),
        Case("run --store a file", ["run", *BASE, "--store", "f"], setup=a_file),
        Case("run --log bogus", ["run", *BASE, "--run-dir", "r", "--log", "bogus"]),
        Case("schedule --json a dir", ["schedule", "cosine", "--steps", "10", "--json", "."]),
        Case("schedule --json under a file", ["schedule", "cosine", "--steps", "10", "--json", "f/x.json"],
             setup=a_file),
        Case("schedule --json read-only", ["schedule", "cosine", "--steps", "10", "--json", "ro/x.json"],
             setup=ro_dir),
        Case("schedule --plot a dir", ["schedule", "cosine", "--steps", "10", "--plot", "."]),
        Case("schedule --plot under a file", ["schedule", "cosine", "--steps", "10", "--plot", "f/x.png"],
             setup=a_file),
        Case("schedule --plot read-only", ["schedule", "cosine", "--steps", "10", "--plot", "ro/x.png"],
             setup=ro_dir),
        Case("schedule --plot unknown format", ["schedule", "cosine", "--steps", "10", "--plot", "x.xyz"]),
        Case("lm --out a file", ["lm", *LM_BASE, "--out", "f"], setup=a_file),
        Case("lm --out under a file", ["lm", *LM_BASE, "--out", "f/o"], setup=a_file),
        Case("lm --json a dir", ["lm", *LM_BASE, "--out", "o", "--json", "."]),
        Case("lm --cache-dir a file", ["lm", *LM_BASE, "--out", "o", "--cache-dir", "f"], setup=a_file),
        Case("lm --out read-only", ["lm", *LM_BASE, "--out", "ro/o"], setup=both),
        Case("analytic-demo --out a file", ["analytic-demo", "--dataset", "fashion-mnist", "--out", "f",
                                            "--strategies", "nmc", "--no-report"], setup=a_file),
        Case("compare --out a file", ["compare", *BASE, "--strategies", "naive", "--out", "f"], setup=a_file),
    ]
    return cases


def command_cases() -> list[Case]:
    sch = ["schedule"]
    cases = [
        Case("schedule bogus", [*sch, "bogus"]),
        Case("schedule --steps 0", [*sch, "cosine", "--steps", "0"]),
        Case("schedule --steps -5", [*sch, "cosine", "--steps", "-5"]),
        Case("schedule --steps 1e9", [*sch, "cosine", "--steps", "1e9"]),
        Case("schedule --steps 10^9", [*sch, "cosine", "--steps", "1000000000"], timeout=30),
        Case("schedule --steps huge", [*sch, "cosine", "--steps", HUGE], timeout=30),
        Case("schedule --peak abc", [*sch, "cosine", "--steps", "10", "--peak", "abc"]),
        Case("schedule --peak nan", [*sch, "cosine", "--steps", "10", "--peak", "nan"]),
        Case("schedule --peak -1", [*sch, "cosine", "--steps", "10", "--peak", "-1"]),
        Case("schedule wsd --decay-start 2", [*sch, "wsd", "--steps", "10", "--decay-start", "2"]),
        Case("compare --workers 0", ["compare", *BASE, "--strategies", "naive", "--workers", "0", "--out", "c",
                                     "--no-report"]),
        Case("compare --workers -1", ["compare", *BASE, "--strategies", "naive", "--workers", "-1", "--out", "c",
                                      "--no-report"]),
        Case("compare --workers huge", ["compare", *BASE, "--strategies", "naive", "--workers", HUGE, "--out",
                                        "c", "--no-report"]),
        Case("compare --seeds a", ["compare", *BASE, "--strategies", "naive", "--seeds", "a", "--out", "c"]),
        Case("compare --seeds -1", ["compare", *BASE, "--strategies", "naive", "--seeds", "-1", "--out", "c"]),
        Case("compare --seeds ''", ["compare", *BASE, "--strategies", "naive", "--seeds", ",", "--out", "c"]),
        Case("compare --strategies bogus", ["compare", *BASE, "--strategies", "bogus", "--out", "c"]),
        Case("compare --strategies ''", ["compare", *BASE, "--strategies", ",", "--out", "c"]),
        Case("compare --seeds duplicate", ["compare", *BASE, "--strategies", "naive", "--seeds", "0,0",
                                           "--out", "c"]),
        Case("analytic-demo --dataset bogus", ["analytic-demo", "--dataset", "bogus"]),
        Case("analytic-demo --workers 0", ["analytic-demo", "--dataset", "fashion-mnist", "--workers", "0",
                                           "--strategies", "nmc", "--out", "c", "--no-report"]),
        Case("analytic-demo --strategies bogus", ["analytic-demo", "--dataset", "fashion-mnist", "--strategies",
                                                  "bogus", "--out", "c"]),
        Case("analytic-demo --base-experiences 9", ["analytic-demo", "--dataset", "fashion-mnist",
                                                    "--base-experiences", "9"]),
        Case("reproduce --quick --seeds a", ["reproduce", "--quick", "--seeds", "a", "--out", "c", "-q"]),
        Case("reproduce --quick --strategies bogus", ["reproduce", "--quick", "--strategies", "bogus",
                                                      "--out", "c", "-q"]),
        Case("reproduce --quick --workers 0", ["reproduce", "--quick", "--workers", "0", "--out", "c", "-q"],
             timeout=30),
        Case("lm --lr inf", ["lm", *LM_BASE, "--lr", "inf", "--out", "o"]),
        Case("lm --lr 30", ["lm", *LM_BASE, "--lr", "30", "--out", "o"], timeout=90),
        Case("lm --lr nan", ["lm", *LM_BASE, "--lr", "nan", "--out", "o"]),
        Case("lm --lr -1", ["lm", *LM_BASE, "--lr", "-1", "--out", "o"]),
        Case("lm --threads -1", ["lm", *LM_BASE, "--threads", "-1", "--out", "o"]),
        Case("lm --threads 0", ["lm", *LM_BASE, "--threads", "0", "--out", "o"]),
        Case("lm --threads huge", ["lm", *LM_BASE, "--threads", HUGE, "--out", "o"]),
        Case("lm --seed -1", ["lm", *LM_BASE, "--seed", "-1", "--out", "o"]),
        Case("lm --seed huge", ["lm", *LM_BASE, "--seed", HUGE, "--out", "o"]),
        Case("lm --device tpu", ["lm", *LM_BASE, "--device", "tpu", "--out", "o"]),
        Case("lm --device cuda", ["lm", *LM_BASE, "--device", "cuda", "--out", "o"]),
        Case("lm --device bogus", ["lm", *LM_BASE, "--device", "bogus", "--out", "o"]),
        Case("lm --device meta", ["lm", *LM_BASE, "--device", "meta", "--out", "o"]),
        Case("lm --corpora bogus", ["lm", *LM_BASE, "--corpora", "bogus", "--out", "o"]),
        Case("lm --corpora ''", ["lm", *LM_BASE, "--corpora", ",", "--out", "o"]),
        Case("lm --replay 1.5", ["lm", *LM_BASE, "--replay", "1.5", "--out", "o"]),
        Case("lm --replay nan", ["lm", *LM_BASE, "--replay", "nan", "--out", "o"]),
        Case("lm --steps-per-phase 0", ["lm", *LM_BASE, "--steps-per-phase", "0", "--out", "o"]),
        Case("lm --steps-per-phase huge", ["lm", *LM_BASE, "--steps-per-phase", HUGE, "--out", "o"]),
        Case("lm --batch-size 0", ["lm", *LM_BASE, "--batch-size", "0", "--out", "o"]),
        Case("lm --seq-len 1", ["lm", *LM_BASE, "--seq-len", "1", "--out", "o"]),
        Case("lm --seq-len huge", ["lm", *LM_BASE, "--seq-len", HUGE, "--out", "o"]),
        Case("lm --tokenizer bogus", ["lm", *LM_BASE, "--tokenizer", "bogus", "--out", "o"]),
        Case("lm --tokenizer bpe:x", ["lm", *LM_BASE, "--tokenizer", "bpe:x", "--out", "o"]),
        Case("lm --model bogus", ["lm", *LM_BASE, "--model", "bogus", "--out", "o"]),
        Case("lm --eval-windows 0", ["lm", *LM_BASE, "--eval-windows", "0", "--out", "o"]),
        Case("lm --probe-step -1", ["lm", *LM_BASE, "--probe-step", "-1", "--out", "o"]),
        Case("lm --warmup-frac 2", ["lm", *LM_BASE, "--warmup-frac", "2", "--out", "o"]),
        Case("lm-experiment --replays a", ["lm-experiment", "--replays", "a", "--out", "o"]),
        Case("lm-experiment --replays 2", ["lm-experiment", "--replays", "2", "--out", "o", "--quick"]),
    ]
    return cases


def run_dir_cases(fixtures: Path) -> list[Case]:
    """Damaged run directories given to resume, runs, report and unlearn."""
    def fx(name: str, damage: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
        def setup(w: Path) -> None:
            d = copy_fixture(fixtures, name, w, "r")
            if damage is not None:
                damage(d)
        return setup

    def zombie(d: Path) -> None:  # run.sqlite with the schema and nothing else
        for p in d.iterdir():
            p.unlink()
        from lifelong.tracking.store import SCHEMA

        conn = sqlite3.connect(d / "run.sqlite")
        conn.executescript(SCHEMA)
        conn.close()

    def empty_db(d: Path) -> None:
        (d / "run.sqlite").write_bytes(b"")

    def garbage_db(d: Path) -> None:
        (d / "run.sqlite").write_bytes(os.urandom(4096))

    def ckpt_garbage(d: Path) -> None:
        (d / "checkpoint.pt").write_bytes(os.urandom(1000))

    def ckpt_truncate(d: Path) -> None:
        p = d / "checkpoint.pt"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def ckpt_no_model(d: Path) -> None:
        import torch

        state = torch.load(d / "checkpoint.pt", weights_only=True)
        del state["model"]
        torch.save(state, d / "checkpoint.pt")

    def ckpt_empty_dict(d: Path) -> None:
        import torch

        torch.save({}, d / "checkpoint.pt")

    def ckpt_list(d: Path) -> None:
        import torch

        torch.save([1, 2], d / "checkpoint.pt")

    def ckpt_dir(d: Path) -> None:
        (d / "checkpoint.pt").unlink()
        (d / "checkpoint.pt").mkdir()

    def model_garbage(d: Path) -> None:
        (d / "model_v1.pt").write_bytes(os.urandom(500))

    def model_no_state(d: Path) -> None:
        import torch

        torch.save({"meta": {}}, d / "model_v1.pt")

    cases = []
    dmg = {
        "zombie": ("int", zombie), "0-byte db": ("int", empty_db), "garbage db": ("int", garbage_db),
        "garbage ckpt": ("int", ckpt_garbage), "truncated ckpt": ("int", ckpt_truncate),
        "ckpt without model": ("int", ckpt_no_model), "ckpt empty dict": ("int", ckpt_empty_dict),
        "ckpt a list": ("int", ckpt_list), "ckpt a dir": ("int", ckpt_dir),
        "meta config bad json": ("int", lambda d: set_meta(d, "config", "{bad")),
        "meta config a list": ("int", lambda d: set_meta(d, "config", "[1]")),
        "meta config lr str": ("int", lambda d: set_meta(d, "config", json.dumps(
            {"scenario": "split-digits", "lr": "abc"}))),
        "meta config unknown": ("int", lambda d: set_meta(d, "config", json.dumps({"bogus": 1}))),
        "meta status a number": ("int", lambda d: set_meta(d, "status", "5")),
        "meta result a string": ("fin", lambda d: set_meta(d, "result", "\"x\"")),
        "meta result bad acc": ("fin", lambda d: set_meta(d, "result", json.dumps({"final_accuracy": "x"}))),
        "no meta table": ("int", lambda d: _sql(d, "DROP TABLE meta")),
        "result.json garbage": ("fin", lambda d: (d / "result.json").write_text("{")),
    }
    for label, (src, damage) in dmg.items():
        for cmd in (["resume", "r", "-q"], ["runs", "."], ["report", "r"]):
            if cmd[0] in ("runs", "report") and label.startswith(("garbage ckpt", "truncated", "ckpt")):
                continue  # neither reads the checkpoint
            lenient = cmd[0] in ("runs", "report") and label.startswith(("meta result", "result.json",
                                                                          "meta config lr", "meta config unknown"))
            cases.append(Case(f"{cmd[0]} on {label}", cmd, setup=fx(src, damage),
                              expect="any" if lenient else "error"))
    cases += [
        Case("resume a finished run", ["resume", "r", "-q"], setup=fx("fin")),
        Case("resume missing", ["resume", "nope", "-q"]),
        Case("resume a file", ["resume", "f", "-q"], setup=a_file),
        Case("report missing", ["report", "nope"]),
        Case("report -o a dir", ["report", "r", "-o", "."], setup=fx("fin")),
        Case("report -o under a file", ["report", "r", "-o", "f/x.html"], setup=lambda w: (fx("fin")(w),
                                                                                            a_file(w))),
        Case("report -o read-only", ["report", "r", "-o", "ro/x.html"], setup=lambda w: (fx("fin")(w),
                                                                                          ro_dir(w))),
        Case("run into an existing run", ["run", *BASE, "--run-dir", "r"], setup=fx("fin")),
        Case("run into a zombie", ["run", *BASE, "--run-dir", "r"], setup=fx("int", zombie)),
        Case("unlearn missing run", ["unlearn", "nope", "--classes", "1"]),
        Case("unlearn run without models", ["unlearn", "r", "--classes", "1"], setup=fx("fin")),
        Case("unlearn --classes abc", ["unlearn", "r", "--classes", "abc"], setup=fx("acil")),
        Case("unlearn --classes -1", ["unlearn", "r", "--classes", "-1"], setup=fx("acil")),
        Case("unlearn --classes 99", ["unlearn", "r", "--classes", "99"], setup=fx("acil")),
        Case("unlearn --version 99", ["unlearn", "r", "--classes", "1", "--version", "99"], setup=fx("acil")),
        Case("unlearn --version -1", ["unlearn", "r", "--classes", "1", "--version", "-1"], setup=fx("acil")),
        Case("unlearn --samples missing", ["unlearn", "r", "--samples", "nope.pt"], setup=fx("acil")),
        Case("unlearn --samples bools", ["unlearn", "r", "--samples", "s.json"],
             setup=lambda w: (fx("acil")(w), (w / "s.json").write_text("[true, false]"))),
        Case("unlearn --samples floats", ["unlearn", "r", "--samples", "s.json"],
             setup=lambda w: (fx("acil")(w), (w / "s.json").write_text("[1.5, 2.0]"))),
        Case("unlearn --samples nested", ["unlearn", "r", "--samples", "s.json"],
             setup=lambda w: (fx("acil")(w), (w / "s.json").write_text("[[1], {\"a\": 2}]"))),
        Case("unlearn --samples non-utf8", ["unlearn", "r", "--samples", "s.txt"],
             setup=lambda w: (fx("acil")(w), (w / "s.txt").write_bytes(b"\xff\xfe1"))),
        Case("unlearn --samples a dir", ["unlearn", "r", "--samples", "."], setup=fx("acil")),
        Case("unlearn --samples garbage.pt", ["unlearn", "r", "--samples", "g.pt"],
             setup=lambda w: (fx("acil")(w), (w / "g.pt").write_bytes(os.urandom(100)))),
        Case("unlearn corrupt model_v1.pt", ["unlearn", "r", "--classes", "1"], setup=fx("acil", model_garbage)),
        Case("unlearn model_v1.pt without state", ["unlearn", "r", "--classes", "1"],
             setup=fx("acil", model_no_state)),
        Case("unlearn on zombie db", ["unlearn", "r", "--classes", "1"], setup=fx("acil", zombie)),
    ]
    return cases


def _sql(d: Path, statement: str) -> None:
    conn = sqlite3.connect(d / "run.sqlite")
    with conn:
        conn.execute(statement)
    conn.close()


def api_cases() -> list[Case]:
    def cfg(**kw: Any) -> Callable[[Path], Any]:
        def call(w: Path) -> Any:
            from lifelong.training.config import RunConfig

            return RunConfig(**kw)
        return call

    def run_cfg(**kw: Any) -> Callable[[Path], Any]:
        def call(w: Path) -> Any:
            from lifelong.training import runner
            from lifelong.training.config import RunConfig

            base = {"scenario": "split-digits", "hidden": "16", "epochs": 1}
            return runner.run(RunConfig(**{**base, **kw}), w / "r")
        return call

    bad = {"optimizer": ["SGD", 3], "batch_size": [-4, 0, 2.5, "x", None], "lr": [0, -1, float("nan"),
           float("inf"), "x", None, [0.1]], "shuffle_classes": ["maybe", 2, 0.5, None],
           "seed": [True, -1, 1.5, "x", 10 ** 29], "epochs": [0, True, 10 ** 12], "scenario": [5, "bogus", None],
           "strategy": [None, 1, "bogus"], "hidden": [[16], "0"], "hparams": [5, [1], {1: 2}],
           "device": ["bogus", 0, "meta"], "threads": [0, 10 ** 29], "experiences": [-1, True, 100000],
           "schedule": ["bogus"], "eval_background": ["x", 2], "momentum": [2, -0.1],
           "class_order": [[1, 2], "a"]}
    cases = []
    for name, values in bad.items():
        for v in values:
            cases.append(Case(f"api RunConfig({name}={v!r})", call=cfg(**{name: v})))
    cases += [
        Case("api RunConfig(optimizer='adamw-schedulefree', schedule='cosine')",
             call=cfg(optimizer="adamw-schedulefree", schedule="cosine")),
        Case("api RunConfig(bogus=1)", call=cfg(bogus=1)),
        Case("api run(experiences=100000 permuted)", call=run_cfg(scenario="permuted-digits", experiences=100000),
             timeout=30),
        Case("api run(class_order on permuted)", call=run_cfg(scenario="permuted-digits",
                                                              class_order="9,8,7,6,5,4,3,2,1,0")),
        Case("api run(hidden=100000000)", call=run_cfg(hidden="100000000")),
        Case("api run(epochs=10**9)", call=run_cfg(epochs=10 ** 9), timeout=30),
        Case("api resume(missing)", call=lambda w: __import__("lifelong.training.runner", fromlist=["x"])
             .resume(w / "nope")),
        Case("api compare(no strategies)", call=lambda w: _compare(w, [], [0])),
        Case("api compare(bogus strategy)", call=lambda w: _compare(w, ["bogus"], [0])),
        Case("api compare(seeds=['a'])", call=lambda w: _compare(w, ["naive"], ["a"])),
        Case("api compare(workers=0)", call=lambda w: _compare(w, ["naive"], [0], workers=0)),
        Case("api run_lm(lr=-1)", call=lambda w: _lm(w, lr=-1)),
        Case("api run_lm(threads=-1)", call=lambda w: _lm(w, threads=-1)),
        Case("api run_lm(seed=-1)", call=lambda w: _lm(w, seed=-1)),
        Case("api run_lm(corpora=5)", call=lambda w: _lm(w, corpora=5)),
        Case("api run_lm(device='tpu')", call=lambda w: _lm(w, device="tpu")),
        Case("api make_stream(bogus)", call=lambda w: __import__("lifelong.data.scenarios", fromlist=["x"])
             .make_stream("bogus")),
        Case("api make_schedule(bogus)", call=lambda w: __import__("lifelong.schedules.catalog", fromlist=["x"])
             .make_schedule("bogus")),
    ]
    return cases


def _compare(w: Path, strategies: list, seeds: list, workers: int = 1) -> Any:
    from lifelong.training import runner
    from lifelong.training.config import RunConfig

    return runner.compare(RunConfig(scenario="split-digits", hidden="16", epochs=1), strategies, seeds, w / "c",
                          workers=workers)


def _lm(w: Path, **kw: Any) -> Any:
    from lifelong.lm.train import LMConfig, run_lm

    base = {"corpora": ["fortunes-en"], "steps_per_phase": 4, "batch_size": 2, "seq_len": 16, "eval_every": 2,
            "eval_windows": 2, "save_checkpoints": False, "progress": False, "threads": 1, "out_dir": str(w / "o")}
    return run_lm(LMConfig(**{**base, **kw}))


def symlink_cases(fixtures: Path) -> list[Case]:
    """Symlinks planted in a run directory must never be written through."""
    def plant(src: str, link: str, target_is_dir: bool = False) -> Callable[[Path], None]:
        def setup(w: Path) -> None:
            d = copy_fixture(fixtures, src, w, "r")
            victim = w / "victim"
            if target_is_dir:
                victim.mkdir()
            else:
                victim.write_text("precious")
            (d / link).unlink(missing_ok=True)
            os.symlink(victim, d / link)
        return setup

    cases = [
        Case("run with .write-test symlink", ["run", *BASE, "--run-dir", "r/sub"],
             setup=lambda w: (w.joinpath("r").mkdir(), w.joinpath("victim").write_text("precious"),
                              os.symlink(w / "victim", w / "r" / "sub"), None) and None, outside=["victim"]),
        Case("run into dir with .write-test symlink", ["run", *BASE, "--run-dir", "r"],
             setup=lambda w: (w.joinpath("r").mkdir(), w.joinpath("victim").write_text("precious"),
                              os.symlink(w / "victim", w / "r" / ".write-test")) and None, outside=["victim"]),
        Case("unlearn with requests.jsonl symlink (refused)", ["unlearn", "r", "--classes", "99"],
             setup=plant("acil", "requests.jsonl"), outside=["victim"]),
        Case("unlearn with requests.jsonl symlink", ["unlearn", "r", "--classes", "1"],
             setup=plant("acil", "requests.jsonl"), outside=["victim"]),
        Case("report with plots/ symlink", ["report", "r"], setup=plant("fin", "plots", True), outside=["victim"]),
        Case("resume with checkpoint.pt symlink", ["resume", "r", "-q"], setup=plant("int", "checkpoint.pt"),
             outside=["victim"]),
        Case("report with report.html symlink", ["report", "r"], setup=plant("fin", "report.html"),
             outside=["victim"]),
        Case("resume with result.json symlink", ["resume", "r", "-q"], setup=plant("int", "result.json"),
             outside=["victim"]),
    ]
    return [dataclasses.replace(c, expect="error" if "unlearn" in c.name else "any") for c in cases]


def pickle_cases(fixtures: Path) -> list[Case]:
    """A planted pickle in a checkpoint or model file must never run (marker file must not appear)."""
    def planted(src: str, fname: str) -> Callable[[Path], None]:
        def setup(w: Path) -> None:
            d = copy_fixture(fixtures, src, w, "r")
            plant_pickle(d / fname, w / "PWNED")
        return setup

    out = []
    for cmd in (["resume", "r", "-q"], ["runs", "."], ["report", "r"]):
        out.append(Case(f"{cmd[0]} with planted checkpoint pickle", cmd, setup=planted("int", "checkpoint.pt"),
                        outside=["PWNED"], expect="error" if cmd[0] == "resume" else "any"))
    out.append(Case("unlearn with planted model pickle", ["unlearn", "r", "--classes", "1"],
                    setup=planted("acil", "model_v1.pt"), outside=["PWNED"]))
    out.append(Case("report with planted model pickle", ["report", "r"], setup=planted("acil", "model_v1.pt"),
                    outside=["PWNED"], expect="any"))
    return out


def all_cases(fixtures: Path) -> list[Case]:
    """Every case; read-only directories are left out when running as root (root may write anywhere)."""
    cases = (setting_cases() + yaml_cases() + path_cases() + command_cases() + run_dir_cases(fixtures)
             + api_cases() + symlink_cases(fixtures) + pickle_cases(fixtures))
    if os.geteuid() == 0:
        cases = [c for c in cases if "read-only" not in c.name]
    return cases


# --- running a case --------------------------------------------------------------------------------------


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def snapshot(w: Path, paths: list[str]) -> dict[str, Any]:
    out = {}
    for p in paths:
        q = w / p
        if q.is_dir():
            out[p] = sorted(x.name for x in q.iterdir())
        elif q.exists():
            out[p] = q.read_bytes()
        else:
            out[p] = None
    return out


def run_case(case: Case, work: Path) -> Outcome:
    """Run one case in `work` (created fresh) and classify it."""
    import torch

    if work.exists():
        _rmtree(work)
    work.mkdir(parents=True)
    old = os.getcwd()
    os.chdir(work)
    err, out = io.StringIO(), io.StringIO()
    kind, detail, rc = "", "", 1
    try:
        if case.setup is not None:
            case.setup(work)
        before = snapshot(work, case.outside)
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(case.timeout)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                if case.argv is not None:
                    from lifelong.cli import main

                    try:
                        rc = main(case.argv)
                    except SystemExit as e:
                        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                else:
                    assert case.call is not None
                    case.call(work)
                    rc = 0
            kind = "wrong" if rc == 0 and case.expect == "error" else "clean"
            detail = err.getvalue().strip().splitlines()[-1:] and err.getvalue().strip().splitlines()[-1] or ""
            if rc == 0:
                detail = out.getvalue().strip()[-200:]
        except Hang:
            kind, detail = "hang", f"no answer within {case.timeout} s"
        except BaseException as e:  # noqa: BLE001
            from lifelong.errors import LifelongError

            if isinstance(e, LifelongError) and case.call is not None:
                kind, detail = "clean", str(e)
            elif isinstance(e, KeyboardInterrupt):
                raise
            else:
                kind = "traceback"
                detail = f"{type(e).__name__}: {str(e)[:200]} @ " + traceback.format_exc().strip().splitlines()[-3]
        finally:
            signal.alarm(0)
        if kind == "clean" and "Traceback" in err.getvalue():
            kind, detail = "traceback", "traceback printed"
        if kind == "clean" and case.argv is not None and not (rc == 0 and case.expect == "any"):
            lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("error:") or ": error:" in ln]
            if not lines:
                kind, detail = "traceback", "non-zero exit without an error line: " + err.getvalue()[-200:]
        after = snapshot(work, case.outside)
        if after != before:
            kind, detail = "wrong", f"touched {case.outside}: " + detail
    finally:
        os.chdir(old)
        torch.set_num_threads(1)
    return Outcome(case.name, kind, detail)


def _rmtree(p: Path) -> None:
    for root, dirs, _ in os.walk(p):
        for d in dirs:
            q = Path(root) / d
            if not q.is_symlink():
                os.chmod(q, 0o755)
    shutil.rmtree(p, ignore_errors=True)


def limit_memory(gib: float = 6) -> None:
    import resource

    lim = int(gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
