"""Running, resuming and comparing runs: the layer between the engine and the CLI / Python API.

`run` trains one configuration into a run directory; `resume` finishes an interrupted one; `compare`
trains strategies x seeds in parallel worker processes (one pinned thread each) and summarises them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import secrets
import sqlite3
import statistics
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

import torch

from lifelong.arguments import MAX_STACK, MAX_WORKERS, check_count
from lifelong.data import scenarios
from lifelong.data.datasets import ArrayDataset
from lifelong.data.stream import Stream
from lifelong.errors import LifelongError, is_out_of_memory
from lifelong.evaluation.continual import curve_metrics
from lifelong.tracking.files import write_json_atomic
from lifelong.tracking.resources import reset_peak_rss
from lifelong.tracking.store import DB_NAME, RunStore, describe_os_error
from lifelong.training import distributed
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine
from lifelong.training.recorder import StepCallback

SUMMARY_METRICS = ("final_accuracy", "average_incremental_accuracy", "bwt", "fwt", "forgetting", "min_acc",
                   "wc_acc", "a_auc", "a_last", "online_accuracy", "train_seconds", "peak_rss_mb")


def default_run_dir(cfg: RunConfig, root: str | os.PathLike = "runs") -> Path:
    """A new run directory's path: time, strategy, seed and a random suffix, so runs started in the same second
    never share one (the store itself is claimed atomically by RunStore.create)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{cfg.strategy.replace('+', '_')}-s{cfg.seed}-{secrets.token_hex(3)}"


def execute(engine: Engine) -> dict[str, Any]:
    """Run the engine, recording success or failure; the result also lands in result.json.

    A failed write (a full disk) or an allocation the machine cannot make ends the run as failed with one
    line; it stays resumable from its last checkpoint."""
    recorder = engine.recorder
    try:
        try:
            result = engine.run()
        except LifelongError as err:
            record_failure(recorder, str(err))
            raise
        except KeyboardInterrupt:
            record_failure(recorder, None)
            raise
        except OSError as err:
            message = f"cannot write {err.filename or 'to the run directory'}: {describe_os_error(err)}"
            record_failure(recorder, message)
            raise LifelongError(f"{message}; resume with 'lifelong resume {recorder.dir}'" if recorder.dir
                                else message) from None
        except Exception as err:  # out of memory: one line; anything else (a defect in the user's code or ours) is
            first = (str(err).splitlines() or [""])[0]  # recorded and raised: the run is never left running
            if not is_out_of_memory(err):
                record_failure(recorder, f"{type(err).__name__}: {first[:300]}")
                raise
            message = (f"out of memory ({first[:160]}): lower batch_size, hidden, the strategy's buffer or memory "
                       "sizes, or use a smaller scenario")
            record_failure(recorder, message)
            raise LifelongError(message) from None
        if "curve" in result:
            result.update(curve_metrics(result["curve"], engine.boundaries, learned_at=result.get("learned_at")))
        result["scenario"] = engine.scenario_name
        if engine.run_dir is not None:
            result["run_dir"] = str(engine.run_dir)
        try:
            recorder.finished(result)
        except (OSError, sqlite3.Error) as err:
            raise LifelongError(f"cannot record the result in {recorder.dir}: {describe_os_error(err)}; the run "
                                f"is resumable with 'lifelong resume {recorder.dir}'") from None
        if recorder.dir is not None:
            (recorder.dir / "checkpoint.pt").unlink(missing_ok=True)
        return result
    finally:
        with contextlib.suppress(OSError, sqlite3.Error):
            recorder.close()


def record_failure(recorder: Any, error: str | None) -> None:
    """Mark the run failed (or interrupted); a store that cannot be written (full disk) is left as it is."""
    with contextlib.suppress(OSError, sqlite3.Error):
        recorder.failed(error)


def run(cfg: RunConfig, run_dir: str | os.PathLike | None = None, on_step: StepCallback | None = None,
        loggers: Sequence[str] = (), **engine_kwargs: Any) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (a new directory under ./runs by default) and return its result dict.

    `loggers` names extra metric sinks written into the run directory: csv, jsonl, tensorboard, mlflow.
    `engine_kwargs` (dataset=, stream=) replace the scenario's data.

    Under `torchrun --nproc_per_node=N` the run trains data-parallel (lifelong.training.distributed): rank 0's
    run directory is used by all ranks, and only rank 0 writes into it."""
    with distributed.session(cfg.device) as world:
        run_dir = distributed.broadcast_object(Path(run_dir) if run_dir else default_run_dir(cfg), world)
        reset_peak_rss()
        return execute(build_engine(cfg, run_dir, on_step=on_step, loggers=tuple(loggers), **engine_kwargs))


def build_engine(cfg: RunConfig, run_dir: str | os.PathLike | None, **kwargs: Any) -> Engine:
    """Engine(cfg, run_dir, ...), with an allocation the machine cannot make reported as one line."""
    try:
        return Engine(cfg, run_dir, **kwargs)
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise LifelongError(f"out of memory while building the run ({str(err).splitlines()[0][:160]}): lower "
                            "hidden, batch_size or the strategy's buffer or memory sizes") from None


def resume(run_dir: str | os.PathLike, on_step: StepCallback | None = None,
           loggers: Sequence[str] = (), **engine_kwargs: Any) -> dict[str, Any]:
    """Finish an interrupted run from its last checkpoint; the result equals an uninterrupted run's.

    `loggers` as for `run`; file loggers append to what the interrupted run wrote. A run trained on the user's
    own data needs it again (`dataset=` or `stream=`, as given to `run`), checked against its fingerprint."""
    cfg = resumable_config(run_dir, engine_kwargs)
    with distributed.session(cfg.device):
        reset_peak_rss()
        return execute(resume_engine(cfg, run_dir, on_step, loggers, **engine_kwargs))


def resumable_config(run_dir: str | os.PathLike, engine_kwargs: dict[str, Any]) -> RunConfig:
    """The stored config of an interrupted run, or one line saying why it cannot be resumed as asked."""
    store = RunStore.open(run_dir)
    try:
        meta = store.checked_meta()
        if meta.get("kind") == "lm":
            raise LifelongError(f"{run_dir} is a language-model run: resume it with lifelong lm --resume {run_dir}")
    finally:
        store.close()
    if meta.get("status") == "finished":
        done = Path(run_dir) / "result.json"
        raise LifelongError(f"run {run_dir} already finished; nothing to resume (its result: {done})")
    try:
        cfg = RunConfig.from_dict(meta["config"])
    except LifelongError as err:
        raise LifelongError(f"the stored config of {run_dir} is invalid ({err})") from None
    source = (meta.get("data") or {}).get("source", "scenario")
    if source != "scenario" and not engine_kwargs:
        raise LifelongError(f"run {run_dir} was trained on your own data '{meta['data']['name']}' (passed as "
                            f"{source}=...): resume it from Python with the same data, "
                            f"lifelong.resume('{run_dir}', {source}=...)")
    for part, used in ((meta.get("code") or {}).items()):
        if used and part not in engine_kwargs:
            raise LifelongError(f"run {run_dir} was trained with your own {part} {used}: resume it from Python "
                                f"with the same one, lifelong.resume('{run_dir}', {part}=...)")
    return cfg


def resume_engine(cfg: RunConfig, run_dir: str | os.PathLike, on_step: StepCallback | None = None,
                  loggers: Sequence[str] = (), **engine_kwargs: Any) -> Engine:
    """The engine of an interrupted run, positioned to continue from its checkpoint (recorded as resumed)."""
    engine = build_engine(cfg, run_dir, resume=True, on_step=on_step, loggers=tuple(loggers), **engine_kwargs)
    engine.recorder.resumed()
    return engine


# --- comparisons in worker processes ---------------------------------------------------------------------




def worker_run(cfg_dict: dict[str, Any], run_dir: str, queue: Any, loggers: Sequence[str] = (),
               resume_run: bool = False, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run in a worker process (or resume it), progress sent through `queue.put` every few steps;
    `data` ({"dataset": ...} or {"stream": ...}) replaces the scenario's data."""
    try:
        if resume_run:
            return resume(run_dir, progress_reporter(run_dir, queue), loggers, **(data or {}))
        return run(RunConfig.from_dict(cfg_dict), run_dir, progress_reporter(run_dir, queue), loggers, **(data or {}))
    except Exception as err:  # noqa: BLE001 - a bug in one run must not lose the others' results
        return failure(err, cfg_dict, run_dir)


def progress_reporter(run_dir: str, queue: Any) -> StepCallback | None:
    """An on_step callback putting (run name, step, total) on `queue` every 25 steps and at the end."""
    if queue is None:
        return None
    name = Path(run_dir).name

    def report(step: int, total: int, loss: float, accuracy: float | None) -> None:
        if step % 25 == 0 or step == total:
            queue.put((name, step, total))

    return report


def failure(err: BaseException, cfg_dict: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """The result of a run that raised `err`: one line for the user's mistakes, a traceback for bugs."""
    if isinstance(err, LifelongError):
        return {"error": str(err), "strategy": cfg_dict["strategy"], "seed": cfg_dict["seed"], "run_dir": run_dir}
    return {"error": f"{type(err).__name__}: {err}",
            "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
            "strategy": cfg_dict["strategy"], "seed": cfg_dict["seed"], "run_dir": run_dir}


def stacked_runs(jobs: Sequence[tuple[int, dict[str, Any], str, bool]], queue: Any, loggers: Sequence[str] = (),
                 data: dict[str, Any] | None = None,
                 on_done: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train (or resume) several runs at once as one stack (lifelong.training.stacked); each one's result.
    `jobs` are (index, config dict, run directory, resume) as sent to a worker; `on_done(index, result)` as
    each ends."""
    from lifelong.training.stacked import train_together

    kwargs = data or {}

    def builder(cfg_dict: dict[str, Any], run_dir: str, again: bool) -> Callable[[], Engine]:
        def build() -> Engine:
            callback = progress_reporter(run_dir, queue)
            if again:
                return resume_engine(resumable_config(run_dir, kwargs), run_dir, callback, loggers, **kwargs)
            return build_engine(RunConfig.from_dict(cfg_dict), run_dir, on_step=callback, loggers=tuple(loggers),
                                **kwargs)
        return build

    def done(k: int, outcome: Any) -> None:
        if on_done is not None:
            on_done(jobs[k][0], outcome if isinstance(outcome, dict) else failure(outcome, jobs[k][1], jobs[k][2]))

    refuse_under_torchrun()
    reset_peak_rss()
    outcomes = train_together([builder(c, d, again) for _, c, d, again in jobs], execute, done)
    return [o if isinstance(o, dict) else failure(o, c, d) for o, (_, c, d, _) in zip(outcomes, jobs, strict=True)]


class _PipeQueue:
    """`put` over a worker's own pipe (a killed worker cannot leave a lock shared with the others held); the
    members of a stack send from threads of their own, one message at a time."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def put(self, item: tuple[Any, ...]) -> None:
        self.send(("progress", *item))

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(message)


def worker_loop(conn: Connection, loggers: Sequence[str], data: dict[str, Any] | None = None) -> None:
    """A worker process: train the job groups sent over `conn` one after another until it sends None (a group
    of several jobs trains as one stack); the runs it trains share one read of each dataset (the scenario's own
    data, so `lifelong resume` rebuilds it)."""
    scenarios.DATASET_CACHE = {}
    queue = _PipeQueue(conn)
    while True:
        try:
            group = conn.recv()
        except EOFError:
            return
        if group is None:
            return
        if len(group) == 1:
            i, cfg_dict, run_dir, resume_run = group[0]
            queue.send(("done", i, worker_run(cfg_dict, run_dir, queue, loggers, resume_run, data)))
        else:
            stacked_runs(group, queue, loggers, data, lambda i, result: queue.send(("done", i, result)))


def check_workers(workers: Any) -> int:
    """`workers` as a count of worker processes in [1, MAX_WORKERS], else one clear error."""
    return check_count("workers=", workers, 1, MAX_WORKERS)


def mark_dead(job: tuple[RunConfig, Path], exitcode: int | None) -> dict[str, Any]:
    """The result of a run whose worker process died: its store (if any) says failed, with the reason."""
    cfg, run_dir = job
    how = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
    error = f"its worker process died ({how}); resume it with 'lifelong resume {run_dir}'"
    mark_stopped(run_dir, status="failed", error=error)
    return {"error": error, "strategy": cfg.strategy, "seed": cfg.seed, "run_dir": str(run_dir)}


def mark_stopped(run_dir: Path, **meta: Any) -> None:
    """Record `meta` (its status) in the store of a run whose worker stopped while training it, unless the run
    recorded its own end first (an out-of-memory message, say); a missing or unreadable store is left as is."""
    if not (run_dir / DB_NAME).is_file():
        return
    try:
        store = RunStore.open(run_dir)
        try:
            if store.meta().get("status") == "running":
                store.set_meta(**meta)
        finally:
            store.close()
    except (LifelongError, sqlite3.Error):
        pass


def refuse_under_torchrun() -> None:
    """Runs in worker processes (compare, tune, experiments) are not data-parallel: one line under torchrun."""
    if distributed.launched():
        raise LifelongError("several runs in worker processes cannot be launched by torchrun (each worker would "
                            "join the data-parallel group): launch 'lifelong run' under torchrun for each run")


def check_stack(stack: Any) -> int:
    """`stack` as a count of runs trained at once in one process, in [1, MAX_STACK], else one clear error."""
    return check_count("stack=", stack, 1, MAX_STACK)


def stack_groups(jobs: Sequence[tuple[RunConfig, Path]], stack: int) -> list[list[int]]:
    """Job indices grouped into stacks of at most `stack` runs whose configs differ only in the seed (the same
    strategy and settings: the same model and batch shapes, so their forwards batch), in job order; runs of a
    strategy that cannot be stacked (lifelong.training.stacked.stackable) one to a group."""
    from lifelong.training.stacked import stackable

    by_setting: dict[str, list[int]] = {}
    for i, (cfg, _) in enumerate(jobs):
        key = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "seed"}, sort_keys=True, default=str)
        by_setting.setdefault(key, []).append(i)
    groups = []
    for same in by_setting.values():
        size = stack if stackable(jobs[same[0]][0]) else 1
        groups += [same[s:s + size] for s in range(0, len(same), size)]
    return sorted(groups)


def run_many(jobs: Sequence[tuple[RunConfig, Path]], workers: int = 2,
             progress: Callable[[dict[str, tuple[int, int]]], None] | None = None,
             on_result: Callable[[dict[str, Any]], None] | None = None,
             loggers: Sequence[str] = (), resume_jobs: Sequence[int] = (),
             data: dict[str, Any] | None = None, stack: int = 1) -> list[dict[str, Any]]:
    """Train every (config, run directory) in worker processes (spawned, one thread each); results in job order.

    A failed run gives {"error": ...} instead of stopping the others, and so does a worker process that dies
    (killed, out of memory): its runs are marked failed in their stores and a fresh worker takes the remaining
    jobs. Jobs whose index is in `resume_jobs` are resumed from their run directory instead of started. `data`
    ({"dataset": ...} or {"stream": ...}) is sent to each worker once and replaces the scenario's data. `stack`:
    up to that many runs differing only in their seed train at once in one worker (lifelong.training.stacked).
    `progress` gets {run name: (step, total)} a few times a second; `on_result` gets each result as it lands.
    Validate the configs first (Engine.validate).
    """
    workers = check_workers(workers)
    stack = check_stack(stack)
    refuse_under_torchrun()
    check_reachable_in_workers(cfg.strategy for cfg, _ in jobs)
    results: list[dict[str, Any]] = [{} for _ in jobs]
    state: dict[str, tuple[int, int]] = {d.name: (0, 0) for _, d in jobs}
    todo = stack_groups(jobs, stack)
    resumed = set(resume_jobs)
    ctx = get_context("spawn")
    slots: list[dict[str, Any]] = []

    def start_slot() -> None:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_loop, args=(child, tuple(loggers), data), daemon=True)
        proc.start()
        child.close()
        slots.append({"proc": proc, "conn": parent, "jobs": set()})

    def assign(slot: dict[str, Any]) -> None:
        if todo:
            group = todo.pop(0)
            slot["jobs"] = set(group)
            slot["conn"].send([(i, jobs[i][0].to_dict(), str(jobs[i][1]), i in resumed) for i in group])
        else:
            with contextlib.suppress(OSError):
                slot["conn"].send(None)

    def land(i: int, result: dict[str, Any]) -> None:
        results[i] = result
        if on_result is not None:
            on_result(result)

    try:
        for _ in range(min(workers, len(todo))):
            start_slot()
            assign(slots[-1])
        while any(s["jobs"] for s in slots):
            busy = [s for s in slots if s["jobs"]]
            ready = mp_wait([s["conn"] for s in busy] + [s["proc"].sentinel for s in busy], timeout=0.2)
            for slot in busy:
                dead = False
                while slot["jobs"] and (slot["conn"] in ready or slot["proc"].sentinel in ready):
                    try:
                        if not slot["conn"].poll():
                            dead = not slot["proc"].is_alive()
                            break
                        msg = slot["conn"].recv()
                    except (EOFError, OSError):
                        dead = True
                        break
                    if msg[0] == "progress":
                        state[msg[1]] = (msg[2], msg[3])
                    else:
                        land(msg[1], msg[2])
                        slot["jobs"].discard(msg[1])
                        if not slot["jobs"]:
                            assign(slot)
                if dead and slot["jobs"]:
                    slot["proc"].join(timeout=5)
                    for i in sorted(slot["jobs"]):
                        land(i, mark_dead(jobs[i], slot["proc"].exitcode))
                    slot["jobs"] = set()
                    slot["conn"].close()
                    slots.remove(slot)
                    if todo:
                        start_slot()
                        assign(slots[-1])
            if progress is not None:
                progress(state)
    finally:  # left early (interrupted, or an error here): runs still training are stopped and say so
        for slot in slots:
            if slot["proc"].is_alive() and slot["jobs"]:
                slot["proc"].terminate()
        for slot in slots:
            slot["proc"].join(timeout=10)
            for i in sorted(slot["jobs"]):
                mark_stopped(jobs[i][1], status="interrupted")
    return results


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and population standard deviation (0 for one value; None, None for none)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def summarize_results(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation of each metric per strategy, over seeds (failed runs left out)."""
    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if "error" not in r:
            by_strategy.setdefault(r["strategy"], []).append(r)
    summary = []
    for strategy, rs in by_strategy.items():
        row: dict[str, Any] = {"strategy": strategy, "runs": len(rs)}
        for m in SUMMARY_METRICS:
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std([r[m] for r in rs if r.get(m) is not None])
        summary.append(row)
    return summary


def run_plan(jobs: Sequence[tuple[RunConfig, Path]], out_dir: Path, workers: int,
             on_result: Callable[[dict[str, Any]], None] | None = None, loggers: Sequence[str] = (),
             progress: Callable[[dict[str, tuple[int, int]]], None] | None = None, data: dict[str, Any] | None = None,
             stack: int = 1, finished: str | None = None,
             on_start: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Train `jobs` into `out_dir` (results in job order), as compare does: runs finished there before are kept,
    unfinished ones (interrupted, failed, killed) resumed from their checkpoints, missing ones started.
    `finished`: when every run is already finished, refuse with "`out_dir` already holds `finished`" instead
    (the reproduce targets will not rewrite a finished experiment)."""
    make_output_dir(out_dir)
    done, again = plan_comparison(jobs)
    if finished is not None and len(done) == len(jobs):
        raise LifelongError(f"{out_dir} already holds {finished}; choose another --out")
    if on_start is not None:
        on_start()
    for r in done.values():
        if on_result is not None:
            on_result(r)
    todo = [i for i in range(len(jobs)) if i not in done]
    index = {i: k for k, i in enumerate(todo)}
    fresh = run_many([jobs[i] for i in todo], workers, progress, on_result, loggers,
                     resume_jobs=[index[i] for i in again], data=data, stack=stack) if todo else []
    return [done[i] if i in done else fresh[index[i]] for i in range(len(jobs))]


def make_output_dir(out_dir: Path) -> None:
    """Create a comparison's directory; a file there, or a run's own directory, is refused."""
    if (out_dir / DB_NAME).exists():
        raise LifelongError(f"{out_dir} is the directory of a single run, not of a comparison; choose another --out")
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise LifelongError(f"output directory {out_dir} is a file; choose another --out")
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LifelongError(f"output directory {out_dir} is not writable: {err.strerror}") from None


def plan_comparison(jobs: Sequence[tuple[RunConfig, Path]]) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """For a comparison directory used before: (results of finished runs by job index, jobs to resume).

    A run directory holding another configuration than its job's is refused (a different comparison)."""
    done: dict[int, dict[str, Any]] = {}
    again: list[int] = []
    for i, (cfg, d) in enumerate(jobs):
        if not (d / DB_NAME).exists():
            continue
        store = RunStore.open(d)
        try:
            meta = store.checked_meta() if (d / DB_NAME).stat().st_size else {}
        except LifelongError:
            meta = {}
        finally:
            store.close()
        if not meta:  # an incomplete directory: start it again
            continue
        if meta["config"] != cfg.to_dict():
            raise LifelongError(f"{d} holds a run with other settings than this comparison's; choose another --out")
        if meta.get("status") == "finished" and isinstance(meta.get("result"), dict):
            done[i] = meta["result"]
        else:
            again.append(i)
    return done, again


def check_reachable_in_workers(strategies: Iterable[str]) -> None:
    """Refuse, in one line, a strategy registered in an interactive session (a notebook, python -c, the REPL):
    worker processes are spawned and import the strategies by name, and they cannot import that session."""
    import __main__

    if getattr(__main__, "__file__", None):
        return
    from lifelong.strategies import STRATEGIES

    for spec in dict.fromkeys(strategies):
        for part in str(spec).split("+"):
            cls = STRATEGIES.get(part.strip())
            if getattr(cls, "__module__", "") == "__main__":
                raise LifelongError(f"strategy {part.strip()} is defined in this interactive session, which the "
                                    "worker processes cannot import: define and register it in a module file, or "
                                    "train it in this process with lifelong.run")


def check_sendable(what: str, obj: Any) -> None:
    """Refuse, in one line, a factory that cannot reach the worker processes (a lambda, a local function)."""
    if obj is None:
        return
    try:
        pickle.dumps(obj)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise LifelongError(f"compare sends the {what} to worker processes, which cannot take "
                            f"{getattr(obj, '__qualname__', type(obj).__name__)} ({str(err).splitlines()[0][:120]}): "
                            "define it at the top level of a module (a lambda or a local function cannot be sent)"
                            ) from None


def compare(base: RunConfig, strategies: Sequence[str], seeds: Sequence[int], out_dir: str | os.PathLike,
            workers: int = 2, progress: Callable[[dict[str, tuple[int, int]]], None] | None = None,
            strategy_hparams: dict[str, dict[str, Any]] | None = None, loggers: Sequence[str] = (),
            on_result: Callable[[dict[str, Any]], None] | None = None, dataset: ArrayDataset | None = None,
            stream: Stream | None = None, model: Any = None, optimizer: Any = None,
            stack: int = 1, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train every strategy with every seed on `base`'s scenario; return {"scenario", "results", "summary"}.
    `on_start` is called once every setting is checked, before anything trains (the CLI's announcement).
    `stack`: a strategy's seeds train up to that many at once in one worker, their forward and backward passes
    batched (lifelong.training.stacked: the same results as separate runs, within float rounding).
    `dataset` (cut by the scenario's kind) or `stream` replace the scenario's data, sent to each worker once;
    `model` (a factory(input_shape, num_classes), e.g. an nn.Module class) and `optimizer` (a torch.optim class or
    a factory(params)) replace the configured ones; they must be picklable (defined at a module's top level).

    Given an `out_dir` of an earlier comparison with the same settings, finished runs are kept, unfinished
    ones (interrupted, failed, killed) are resumed from their checkpoints and missing ones started."""
    out_dir = Path(out_dir)
    workers = check_workers(workers)
    stack = check_stack(stack)
    refuse_under_torchrun()
    if not strategies or not seeds:
        raise LifelongError("a comparison needs at least one strategy and one seed")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise LifelongError(f"seed {seed!r} is not an integer")
    for what, values in (("seeds", list(seeds)), ("strategies", list(strategies))):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise LifelongError(f"{what} repeat {', '.join(repeated)}: give each once")
    jobs = []
    for strategy in dict.fromkeys(strategies):
        for seed in dict.fromkeys(seeds):
            hp = (strategy_hparams or {}).get(strategy, {})
            cfg = base.with_overrides(strategy=strategy, seed=seed, hparams={**base.hparams, **hp})
            jobs.append((cfg, out_dir / f"{strategy.replace('+', '_')}-s{seed}"))
    for cfg, _ in jobs:
        Engine.validate(cfg)
    given = {"stream": stream, "dataset": dataset, "model": model, "optimizer": optimizer}
    data = {k: v for k, v in given.items() if v is not None} or None
    if isinstance(model, torch.nn.Module):
        raise LifelongError("compare trains several models: give a factory (e.g. the nn.Module class), not an "
                            "instance")
    for what, obj in (("model", model), ("optimizer", optimizer)):
        check_sendable(what, obj)
    results = run_plan(jobs, out_dir, workers, on_result, loggers, progress, data, stack, on_start=on_start)
    scenario = stream.name if stream is not None else (
        f"{scenarios.parse_scenario(base.scenario)[0].name}-{dataset.name}" if dataset is not None else base.scenario)
    output = {"scenario": scenario, "config": base.to_dict(), "results": results,
              "summary": summarize_results(results)}
    write_json_atomic(output, out_dir / "compare.json")
    return output
