"""Resume checkpoints of a language-model run: everything the training loop needs to continue exactly.

A run directory holds one resume checkpoint, ``resume.pt``, rewritten every ``checkpoint_every`` updates (decay
branch updates included) and at each phase end. It is written by :func:`lifelong.training.checkpoint.save_checkpoint`
(atomic, fsync'ed, its SHA-256 recorded in the run store before and after the rename), so a kill -9 at any moment
leaves the previous checkpoint or the new one, and a damaged file is refused in one line. It holds:

- ``model`` and ``optimizer`` state dicts (of the branch being trained, during a decayed branch) and, during a
  branch, ``main_branch``: the pre-decay model and optimizer that training continues from after the branch;
- ``position``: the phase, the next main-branch update of the phase, the next branch update (None: not in a
  branch), the global step and the updates done. The replay sampler and the data order have no other state: a
  batch is a pure function of (seed, phase, step) (:class:`~lifelong.lm.replay.MixtureSampler`);
- ``ranks``: per data-parallel rank, its torch (and CUDA) generator states and its running train-loss sum since
  the last logged point;
- ``result``: the result dict so far (evaluations, train losses, phase ends with their per-domain losses,
  probes) as JSON text, ``probe_baseline``, ``boundaries``, ``train_seconds``, ``train_tokens``, ``threads`` and
  ``world_size``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from lifelong.errors import LifelongError
from lifelong.training.checkpoint import load_checkpoint, save_checkpoint

CHECKPOINT = "resume.pt"
FORMAT = 1
REQUIRED = ("format", "config", "model", "optimizer", "position", "ranks", "result", "world_size", "threads")
# settings that do not change the numbers a run computes (a resumed run may differ in these)
FREE_SETTINGS = ("out_dir", "json_path", "cache_dir", "threads", "device", "progress", "plot", "loggers")


def checkpoint_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT


def save_state(state: dict[str, Any], out_dir: str | os.PathLike) -> None:
    """Write the resume checkpoint of the run in `out_dir` atomically (one clear line on a full disk)."""
    save_checkpoint({"format": FORMAT, **state}, checkpoint_path(out_dir), resume_command="lifelong lm --resume")


def remove_state(out_dir: str | os.PathLike) -> None:
    checkpoint_path(out_dir).unlink(missing_ok=True)


def load_state(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The resume checkpoint in `out_dir` (None if there is none), verified against the digest in the run store;
    a damaged, unreadable or foreign file is one LifelongError line."""
    path = checkpoint_path(out_dir)
    restart = f"delete it to restart the run from the beginning with lifelong lm --resume {Path(out_dir)}"
    state = load_checkpoint(path, REQUIRED, restart, kind="language-model resume")
    if state is None:
        return None
    if state["format"] != FORMAT:
        raise LifelongError(f"checkpoint {path} has format {state['format']}, this lifelong reads {FORMAT}; "
                            f"{restart}")
    return state


def check_state(state: dict[str, Any], config: dict[str, Any], world: int, out_dir: Path) -> None:
    """Refuse a checkpoint written with other settings or on another number of processes (one line)."""
    if state["world_size"] != world:
        raise LifelongError(f"run {out_dir} was trained on {state['world_size']} process(es) and this resume has "
                            f"{world}: resume it on the same world size (torchrun --nproc_per_node="
                            f"{state['world_size']}) so that it continues exactly")
    saved = json.loads(state["config"])
    diff = sorted(k for k in set(saved) | set(config) if k not in FREE_SETTINGS and saved.get(k) != config.get(k))
    if diff:
        k = diff[0]
        raise LifelongError(f"checkpoint {checkpoint_path(out_dir)} was written with other settings ({k} "
                            f"{saved.get(k)!r}, now {config.get(k)!r}); delete it to restart the run")


def check_corpora(state: dict[str, Any], fingerprints: dict[str, str], out_dir: Path) -> None:
    """Refuse to continue on corpora whose files changed (size or modification time) since the checkpoint: the
    token streams, held-out windows and replay would silently differ. Checkpoints from before this check have
    no fingerprints and are not checked."""
    saved = state.get("corpora") or {}
    changed = sorted(n for n, fp in fingerprints.items() if n in saved and saved[n] != fp)
    if changed:
        raise LifelongError(f"corpus {changed[0]} changed since run {out_dir} started (its files' sizes or times "
                            "differ): put the original text back to resume, or start a new run")


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's torch generator states (CPU, and the CUDA device in use)."""
    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and states.get("cuda") is not None:
        torch.cuda.set_rng_state(states["cuda"], device)
