"""Running, resuming and comparing runs: the layer between the engine and the CLI / Python API.

`run` trains one configuration into a run directory; `resume` finishes an interrupted one; `compare`
trains strategies x seeds in parallel worker processes (one pinned thread each) and summarises them.
"""

from __future__ import annotations

import os
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from lifelong.data.datasets import ArrayDataset, load_dataset
from lifelong.data.scenarios import parse_scenario
from lifelong.errors import LifelongError
from lifelong.evaluation.continual import curve_metrics
from lifelong.tracking.files import write_json_atomic
from lifelong.tracking.resources import reset_peak_rss
from lifelong.tracking.store import RunStore
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine
from lifelong.training.recorder import StepCallback

SUMMARY_METRICS = ("final_accuracy", "average_incremental_accuracy", "bwt", "fwt", "forgetting", "min_acc",
                   "wc_acc", "train_seconds", "peak_rss_mb")


def default_run_dir(cfg: RunConfig, root: str | os.PathLike = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{cfg.strategy.replace('+', '_')}-s{cfg.seed}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


def execute(engine: Engine) -> dict[str, Any]:
    """Run the engine, recording success or failure; the result also lands in result.json."""
    recorder = engine.recorder
    try:
        try:
            result = engine.run()
        except LifelongError as err:
            recorder.failed(str(err))
            raise
        except KeyboardInterrupt:
            recorder.failed()
            raise
        if "curve" in result:
            result.update(curve_metrics(result["curve"], engine.boundaries))
        result["scenario"] = engine.cfg.scenario
        if recorder.dir is not None:
            result["run_dir"] = str(recorder.dir)
        recorder.finished(result)
        if recorder.dir is not None:
            (recorder.dir / "checkpoint.pt").unlink(missing_ok=True)
        return result
    finally:
        recorder.close()


def run(cfg: RunConfig, run_dir: str | os.PathLike | None = None, on_step: StepCallback | None = None,
        loggers: Sequence[str] = (), **engine_kwargs: Any) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (a new directory under ./runs by default) and return its result dict.

    `loggers` names extra metric sinks written into the run directory: csv, jsonl, tensorboard, mlflow.
    `engine_kwargs` (dataset=, stream=) replace the scenario's data."""
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    reset_peak_rss()
    return execute(Engine(cfg, run_dir, on_step=on_step, loggers=tuple(loggers), **engine_kwargs))


def resume(run_dir: str | os.PathLike, on_step: StepCallback | None = None,
           loggers: Sequence[str] = ()) -> dict[str, Any]:
    """Finish an interrupted run from its last checkpoint; the result equals an uninterrupted run's.

    `loggers` as for `run`; file loggers append to what the interrupted run wrote."""
    store = RunStore.open(run_dir)
    try:
        meta = store.meta()
    finally:
        store.close()
    if meta.get("status") == "finished":
        done = Path(run_dir) / "result.json"
        raise LifelongError(f"run {run_dir} already finished; nothing to resume (its result: {done})")
    cfg = RunConfig.from_dict(meta["config"])
    reset_peak_rss()
    engine = Engine(cfg, run_dir, resume=True, on_step=on_step, loggers=tuple(loggers))
    engine.recorder.resumed()
    return execute(engine)


# --- comparisons in worker processes ---------------------------------------------------------------------


WORKER_DATASETS: dict[tuple[str, str], ArrayDataset] = {}


def worker_dataset(cfg: RunConfig) -> ArrayDataset:
    """The scenario's dataset, read once per worker process and shared by the runs it trains (read-only)."""
    key = (parse_scenario(cfg.scenario)[1], cfg.data_dir)
    if key not in WORKER_DATASETS:
        WORKER_DATASETS[key] = load_dataset(key[0], root=cfg.data_dir or None)
    return WORKER_DATASETS[key]


def worker_run(cfg_dict: dict[str, Any], run_dir: str, queue: Any, loggers: Sequence[str] = ()) -> dict[str, Any]:
    """Entry point of a worker process: one run, progress sent through `queue` every few steps."""
    name = Path(run_dir).name

    def report(step: int, total: int, loss: float, accuracy: float | None) -> None:
        if step % 25 == 0 or step == total:
            queue.put((name, step, total))

    try:
        cfg = RunConfig.from_dict(cfg_dict)
        return run(cfg, run_dir, report if queue is not None else None, loggers, dataset=worker_dataset(cfg))
    except LifelongError as err:
        return {"error": str(err), "strategy": cfg_dict["strategy"], "seed": cfg_dict["seed"], "run_dir": run_dir}
    except Exception as err:  # noqa: BLE001 - a bug in one run must not lose the others' results
        return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
                "strategy": cfg_dict["strategy"], "seed": cfg_dict["seed"], "run_dir": run_dir}


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


def run_many(jobs: Sequence[tuple[RunConfig, Path]], workers: int = 2,
             progress: Callable[[dict[str, tuple[int, int]]], None] | None = None,
             on_result: Callable[[dict[str, Any]], None] | None = None,
             loggers: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Train every (config, run directory) in worker processes (spawned, one thread each); results in job order.

    A failed run gives {"error": ...} instead of stopping the others. `progress` gets {run name: (step, total)}
    a few times a second; `on_result` gets each result as it lands. Validate the configs first (Engine.validate).
    """
    results: list[dict[str, Any]] = [{} for _ in jobs]
    state: dict[str, tuple[int, int]] = {d.name: (0, 0) for _, d in jobs}
    ctx = get_context("spawn")
    with ctx.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as pool:
            futures = {pool.submit(worker_run, cfg.to_dict(), str(d), queue, tuple(loggers)): i
                       for i, (cfg, d) in enumerate(jobs)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                while not queue.empty():
                    name, step, total = queue.get()
                    state[name] = (step, total)
                for f in done:
                    results[futures[f]] = f.result()
                    if on_result is not None:
                        on_result(results[futures[f]])
                if progress is not None:
                    progress(state)
    return results


def prepare_output(out_dir: Path, run_dirs: Sequence[Path], what: str) -> None:
    """Create `out_dir` for new runs; refuse one that already holds them."""
    if any((d / "run.sqlite").exists() for d in run_dirs):
        raise LifelongError(f"{out_dir} already holds {what}; choose another --out")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LifelongError(f"output directory {out_dir} is not writable: {err.strerror}") from None


def compare(base: RunConfig, strategies: Sequence[str], seeds: Sequence[int], out_dir: str | os.PathLike,
            workers: int = 2, progress: Callable[[dict[str, tuple[int, int]]], None] | None = None,
            strategy_hparams: dict[str, dict[str, Any]] | None = None, loggers: Sequence[str] = (),
            on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train every strategy with every seed on `base`'s scenario; return {"scenario", "results", "summary"}."""
    out_dir = Path(out_dir)
    jobs = []
    for strategy in strategies:
        for seed in seeds:
            hp = (strategy_hparams or {}).get(strategy, {})
            cfg = base.with_overrides(strategy=strategy, seed=seed, hparams={**base.hparams, **hp})
            jobs.append((cfg, out_dir / f"{strategy.replace('+', '_')}-s{seed}"))
    for cfg, _ in jobs:
        Engine.validate(cfg)
    prepare_output(out_dir, [d for _, d in jobs], "a comparison")
    results = run_many(jobs, workers, progress, on_result, loggers)
    output = {"scenario": base.scenario, "config": base.to_dict(), "results": results,
              "summary": summarize_results(results)}
    write_json_atomic(output, out_dir / "compare.json")
    return output


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of mean +- std per strategy."""
    cols = [("final_accuracy", "final acc", 100), ("average_incremental_accuracy", "avg inc acc", 100),
            ("bwt", "BWT", 100), ("forgetting", "forgetting", 100), ("train_seconds", "time s", 1),
            ("peak_rss_mb", "peak MiB", 1)]
    header = ["strategy"] + [c[1] for c in cols]
    lines = []
    for row in summary:
        cells = [row["strategy"]]
        for key, _, scale in cols:
            m, s = row.get(f"{key}_mean"), row.get(f"{key}_std")
            cells.append("-" if m is None else f"{m * scale:.1f} ± {s * scale:.1f}" if s else f"{m * scale:.1f}")
        lines.append(cells)
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in lines])
