"""A language-model run in the run store, beside the classification runs: `lifelong runs` lists it (kind `lm`),
`lifelong report` renders it (held-out loss per domain against the step), and the loggers of `--log` get its
numbers.

The run directory (`--out`) holds `run.sqlite` with meta `kind: "lm"`, the config, the environment, the phase
boundaries, the status and, once finished, the result summary; scalars `loss` and `lr` (every `log_every`
updates) and `eval_loss/<domain>` (every evaluation). `lifelong lm --resume DIR` continues an interrupted LM run
in the same store (:meth:`LMRecorder.rewind` drops what the killed process recorded after its last checkpoint). A
new run given the same `--out` replaces the old LM run's store (as it replaces its result.json); a classification
run there is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError
from lifelong.tracking.loggers import ProgressLogger, close_all, emit, log_all, make_loggers
from lifelong.tracking.resources import environment
from lifelong.tracking.store import DB_NAME, RunStore, hold_run_dir

KIND = "lm"
EVAL_PREFIX = "eval_loss/"


def clear_old_lm_run(out_dir: Path) -> None:
    """Refuse an `out_dir` that holds a run: a classification run's, or an earlier LM run's (its checkpoint and
    results would be lost: an unfinished one is resumed with --resume). An earlier LM run that stopped before its
    first checkpoint (a failed start) is cleared."""
    from lifelong.lm.resume import checkpoint_path

    if not (out_dir / DB_NAME).exists():
        return
    store = RunStore.open(out_dir)
    try:
        meta = store.meta()
    finally:
        store.close()
    if meta.get("kind") != KIND:
        raise LifelongError(f"--out {out_dir} holds a classification run; give the language-model run another "
                            "directory")
    status = meta.get("status", "unknown")
    if status != "finished" and not checkpoint_path(out_dir).exists():  # it never reached a checkpoint: nothing to
        for suffix in ("", "-wal", "-shm"):                             # resume, nothing learned; start afresh
            (out_dir / (DB_NAME + suffix)).unlink(missing_ok=True)
        return
    hint = "" if status == "finished" else f"resume it with 'lifelong lm --resume {out_dir}' or "
    raise LifelongError(f"--out {out_dir} already holds a language-model run ({status}): {hint}choose another --out")


class LMRecorder:
    """Every record of one LM run: its store, its loggers and its progress (a bar on a terminal, plain lines
    elsewhere). Only the main process records; the others get `LMRecorder(None)`, which does nothing."""

    def __init__(self, out_dir: Path | None, config: Mapping[str, Any] | None = None, loggers: Sequence[str] = (),
                 total: int | None = None, progress: bool = True, resume: bool = False) -> None:
        self.store: RunStore | None = None
        self.loggers: list[Any] = []
        self.boundaries: list[int] = []
        self.last_step = 0
        self.lock: Any = None
        if out_dir is None:
            return
        config = dict(config or {})
        self.lock = hold_run_dir(out_dir, "lifelong lm")
        try:
            self._open(out_dir, config, resume)
        except BaseException:
            self._unlock()
            raise
        try:
            self.loggers = make_loggers(["progress", *loggers] if progress else list(loggers), out_dir,
                                        total=total, params=config, run_name=out_dir.name, desc="lm")
        except BaseException:
            self.store.set_meta(status="failed", error="could not start its loggers")
            self.store.close()
            self._unlock()
            raise

    def _open(self, out_dir: Path, config: dict[str, Any], resume: bool) -> None:
        if resume:
            self.store = RunStore.open(out_dir)
            meta = self.store.meta()
            if meta.get("kind") != KIND or meta.get("status") == "finished":
                self.store.close()
                raise LifelongError(f"run {out_dir} already finished; nothing to resume" if meta.get("kind") == KIND
                                    else f"{out_dir} holds no language-model run to resume")
            with self.store.conn:
                self.store.conn.execute("DELETE FROM meta WHERE key='error'")
            self.store.set_meta(status="running")
            self.store.add_event("resume", {"time": time.time()})
        else:
            clear_old_lm_run(out_dir)
            self.store = RunStore.create(out_dir, {"kind": KIND, "config": config, "env": environment(),
                                                   "boundaries": []})

    def _unlock(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    def note(self, **values: Any) -> None:
        """Extra metadata of the run (e.g. the thread count a resume reuses)."""
        if self.store is not None:
            self.store.set_meta(**values)

    def rewind(self, step: int, boundaries: Sequence[int], phase_ends: int, done: int) -> None:
        """Back to a resume checkpoint taken after main-branch update `step` (`done` updates in all): keep the
        phase boundaries and the first `phase_ends` phase-end events it had, drop the scalars and events the
        killed process recorded after it (the resumed run records them again)."""
        self.boundaries = list(boundaries)
        self.last_step = step
        if self.store is not None:
            self.store.set_meta(boundaries=self.boundaries)
            with self.store.conn:
                self.store.conn.execute("DELETE FROM scalars WHERE step > ?", (step,))
                ids = [r[0] for r in self.store.conn.execute(
                    "SELECT id FROM events WHERE kind='phase_end' ORDER BY id")][phase_ends:]
                self.store.conn.executemany("DELETE FROM events WHERE id=?", [(i,) for i in ids])
        self.tick(done)

    @property
    def progress(self) -> ProgressLogger | None:
        return next((lg for lg in self.loggers if isinstance(lg, ProgressLogger)), None)

    def tick(self, step: int) -> None:
        """One update done (moves the progress bar)."""
        self.last_step = max(self.last_step, step)
        bar = self.progress
        if bar is not None:
            bar.log(step, {})

    def train(self, step: int, loss: float, lr: float, phase: int) -> None:
        self.last_step = max(self.last_step, step)
        if self.store is not None and math.isfinite(loss):
            self.store.log_scalars([(step, "loss", loss), (step, "lr", lr)])
        log_all(self.loggers, step, {"loss": loss, "lr": lr, "phase": phase + 1})

    def evaluation(self, step: int, losses: Mapping[str, float]) -> None:
        """Held-out loss per domain, every evaluation."""
        if self.store is not None:
            self.store.log_scalars([(step, EVAL_PREFIX + n, v) for n, v in losses.items() if math.isfinite(v)])
        if self.loggers:
            values = {EVAL_PREFIX + n: v for n, v in losses.items()}
            finite = [v for v in losses.values() if math.isfinite(v)]
            if finite:
                values[EVAL_PREFIX + "mean"] = sum(finite) / len(finite)
            emit(self.loggers, "evaluation", step, values)

    def phase_end(self, step: int, phase: int, losses: Mapping[str, float]) -> None:
        """The deployable checkpoint of a phase: its loss per domain, and the phase boundary."""
        self.boundaries.append(step)
        if self.store is not None:
            self.store.set_meta(boundaries=self.boundaries)
            self.store.add_event("phase_end", {"phase": phase, "step": step, "loss": dict(losses)})
        if self.loggers:
            emit(self.loggers, "experience_end", step, phase, {f"phase_end_loss/{n}": v for n, v in losses.items()})

    def finished(self, result: Mapping[str, Any]) -> None:
        summary = dict(result.get("summary") or {})
        record = {**summary, **{k: result.get(k) for k in ("train_tokens", "train_seconds", "tokens_per_second",
                                                          "wall_seconds")}}
        record = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in record.items()}
        if self.store is not None:
            self.store.set_meta(status="finished", result=record, finished=time.time())
        if self.loggers:
            metrics = {f"final/loss/{n}": v for n, v in summary.get("final_loss", {}).items()}
            metrics |= {f"final/forgetting/{n}": v for n, v in summary.get("forgetting", {}).items()}
            if isinstance(summary.get("mean_final_loss"), float):
                metrics["final/mean_loss"] = summary["mean_final_loss"]
            if isinstance(result.get("tokens_per_second"), float):
                metrics["tokens_per_second"] = result["tokens_per_second"]
            config = self.store.meta().get("config", {}) if self.store is not None else {}
            emit(self.loggers, "summary", self.last_step, metrics, config)

    def failed(self, error: str | None) -> None:
        if self.store is not None:
            self.store.set_meta(status="failed" if error else "interrupted", **({"error": error} if error else {}))
        emit(self.loggers, "failed", error)

    def close(self) -> None:
        try:
            close_all(self.loggers)
        finally:
            self.loggers = []
            if self.store is not None:
                self.store.close()
                self.store = None
            self._unlock()
