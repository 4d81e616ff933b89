"""Optuna studies: one per strategy, trials pulled by local worker processes from a shared storage.

Objective: the final average accuracy (mean over the tuning seeds) of a run on the scenario's *validation
data*: a held-out part of its training data (`HOLDOUT` of each class's training samples, fixed by `HOLDOUT_SEED`,
the same for every trial), which plays the test split's role while the rest trains. The scenario's test split is
never read while tuning, so a tuned setting can then be reported on the test split without having been chosen on
it. Each trial reports its running average accuracy (over the experiences seen) after every experience, at step
`seed_index * experiences + experience`, and the pruner (median or successive halving) may stop it there.

Resumability: trials live in the storage (SQLite `<store>/tune.db` by default). A trial whose process died
(kill -9, out of memory) is left RUNNING by Optuna; it is marked failed and re-queued with the same parameters
(Optuna's RetryFailedTrialCallback, at most `MAX_RETRY` times) either at the next invocation's start (a trial of
this host whose process is gone) or, for any host, once its heartbeat is older than `GRACE_PERIOD` seconds.
Such a trial is not counted; its re-run is. `--trials N` runs N more trials per invocation (each ends complete,
pruned or failed); `n_trials` counts every trial of the study, whoever ran it, that ended complete, pruned or
failed by its own setting (diverged, refused: recorded with the reason, and counted, since re-running it would
fail again).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError
from lifelong.evaluation.metrics import final_accuracy
from lifelong.tuning.space import Dim, sample, split_values

HOLDOUT = 0.1
HOLDOUT_SEED = 0
HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 60
MAX_RETRY = 3
_VALIDATION_CACHE: dict[tuple[str, str], Any] = {}


def validation_dataset(scenario: str, data_dir: str = "") -> Any:
    """The scenario's dataset with its test split replaced by a held-out part of its training data.

    `HOLDOUT` of every class's training samples (at least one per class), chosen with `HOLDOUT_SEED`, become the
    test split; the others stay for training. The returned dataset holds no sample of the original test split."""
    import torch

    from lifelong.data.datasets import load_dataset
    from lifelong.data.scenarios import parse_scenario

    dataset_name = parse_scenario(scenario)[1]
    key = (dataset_name, data_dir)
    if key in _VALIDATION_CACHE:
        return _VALIDATION_CACHE[key]
    data = load_dataset(dataset_name, root=data_dir or None)
    g = torch.Generator().manual_seed(HOLDOUT_SEED)
    held = []
    for c in torch.unique(data.train_y).tolist():
        idx = torch.nonzero(data.train_y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[:max(1, round(HOLDOUT * len(idx)))])
    held_idx = torch.sort(torch.cat(held)).values
    keep = torch.ones(len(data.train_y), dtype=torch.bool)
    keep[held_idx] = False
    val = replace(data, name=f"{data.name}-validation", train_x=data.train_x[keep], train_y=data.train_y[keep],
                  test_x=data.train_x[held_idx], test_y=data.train_y[held_idx])
    _VALIDATION_CACHE[key] = val
    return val


def storage_url(store: str | os.PathLike, given: str | None) -> str:
    """--storage, else SQLite in the run store (`<store>/tune.db`)."""
    if given:
        return given
    path = Path(store)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LifelongError(f"cannot create the run store {path}: {err.strerror}") from None
    return f"sqlite:///{(path / 'tune.db').resolve()}"


def open_storage(url: str, heartbeat: tuple[int, int] | None = None) -> Any:
    """Optuna's RDB storage with heartbeats and retries of dead trials (a journal file for other URLs)."""
    import warnings

    import optuna
    from optuna.storages import RetryFailedTrialCallback

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    interval, grace = heartbeat or (HEARTBEAT_INTERVAL, GRACE_PERIOD)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=interval,
                                          grace_period=grace,
                                          failed_trial_callback=RetryFailedTrialCallback(max_retry=MAX_RETRY))
    except Exception as err:  # noqa: BLE001 - SQLAlchemy's and the drivers' errors, as one line
        raise LifelongError(f"cannot open the study storage {url}: {str(err).splitlines()[0][:200]}") from None


def study_name(prefix: str, strategy: str) -> str:
    return f"{prefix}:{strategy}"


def signature(spec: Mapping[str, Any]) -> str:
    """What makes two invocations the same study: scenario, base settings, space, seeds, validation split."""
    keys = ("scenario", "strategy", "base", "space", "seeds", "holdout")
    return json.dumps({k: spec[k] for k in keys}, sort_keys=True, default=str)


def make_pruner(name: str) -> Any:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise LifelongError(f"--pruner {name!r}: expected median, halving or none")


def load_or_create(spec: Mapping[str, Any], storage: Any) -> Any:
    """The study of `spec` (created on first use); one set up with other settings is refused."""
    import optuna

    study = optuna.create_study(study_name=spec["study"], storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=None), pruner=make_pruner(spec["pruner"]),
                                load_if_exists=True)
    mine = signature(spec)
    stored = study.user_attrs.get("signature")
    if stored is None:
        study.set_user_attr("signature", mine)
    elif stored != mine:
        raise LifelongError(f"study '{spec['study']}' in {spec['storage']} was set up with other settings "
                            f"({first_difference(json.loads(stored), json.loads(mine))}); name a new one with "
                            "--study, or use the same settings")
    return study


def first_difference(before: Any, now: Any, where: str = "") -> str:
    """The first setting that differs between two signatures, as 'name: before -> now'."""
    if isinstance(before, dict) and isinstance(now, dict):
        for key in sorted(set(before) | set(now)):
            if before.get(key) != now.get(key):
                return first_difference(before.get(key), now.get(key), f"{where}.{key}" if where else str(key))
    return f"{where.removeprefix('base.')}: {before!r} -> {now!r}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(study: Any) -> int:
    """Mark dead RUNNING trials failed and re-queue them; returns how many. A trial of this host whose process is
    gone is dead now; any other is dead once its heartbeat is older than the grace period."""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    host = socket.gethostname()
    count = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") == host and isinstance(t.user_attrs.get("pid"), int) \
                and not pid_alive(t.user_attrs["pid"]):
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                callback = getattr(storage, "get_failed_trial_callback", lambda: None)()
                if callback is not None:
                    callback(study, storage.get_trial(t._trial_id))
                count += 1
    before = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    optuna.storages.fail_stale_trials(study)
    return count + len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))) - before


def run_trial(trial: Any, spec: Mapping[str, Any]) -> float:
    """Train the trial's setting on the validation data, once per tuning seed; the mean final accuracy (NaN for
    a setting that diverged or was refused). Raises optuna.TrialPruned when the pruner stops it."""
    try:
        outcome = run_trials([trial], spec)[0]
    except LifelongError as err:  # refused before any run started (its settings): FAIL with the reason recorded
        return refused(trial, err)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def run_trials(trials: list[Any], spec: Mapping[str, Any]) -> list[float | BaseException]:
    """Train several trials' settings, seed after seed, each seed's runs as one stack when there are several
    (lifelong.training.stacked); per trial its mean final accuracy (NaN: diverged or refused, recorded with the
    reason), or the exception that ended it (optuna.TrialPruned, or a bug)."""
    import optuna

    from lifelong.training import runner
    from lifelong.training.config import RunConfig
    from lifelong.training.stacked import train_together

    space = {k: Dim(**v) for k, v in spec["space_dims"].items()}
    settings = []
    for trial in trials:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        settings.append(split_values(spec["strategy"], sample(trial, space)))
    dataset = validation_dataset(spec["scenario"], spec["base"].get("data_dir", ""))
    finals: list[list[float]] = [[] for _ in trials]
    ended: dict[int, float | BaseException] = {}
    start = time.perf_counter()

    def builder(i: int, k: int, cfg: RunConfig) -> Callable[[], Any]:
        holder: dict[str, Any] = {}

        def on_experience(e: int, row: list[float]) -> None:
            engine = holder["engine"]
            # the accuracy on every validation set, unseen ones included: what the objective (the final
            # accuracy) will be if nothing changes; the mean over the seen ones started near 100 % after the
            # first experience and fell, so a median pruner (which reads a trial's best value) never pruned
            trials[i].report(float(final_accuracy([row])), step=k * len(engine.train_stream) + e)
            last = k == len(spec["seeds"]) - 1 and e == len(engine.train_stream) - 1
            if not last and trials[i].should_prune():  # a trial at its last report is complete, not pruned
                raise optuna.TrialPruned(f"pruned after experience {e} (seed index {k})")

        def build() -> Any:
            holder["engine"] = runner.build_engine(cfg, None, on_experience=on_experience, dataset=dataset)
            return holder["engine"]
        return build

    def train(engine: Any) -> dict[str, Any]:
        try:
            return runner.execute(engine)
        finally:
            with contextlib.suppress(Exception):
                engine.evaluator.close()

    for k, seed in enumerate(spec["seeds"]):
        live = [i for i in range(len(trials)) if i not in ended]
        builds = []
        for i in live:
            values, hparams = settings[i]
            cfg = RunConfig.from_dict({**spec["base"], **values, "scenario": spec["scenario"],
                                       "strategy": spec["strategy"], "seed": seed, "threads": 1,
                                       "hparams": {**spec["base"].get("hparams", {}), **hparams}})
            builds.append(builder(i, k, cfg))
        if len(builds) > 1:
            outcomes = train_together(builds, train)
        else:
            try:
                outcomes = [train(builds[0]())]
            except Exception as err:  # noqa: BLE001 - sorted below, as for a stack's members
                outcomes = [err]
        for i, outcome in zip(live, outcomes, strict=True):
            if isinstance(outcome, LifelongError):  # diverged or refused: a failed trial, counted
                ended[i] = refused(trials[i], outcome)
            elif isinstance(outcome, BaseException):
                ended[i] = outcome
            else:
                finals[i].append(float(outcome["final_accuracy"]))
    for i, trial in enumerate(trials):
        trial.set_user_attr("seconds", time.perf_counter() - start)
        if i not in ended:
            trial.set_user_attr("seed_accuracies", finals[i])
    return [ended.get(i, statistics.fmean(finals[i]) if finals[i] else float("nan")) for i in range(len(trials))]


def refused(trial: Any, err: LifelongError) -> float:
    """A trial whose setting failed (diverged, refused): recorded with its reason; NaN makes Optuna fail it."""
    trial.set_user_attr("error", str(err))
    print(f"trial {trial.number} failed: {err}", file=sys.stderr)
    return float("nan")


def work(spec: Mapping[str, Any], take: Callable[[], bool], deadline: float | None) -> None:
    """Pull trials of one study until no ticket is left or the deadline has passed (a trial in flight finishes);
    with `spec["stack"]` > 1, up to that many trials at a time, trained as one stack."""
    import optuna

    from lifelong.errors import LifelongError as Refused

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(spec["storage"], spec.get("heartbeat"))
    study = optuna.load_study(study_name=spec["study"], storage=storage, pruner=make_pruner(spec["pruner"]))
    stack = spec.get("stack", 1)
    while deadline is None or time.time() < deadline:
        if stack == 1:
            if not take():
                return
            study.optimize(lambda t: run_trial(t, spec), n_trials=1, catch=(Refused,), gc_after_trial=False)
            continue
        count = 0
        while count < stack and take():
            count += 1
        if count == 0:
            return
        run_stacked_trials(study, spec, count)


def run_stacked_trials(study: Any, spec: Mapping[str, Any], count: int) -> None:
    """Ask `count` trials, train them as one stack, tell each its value or state (as `study.optimize` would:
    heartbeats while they run, a pruned trial PRUNED, a refused one FAIL with its reason); a bug's exception is
    raised once every trial has been told."""
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    trials = [study.ask() for _ in range(count)]
    with contextlib.ExitStack() as beating:
        for trial in trials:
            beating.enter_context(get_heartbeat_thread(trial._trial_id, study._storage))
        try:
            outcomes = run_trials(trials, spec)
        except LifelongError as err:  # refused before any run started: every trial FAIL with the reason
            outcomes = [refused(trial, err) for trial in trials]
    bug = None
    for trial, outcome in zip(trials, outcomes, strict=True):
        if isinstance(outcome, optuna.TrialPruned):
            study.tell(trial, state=TrialState.PRUNED)
        elif isinstance(outcome, BaseException):
            study.tell(trial, state=TrialState.FAIL)
            bug = bug or outcome
        elif outcome != outcome:  # NaN: refused or diverged, the reason recorded by `refused`
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, outcome)
    if bug is not None:
        raise bug


def worker_main(spec: dict[str, Any], tickets: Any, deadline: float | None) -> None:
    """A worker process: one thread, trials of one study from the shared storage."""
    import torch

    torch.set_num_threads(1)

    def take() -> bool:
        with tickets.get_lock():
            if tickets.value <= 0:
                return False
            tickets.value -= 1
            return True

    try:
        work(spec, take, deadline)
    except LifelongError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def optimize(spec: dict[str, Any], trials: int, workers: int, timeout: float | None) -> list[str]:
    """Run `trials` more trials of the study with `workers` local processes (in this process when 1);
    returns one line per worker that died."""
    deadline = time.time() + timeout if timeout else None
    if workers == 1:
        left = [trials]

        def take() -> bool:
            left[0] -= 1
            return left[0] >= 0

        work(spec, take, deadline)
        return []
    from multiprocessing import get_context

    from lifelong.training.runner import check_reachable_in_workers

    check_reachable_in_workers([spec["strategy"]])
    ctx = get_context("spawn")
    tickets = ctx.Value("i", trials)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        procs = [ctx.Process(target=worker_main, args=(spec, tickets, deadline), daemon=False)
                 for _ in range(min(workers, max(trials, 1)))]
        for p in procs:
            p.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    problems = []
    try:
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    for p in procs:
        if p.exitcode not in (0, None):
            how = f"killed by signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
            problems.append(f"a worker of {spec['study']} ended early ({how})")
    return problems


def counted(study: Any) -> list[Any]:
    """The trials `n_trials` counts: complete, pruned, and failed by their setting (diverged, refused); a trial
    whose process died is not counted (it is re-queued and its re-run is)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                   TrialState.FAIL))
            if t.state != TrialState.FAIL or "error" in t.user_attrs]


def best(study: Any, fixed: Mapping[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
    """The best complete trial's value and every value of its setting (sampled and fixed)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None, None
    top = max(done, key=lambda t: t.value)
    return float(top.value), {**fixed, **top.params}


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """Every trial of the study: number, state, value, parameters, seconds, last reported step, retry of."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
                     "seconds": t.user_attrs.get("seconds"),
                     "steps": (max(t.intermediate_values) + 1) if t.intermediate_values else 0,
                     "retry_of": t.system_attrs.get("failed_trial")})
    return rows


def importances(study: Any) -> tuple[dict[str, float], str]:
    """Parameter importances (fANOVA; mean decrease in impurity if that fails), and the evaluator's name."""
    import optuna

    if len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) < 2:
        return {}, "none (fewer than 2 complete trials)"
    for name, make in (("fANOVA", optuna.importance.FanovaImportanceEvaluator),
                       ("mean decrease in impurity", optuna.importance.MeanDecreaseImpurityImportanceEvaluator)):
        try:
            values = optuna.importance.get_param_importances(study, evaluator=make(seed=0))
            return {k: float(v) for k, v in values.items()}, name
        except Exception:  # noqa: BLE001,S112 - any evaluator failure falls back to the next one
            continue
    return {}, "none (the evaluators failed)"
