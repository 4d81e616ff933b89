"""The `schedule` subcommand pieces: parsing, JSON and PNG output, help, `lifelong list` descriptions."""

import argparse
import json
import math

import pytest

from lifelong.errors import LifelongError
from lifelong.schedules import SCHEDULES, make_schedule
from lifelong.schedules.cli import (
    add_schedule_parser,
    describe_schedules,
    format_schedules,
    run_schedule_command,
)


def parse(argv):
    parser = argparse.ArgumentParser(prog="lifelong")
    add_schedule_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def run(tmp_path, line):
    out = tmp_path / "lr.json"
    args = parse([*line.split(), "--json", str(out)])
    assert args.handler(args) == 0
    return json.loads(out.read_text())


def test_wsd_json_matches_the_schedule(tmp_path, capsys):
    data = run(
        tmp_path,
        "schedule wsd --steps 50 --peak 0.5 --warmup 5 --decay-start 30 --decay-steps 10 --min-lr 0.05 "
        "--shape 1-sqrt",
    )
    assert list(data) == ["lr"] and len(data["lr"]) == 50
    s = make_schedule("wsd", peak=0.5, warmup=5, decay_start=30, decay_steps=10, min_lr=0.05, shape="1-sqrt")
    assert data["lr"] == [s.lr(t) for t in range(50)]
    assert (
        data["lr"][0] == 0
        and data["lr"][5] == 0.5
        and data["lr"][35] == pytest.approx(0.05 + 0.45 * (1 - 0.5**0.5))
    )
    assert data["lr"][40:] == [0.05] * 10
    assert "wsd" in capsys.readouterr().out


def test_infinite_json_uses_the_run_length(tmp_path):
    line = (
        "schedule infinite --steps 100 --peak 1 --constant 0.5 --min-lr 0.05 --warmup 10 --cooldown-end 30 "
        "--constant-end 80 --cooldown-shape inverse-sqrt --timescale 3"
    )
    lr = run(tmp_path, line)["lr"]
    assert len(lr) == 100
    assert lr[10] == 1.0 and lr[20] == pytest.approx(1 / math.sqrt(2.5)) and lr[30] == pytest.approx(0.5)
    assert lr[80] == 0.5 and lr[90] == pytest.approx(0.5 * 0.1**0.5)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_budgeted_json(tmp_path, name):
    lr = run(tmp_path, f"schedule {name} --steps 20 --peak 1 --warmup 4 --min-lr 0.2")["lr"]
    assert len(lr) == 20 and lr[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert lr[12] == pytest.approx(0.6)  # halfway through the decay (4..20) for both shapes


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_runs_with_defaults(tmp_path, name):
    lr = run(tmp_path, f"schedule {name}")["lr"]
    assert len(lr) == (2 if name == "refined" else 1000) and all(v >= 0 for v in lr)  # refined: its record


def test_plot_writes_a_png(tmp_path):
    png = tmp_path / "plots" / "wsd-s.png"
    args = parse(["schedule", "wsd-s", "--steps", "300", "--pit-stops", "100,200,300", "--plot", str(png)])
    assert run_schedule_command(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_on_the_command_line_is_one_line():
    with pytest.raises(LifelongError, match="decay_start=3 is before the end of warmup"):
        run_schedule_command(parse("schedule wsd --warmup 10 --decay-start 3".split()))
    with pytest.raises(LifelongError, match="warmup=30 is longer than the run"):
        run_schedule_command(parse("schedule cosine --steps 20 --warmup 30".split()))
    with pytest.raises(LifelongError, match="unknown hyperparameter of schedule 'cosine' 'decay_start'"):
        run_schedule_command(parse("schedule cosine --decay-start 3".split()))
    with pytest.raises(LifelongError, match="shape='sqr'"):
        run_schedule_command(parse("schedule wsd --shape sqr".split()))
    with pytest.raises(LifelongError, match="unknown schedule"):
        run_schedule_command(parse("schedule cosin".split()))
    with pytest.raises(LifelongError, match="steps=0"):
        run_schedule_command(parse("schedule cosine --steps 0".split()))


def test_help_and_list_show_every_schedule_and_parameter():
    parser = argparse.ArgumentParser(prog="lifelong")
    sub = add_schedule_parser(parser.add_subparsers(dest="command"))
    text = sub.format_help()
    rows = describe_schedules()
    assert [name for name, _, _ in rows] == sorted(SCHEDULES)
    for name, description, params in rows:
        assert description and name in text
        for key in params:
            assert f"--{key.replace('_', '-')}" in text
    listing = format_schedules()
    assert "--cooldown-shape (default cosine) one of cosine|inverse-sqrt|linear" in listing
    assert "--shape (default linear) one of linear|cosine|1-sqrt|exp|inverse" in listing
