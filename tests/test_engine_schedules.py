"""The engine with learning-rate schedules, decay branches and schedule-free optimizers."""

import pytest
import torch

from lifelong import cli
from lifelong.errors import LifelongError
from lifelong.schedules import StreamSchedule, eval_mode
from lifelong.tracking.store import RunStore
from lifelong.training import runner
from lifelong.training.config import RunConfig
from lifelong.training.engine import CHECKPOINT, Engine

SCHEDULED = {"schedule": "cosine", "schedule_mode": "restart", "schedule_params": "warmup=4,min_lr=0.001"}
WSD_MAIN = {"schedule": "constant", "schedule_params": "warmup=5"}  # WSD's main branch: warmup, then stable


class Crash(Exception):
    pass


def train(cfg, run_dir=None, on_step=None):
    """(engine, result) of a run, stored in run_dir when given (the engine stays inspectable)."""
    engine = Engine(cfg, run_dir, on_step=on_step)
    if run_dir is None:
        return engine, engine.run()
    return engine, runner.execute(engine)


def recorder(engine_box, sink):
    """An on_step callback recording (loss, learning rate of the step just taken)."""
    def on_step(g, total, loss, acc):
        sink.append((loss, engine_box[0].optimizer.param_groups[0]["lr"]))
    return on_step


def without_timing(branches):
    return [{k: v for k, v in b.items() if k != "seconds"} for b in branches]


def test_default_settings_equal_an_explicit_constant_schedule(digits_cfg):
    runs = []
    for extra in ({}, {"schedule": "constant"}):
        box, seen = [], []
        engine = Engine(digits_cfg(**extra), on_step=recorder(box, seen))
        box.append(engine)
        runs.append((engine.run(), seen, engine.model.state_dict()))
    (a, la, ma), (b, lb, mb) = runs
    assert la == lb and a["accuracy_matrix"] == b["accuracy_matrix"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert {lr for _, lr in la} == {0.05}


@pytest.mark.parametrize("schedule,mode,params", [
    ("cosine", "restart", "warmup=4,min_lr=0.001"),
    ("cosine", "continue", "warmup=4,min_lr=0.001"),
    ("infinite", "infinite", "constant=0.02,min_lr=0.001,warmup=3,cooldown_end=8,constant_end=25"),
])
def test_learning_rates_follow_the_stream_schedule(digits_cfg, schedule, mode, params):
    cfg = digits_cfg(schedule=schedule, schedule_mode=mode, schedule_params=params)
    box, seen = [], []
    engine = Engine(cfg, on_step=recorder(box, seen))
    box.append(engine)
    engine.run()
    lengths = engine.experience_steps()
    expected = StreamSchedule(cfg.build_schedule(), lengths, mode)
    assert [lr for _, lr in seen] == [expected.lr(g) for g in range(sum(lengths))]
    starts = [sum(lengths[:k]) for k in range(len(lengths))]
    first_rates = [seen[s][1] for s in starts]
    if mode == "restart":
        assert first_rates == [0.0] * len(lengths)  # re-warmed from 0 at every experience
    else:
        assert first_rates[0] == 0.0 and min(first_rates[1:]) > 0.0  # warmed up once
    if mode == "continue":
        assert seen[-1][1] < 0.002 < seen[starts[2]][1]  # one cosine over the whole stream


@pytest.mark.parametrize("strategy,extra", [("naive", WSD_MAIN), ("er", SCHEDULED)])
def test_branches_leave_the_main_branch_bit_identical(tmp_path, digits_cfg, strategy, extra):
    base = digits_cfg(strategy=strategy, eval_every=5, eval_subsample=20, **extra)
    plain, r_plain = train(base, tmp_path / "plain")
    branched, r_branched = train(base.with_overrides(branch_every_experience=True, branch_steps=6), tmp_path / "b")
    for key in ("accuracy_matrix", "initial_accuracy", "curve", "final_accuracy"):
        assert r_plain[key] == r_branched[key], key
    sp, sb = plain.model.state_dict(), branched.model.state_dict()
    assert all(torch.equal(sp[k], sb[k]) for k in sp)
    losses = [RunStore.open(d).scalars("loss") for d in (tmp_path / "plain", tmp_path / "b")]
    assert losses[0] == losses[1]
    assert "branches" not in r_plain and len(r_branched["branches"]) == 5


def test_branch_rows_and_models_are_stored(tmp_path, digits_cfg):
    cfg = digits_cfg(branch_every_experience=True, **WSD_MAIN)
    engine, result = train(cfg, tmp_path / "run")
    rows = result["branches"]
    assert [r["after_experience"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["step"] for r in rows] == engine.boundaries
    assert all(r["steps"] == max(1, round(0.1 * n)) for r, n in zip(rows, engine.experience_steps(), strict=True))
    assert rows[-1]["final_accuracy"] == pytest.approx(sum(rows[-1]["accuracy"]) / 5)
    store = RunStore.open(tmp_path / "run")
    assert store.meta()["branches"] == rows
    artifacts = store.artifacts()
    assert sorted(artifacts) == [f"branch_exp{k}" for k in range(5)]
    engine.model.load_state_dict(torch.load(artifacts["branch_exp4"][0]))
    assert engine.evaluate() == rows[-1]["accuracy"]  # the stored model is the one that was evaluated
    assert rows[-1]["accuracy"] != result["accuracy_matrix"][-1]  # the decay changed the model


@pytest.mark.parametrize("extra,crash_step", [
    ({**SCHEDULED, "strategy": "er", "branch_every_experience": True}, 50),
    ({"optimizer": "sgd-schedulefree", "lr": 0.5, "schedule": "constant", "schedule_params": "warmup=10",
      "branch_every_experience": True}, 81),
])
def test_resume_with_schedule_and_branches_equals_uninterrupted(tmp_path, digits_cfg, extra, crash_step):
    cfg = digits_cfg(eval_every=5, eval_subsample=20, **extra)
    clean = runner.run(cfg, tmp_path / "clean")

    def crash(g, total, loss, acc):
        if g == crash_step:
            raise Crash
    with pytest.raises(Crash):
        runner.run(cfg, tmp_path / "crashed", on_step=crash)
    resumed = runner.resume(tmp_path / "crashed")
    for key in ("accuracy_matrix", "final_accuracy", "curve", "initial_accuracy"):
        assert resumed[key] == clean[key], key
    assert without_timing(resumed["branches"]) == without_timing(clean["branches"])


def test_schedulefree_checkpoints_hold_eval_mode_weights(tmp_path, digits_cfg):
    cfg = digits_cfg(optimizer="adamw-schedulefree", lr=0.01, checkpoint_every=10)
    captured = {}

    def on_step(g, total, loss, acc):
        if g == 10:  # the checkpoint at step 10 is written right after this callback
            opt = engine.optimizer
            captured["train"] = {k: v.clone() for k, v in engine.model.state_dict().items()}
            opt.eval()
            captured["eval"] = {k: v.clone() for k, v in engine.model.state_dict().items()}
            opt.train()
            engine.model.load_state_dict(captured["train"])  # undo the round trip's rounding: the run goes on as is
        if g == 11:
            raise Crash
    engine = Engine(cfg, tmp_path / "sf", on_step=on_step)
    with pytest.raises(Crash):
        engine.run()
    saved = torch.load(tmp_path / "sf" / CHECKPOINT, weights_only=False)
    assert saved["position"]["global_step"] == 10
    assert all(torch.equal(saved["model"][k], captured["eval"][k]) for k in captured["eval"])
    assert not all(torch.equal(saved["model"][k], captured["train"][k]) for k in captured["train"])
    assert engine.optimizer.param_groups[0]["train_mode"]  # training went on in train mode
    with eval_mode(engine.optimizer):
        assert not engine.optimizer.param_groups[0]["train_mode"]


@pytest.mark.parametrize("flags,message", [
    (["--schedule", "cosin"], "unknown schedule 'cosin'. Did you mean 'cosine'?"),
    (["--schedule", "cosine", "--schedule-params", "warmup=abc"], "warmup='abc' is not a valid int"),
    (["--schedule", "cosine", "--schedule-params", "peek=0.1"], "Did you mean 'peak'?"),
    (["--schedule", "cosine", "--schedule-params", "0.1"], "must be key=value,key=value"),
    (["--schedule", "cosine", "--schedule-mode", "infinite"], "needs schedule='infinite'"),
    (["--schedule-mode", "sideways"], "schedule_mode='sideways' is not allowed"),
    (["--optimizer", "sgd-schedulefree", "--schedule", "wsd"], "replaces the schedule"),
    (["--branch-shape", "exp"], "branch_min_lr=0 must be > 0"),
])
def test_bad_schedule_input_is_one_clear_line(tmp_path, capsys, flags, message):
    code = cli.main(["run", "--scenario", "split-digits", "--run-dir", str(tmp_path / "r"), "-q", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert not (tmp_path / "r").exists()


def test_schedule_params_continue_a_list_value():
    cfg = RunConfig.from_dict({"schedule": "wsd-s", "schedule_params": "pit_stops=100,200,300,warmup=5"})
    assert cfg.build_schedule().pit_stops == (100, 200, 300)
    assert cfg.build_schedule().peak == cfg.lr
    with pytest.raises(LifelongError, match="schedule is empty"):
        RunConfig.from_dict({"schedule_params": "warmup=5"})


def test_reproduce_schedules_quick_runs_end_to_end(tmp_path, capsys):
    import json

    out = tmp_path / "exp"
    assert cli.main(["reproduce", "schedules", "--quick", "--workers", "1", "-q", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| er | wsd+branches: decayed branch |" in printed and "cosine-restart" in printed
    data = json.loads((out / "schedules.json").read_text())
    assert [r["variant"] for r in data["summary"]] == ["constant", "cosine-restart", "cosine-stream", "infinite",
                                                        "wsd+branches"]
    assert data["failed"] == 0 and len(data["summary"][-1]["branch_seen_accuracy"]) == 5
    assert (out / "schedules.md").read_text().startswith("Schedules across experiences on split-digits")
    assert (out / "schedules.png").stat().st_size > 10_000
    assert cli.main(["reproduce", "schedules", "--quick", "-q", "--out", str(out)]) == 2  # will not overwrite
    assert "already holds this experiment" in capsys.readouterr().err
    from lifelong.tracking.store import RunStore

    run = sorted((out / "runs").iterdir())[0]  # as a Ctrl-C mid-experiment leaves it
    store = RunStore.open(run)
    store.set_meta(status="interrupted")
    store.close()
    assert cli.main(["reproduce", "schedules", "--quick", "--workers", "1", "-q", "--out", str(out)]) == 0
    again = json.loads((out / "schedules.json").read_text())  # it said 'already holds this experiment' before
    assert [r["final_accuracy"] for r in again["summary"]] == [r["final_accuracy"] for r in data["summary"]]
    assert again["failed"] == 0


@pytest.mark.parametrize("argv", [["run", "--help"], ["compare", "--help"], ["reproduce", "schedules", "--help"]])
def test_help_lists_the_new_flags(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert ("--quick" in text) if argv[0] == "reproduce" else ("--schedule-mode" in text and "--branch-steps" in text)


INFINITE = {"schedule": "infinite", "schedule_mode": "infinite",
            "schedule_params": "constant=0.02,min_lr=0.001,warmup=3,cooldown_end=8,constant_end=25"}


@pytest.mark.parametrize("continue_from", ["pre-anneal", "annealed"])
def test_infinite_schedule_continues_from_the_chosen_weights(digits_cfg, continue_from):
    """Each experience after the first starts from the weights saved just before the previous anneal (the
    paper's and `lifelong lm`'s choice, the default) or from the annealed ones."""
    engine = Engine(digits_cfg(**INFINITE, infinite_continue=continue_from))
    schedule = engine.learner.lr_schedule
    snapshots, starts = {}, {}
    original_step, original_begin = engine.learner.step, engine.begin_experience

    def step(exp, idx):
        if engine.position["step"] == schedule.anneal_start(exp.index):
            snapshots[exp.index] = {k: v.clone() for k, v in engine.model.state_dict().items()}
        return original_step(exp, idx)

    def begin(exp):
        original_begin(exp)
        starts[exp.index] = {k: v.clone() for k, v in engine.model.state_dict().items()}
    engine.learner.step, engine.begin_experience = step, begin
    ended = {}
    original_end = engine.strategy.end_experience
    engine.strategy.end_experience = lambda exp: (ended.__setitem__(exp.index, {
        k: v.clone() for k, v in engine.model.state_dict().items()}), original_end(exp))
    engine.run()
    for k in range(1, 5):
        expected = snapshots[k - 1] if continue_from == "pre-anneal" else ended[k - 1]
        assert all(torch.equal(starts[k][n], expected[n]) for n in expected), k
    assert not all(torch.equal(snapshots[0][n], ended[0][n]) for n in ended[0])  # the anneal changed the weights


def test_branch_min_lr_above_the_rate_is_refused_before_training(digits_cfg):
    with pytest.raises(LifelongError, match=r"branch_min_lr=0.1 is above the learning rate at the end of exp"):
        Engine(digits_cfg(branch_every_experience=True, branch_min_lr=0.1))


def test_recorded_gradient_norms_build_a_refined_schedule(tmp_path, digits_cfg):
    from lifelong.schedules import make_schedule

    engine, _ = train(digits_cfg(record_grad_norms=True), tmp_path / "run")
    steps, norms = RunStore.open(tmp_path / "run").scalars("grad_norm")
    assert steps == list(range(1, engine.total_steps() + 1)) and all(n > 0 for n in norms)
    params = engine.model.parameters()  # the last step's norm is that of the last gradient applied
    assert norms[-1] == pytest.approx(float(torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in params]))), rel=1e-5)
    refined = make_schedule("refined", grad_norms=str(tmp_path / "run"), peak=0.1).bind(engine.total_steps())
    assert refined.lr(0) >= 0.0
