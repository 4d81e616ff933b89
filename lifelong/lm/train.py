"""Continual pre-training of a causal LM over a sequence of corpora (phases): the readable training loop.

One function, :func:`run_lm`, in the spirit of nanoGPT: build tokenizer, corpora, model, optimizer and
schedule,
then for each phase draw mixture batches (current corpus + a replay fraction of earlier corpora), take AdamW
updates with the scheduled LR, evaluate held-out loss on every corpus every ``eval_every`` updates and at each
phase end, and save the phase's deployable checkpoint (after a decayed branch for WSD / infinite).

Data parallel: launched under ``torchrun --nproc_per_node=N`` (WORLD_SIZE > 1) the same call trains with DDP
(gloo on CPU, NCCL on GPU). All ranks compute the same global batch plan and each reads only its own rows,
so a
run with global batch B on N processes follows the single-process run with batch B (up to float reduction
order).

Resumable: every ``checkpoint_every`` updates and at each phase end the loop writes a resume checkpoint
(:mod:`lifelong.lm.resume`); :func:`resume_lm` continues a run killed at any moment from its last one to the same
numbers as an uninterrupted run (bit-identical on CPU with the same thread count and world size).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lifelong.errors import LifelongError
from lifelong.lm import corpora as C
from lifelong.lm import resume as resume_state
from lifelong.lm.evaluate import ProbeSet, _autocast, domain_loss, eval_windows
from lifelong.lm.models import build_model, count_parameters
from lifelong.lm.replay import MixtureSampler, check_replay
from lifelong.lm.schedules import DECAY_SHAPES, SCHEDULES, make_phase_schedule
from lifelong.lm.store import KIND, LMRecorder
from lifelong.lm.tokenizers import ByteTokenizer, load_tokenizer_dir, train_bpe
from lifelong.params import Param
from lifelong.tracking.files import finite_json, write_json_atomic
from lifelong.tracking.resources import environment
from lifelong.training.config import SETTINGS, check_device
from lifelong.training.kernels import linear_kernel


@dataclass
class LMConfig:
    """Everything a run needs; the defaults are the CPU demo (two phases of a ~0.5M-parameter Llama)."""

    corpora: list[str] = field(
        default_factory=lambda: ["fortunes-en", "fortunes-de"]
    )  # phases; "a+b" = union
    model: str = "tiny-llama"
    tokenizer: str = "byte"
    steps_per_phase: int = 400
    batch_size: int = 16  # global, over all ranks
    seq_len: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_frac: float = 0.05
    schedule: str = "cosine"
    const_lr_ratio: float = 0.5
    cooldown_frac: float = 0.15
    branch_frac: float = 0.1
    decay_shape: str = "linear"
    replay: float = 0.0
    eval_every: int = 50
    eval_windows: int = 48
    probes: int = 0
    probe_step: int | None = None
    probe_len: int = 64
    probe_corpus: str | None = None
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    val_fraction: float = 0.05
    eval_corpora: list[str] | None = None
    out_dir: str | None = None
    json_path: str | None = None
    cache_dir: str | None = None
    threads: int | None = None
    device: str = "auto"
    linear_kernel: str = "auto"  # as RunConfig.linear_kernel: oneDNN for the large CPU linear layers, or torch
    save_checkpoints: bool = True
    checkpoint_every: int = 100  # updates between resume checkpoints (also at each phase end); 0: none
    plot: bool = True
    progress: bool = True
    log_every: int = 10
    loggers: list[str] = field(default_factory=list)  # extra loggers: csv, jsonl, tensorboard, mlflow, wandb


PARAMS = {
    "steps_per_phase": Param(400, "updates per phase", low=1),
    "batch_size": Param(16, "global batch (sequences)", low=1),
    "seq_len": Param(128, "tokens per sequence", low=2),
    "lr": Param(3e-3, "peak learning rate", low=0, low_open=True),
    "min_lr_ratio": Param(0.1, "floor / peak", low=0, high=1),
    "warmup_frac": Param(0.05, "warmup as a fraction of a phase", low=0, high=1),
    "schedule": Param("cosine", "LR schedule", choices=SCHEDULES),
    "const_lr_ratio": Param(0.5, "infinite: constant LR / peak", low=0, high=1, low_open=True),
    "cooldown_frac": Param(0.15, "infinite: end of cooldown in phase 1", low=0, high=1),
    "branch_frac": Param(0.1, "decay branch length / phase", low=0, high=1, low_open=True),
    "decay_shape": Param("linear", "WSD decay shape", choices=DECAY_SHAPES),
    "eval_every": Param(50, "updates between evaluations", low=1),
    "eval_windows": Param(48, "held-out windows per corpus", low=1),
    "probes": Param(0, "retention probes (0: none)", low=0),
    "probe_len": Param(64, "tokens per probe (at most seq-len + 1: a longer one is cut to it)", low=4),
    "weight_decay": Param(0.1, "AdamW weight decay", low=0),
    "grad_clip": Param(1.0, "gradient-norm clip (0: off)", low=0),
    "val_fraction": Param(0.05, "held-out fraction of documents", low=0, high=0.5, low_open=True),
    "log_every": Param(10, "updates between train-loss records", low=1),
    "checkpoint_every": Param(100, "updates between resume checkpoints (0: none)", low=0),
    "seed": Param(0, "random seed", low=0, high=2**32 - 1),
    "linear_kernel": SETTINGS["linear_kernel"],
}
LIMITS = {"steps_per_phase": 10**8, "batch_size": 1 << 20, "seq_len": 1 << 20, "eval_windows": 1 << 20,
          "eval_every": 10**8, "probes": 1 << 20, "probe_len": 1 << 20, "log_every": 10**8,
          "checkpoint_every": 10**8}
PARAMS = {k: dataclasses.replace(p, high=LIMITS[k]) if k in LIMITS else p for k, p in PARAMS.items()}
THREADS = Param(1, "CPU threads", low=1, high=1024)


def validate(cfg: LMConfig) -> LMConfig:
    """Coerce and range-check every declared field (one clear LifelongError line on a bad value)."""
    values = {k: p.coerce(k.replace("_", "-"), getattr(cfg, k)) for k, p in PARAMS.items()}
    if cfg.threads is not None:
        values["threads"] = THREADS.coerce("threads", cfg.threads)
    cfg = dataclasses.replace(cfg, **values)
    check_device(str(cfg.device))
    if not isinstance(cfg.corpora, (str, list, tuple)):
        raise LifelongError(f"corpora={cfg.corpora!r} must be a comma-separated string or a list of names")
    check_outputs(cfg)
    check_schedule_fields(cfg)
    cfg.replay = check_replay(cfg.replay)
    if isinstance(cfg.corpora, str):
        cfg.corpora = [c for c in cfg.corpora.split(",") if c.strip()]
    if not cfg.corpora:
        raise LifelongError("no corpora given: pass --corpora NAME[,NAME...] (one phase per name)")
    if cfg.probe_step is not None and not (1 <= cfg.probe_step <= cfg.steps_per_phase * len(cfg.corpora)):
        raise LifelongError(
            f"probe step {cfg.probe_step} is outside the run (1..{cfg.steps_per_phase * len(cfg.corpora)})"
        )
    return cfg


SCHEDULE_FIELDS = {"const_lr_ratio": ("infinite",), "cooldown_frac": ("infinite",), "branch_frac": ("wsd", "infinite"),
                   "decay_shape": ("wsd",)}  # each field and the schedules that read it


def check_schedule_fields(cfg: LMConfig) -> None:
    """Refuse a schedule field set away from its default for a schedule that ignores it (it was silently
    unused: --decay-shape exp with the cosine schedule trained exactly as without it)."""
    for name, schedules in SCHEDULE_FIELDS.items():
        if cfg.schedule not in schedules and getattr(cfg, name) != PARAMS[name].default:
            flag = "--" + name.replace("_", "-")
            raise LifelongError(f"{flag} {getattr(cfg, name)} applies to --schedule {' or '.join(schedules)} only, "
                                f"not {cfg.schedule}")


def check_outputs(cfg: LMConfig) -> None:
    """Refuse output paths that cannot be written (a file where a directory goes, or the reverse)."""
    for label, path, want_dir in (("--out", cfg.out_dir, True), ("--cache-dir", cfg.cache_dir, True),
                                  ("--json", cfg.json_path, False)):
        if not path:
            continue
        p = Path(path)
        if want_dir and p.exists() and not p.is_dir():
            raise LifelongError(f"{label} {p} is a file, not a directory")
        if not want_dir and p.is_dir():
            raise LifelongError(f"{label} {p} is a directory, not a file")
        parent = p if want_dir else p.parent
        for q in [parent, *parent.parents]:
            if q.exists():
                if not q.is_dir():
                    raise LifelongError(f"{label} {p}: {q} is a file, not a directory")
                if not os.access(q, os.W_OK | os.X_OK):
                    raise LifelongError(f"{label} {p}: {q} is not writable")
                break


# ----------------------------------------------------------------------------------------------- distributed
def _dist_env() -> tuple[int, int, int]:
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


# ------------------------------------------------------------------------------------------- setup helpers
def _phases(cfg: LMConfig) -> list[list[str]]:
    return [[s.strip() for s in p.split("+") if s.strip()] for p in cfg.corpora]


def _make_tokenizer(cfg: LMConfig, sources: dict[str, C.CorpusSource], cache: Path, rank: int, world: int):
    spec = cfg.tokenizer
    if spec == "byte":
        return ByteTokenizer()
    if spec.startswith("bpe:"):
        try:
            size = int(spec[4:])
        except ValueError:
            raise LifelongError(f"tokenizer '{spec}' must be bpe:<vocabulary size>, e.g. bpe:2048") from None
        key = "-".join(f"{s.name}.{s.fingerprint}" for s in sources.values())
        import hashlib

        d = cache / f"bpe{size}-{hashlib.sha1(f'{key}|{cfg.val_fraction}'.encode()).hexdigest()[:16]}"
        if rank == 0 and not (d / "tokenizer.json").is_file():
            texts = []
            for s in sources.values():
                texts.extend(C.split_documents(s.read(), cfg.val_fraction)["train"])
            if not texts:
                raise LifelongError("cannot train a BPE tokenizer: the corpora have no training documents")
            train_bpe(texts, size, d)
        _barrier(world)
        return load_tokenizer_dir(d)
    if os.sep in spec or Path(spec).exists():
        return load_tokenizer_dir(spec)
    raise LifelongError(
        f"unknown tokenizer '{spec}': use 'byte', 'bpe:<vocabulary size>' or a tokenizer directory"
    )


def _decay_mask_groups(model: torch.nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _save_checkpoint(module, path: Path, meta: dict) -> None:
    import shutil

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one progress bar (ours) is enough
    try:
        module.save_pretrained(tmp)
    finally:
        hf_logging.enable_progress_bar()
    (tmp / "lifelong_lm.json").write_text(json.dumps(meta, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


_TORCH_THREADS = torch.get_num_threads()  # torch's own default, before anyone changes it


def auto_threads(world: int = 1) -> int:
    """CPU threads per process when none are given: the cores left idle by other jobs (1-minute load average),
    shared among the local processes. Oversubscribed OpenMP threads make a step many times slower."""
    cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:
        busy = 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return max(1, min(_TORCH_THREADS, (cores - busy) // max(1, local)))


def default_out_dir() -> Path:
    return Path("runs") / time.strftime("lm-%Y%m%d-%H%M%S")


# ----------------------------------------------------------------------------------------------- the run
def run_lm(cfg: LMConfig, resume: bool = False) -> dict:
    """Continually pre-train over ``cfg.corpora`` and return the result dict (also written as JSON).

    With `resume`, continue the interrupted run in ``cfg.out_dir`` from its resume checkpoint (from the start if
    it has none); :func:`resume_lm` builds that call from a run directory."""
    cfg = validate(cfg)
    rank, world, local_rank = _dist_env()
    torch.set_num_threads(cfg.threads or auto_threads(world))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise LifelongError(f"device={cfg.device!r} requested but CUDA is not available on this machine")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise LifelongError(f"device={cfg.device!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    own_group = world > 1 and not torch.distributed.is_initialized()
    if own_group:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise LifelongError(f"global batch {cfg.batch_size} is not divisible by the {world} processes")
    if cfg.probes and cfg.probes % world:
        raise LifelongError(f"{cfg.probes} probes cannot be split evenly over {world} processes")
    wall0 = time.perf_counter()
    main_proc = rank == 0
    out_dir = Path(cfg.out_dir) if cfg.out_dir else default_out_dir()
    cache = Path(cfg.cache_dir) if cfg.cache_dir else C.default_cache_dir()

    # corpora and tokenizer (rank 0 tokenizes into the cache; the others then memory-map it)
    phases = _phases(cfg)
    names = list(dict.fromkeys([c for p in phases for c in p] + list(cfg.eval_corpora or [])))
    sources = {n: C.resolve_corpus(n) for n in names}
    tok = _make_tokenizer(cfg, sources, cache, rank, world)
    corp: dict[str, C.TokenizedCorpus] = {}
    for turn in [0, 1] if world > 1 else [0]:
        if (rank == 0) == (turn == 0):
            for n in names:
                corp[n] = C.tokenize_corpus(sources[n], tok, cache, cfg.val_fraction)
        _barrier(world)
    need = cfg.batch_size * (cfg.seq_len + 1)
    for k, p in enumerate(phases):
        have = sum(corp[n].n_train for n in p)
        if have < need:
            raise LifelongError(
                f"phase {k + 1} ({'+'.join(p)}) has {have} training tokens, fewer than one batch "
                f"({cfg.batch_size} x {cfg.seq_len + 1} = {need})"
            )
    windows = {}
    for n in names:
        try:
            windows[n] = eval_windows(corp[n].val, cfg.seq_len, cfg.eval_windows)
        except LifelongError as err:
            raise LifelongError(f"corpus {n}: {err}; give it more text or a shorter --seq-len") from None

    # model, optimizer, schedule
    model = build_model(cfg.model, tok.vocab_size, cfg.seq_len, seed=cfg.seed).to(device)
    vocab = model.get_input_embeddings().weight.shape[0]
    n_params = count_parameters(model)
    module = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = torch.optim.AdamW(
        _decay_mask_groups(module, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8
    )
    params = [p for g in opt.param_groups for p in g["params"]]
    sched = make_phase_schedule(
        cfg.schedule,
        [cfg.steps_per_phase] * len(phases),
        cfg.lr,
        cfg.min_lr_ratio,
        cfg.warmup_frac,
        cfg.const_lr_ratio,
        cfg.cooldown_frac,
        cfg.branch_frac,
        cfg.decay_shape,
    )
    b_local = cfg.batch_size // world
    kernel = linear_kernel(cfg.linear_kernel, device, module, b_local * cfg.seq_len)  # the forwards' context
    rows = slice(rank * b_local, (rank + 1) * b_local)

    # retention probes
    probe_set, probe_step = None, None
    if cfg.probes:
        probe_step = cfg.probe_step or max(1, cfg.steps_per_phase // 2)
        pc = cfg.probe_corpus or phases[min(len(phases) - 1, (probe_step - 1) // cfg.steps_per_phase)][0]
        if pc not in corp:
            raise LifelongError(f"probe corpus '{pc}' is not one of the run's corpora: {', '.join(names)}")
        probe_set = ProbeSet.from_tokens(
            corp[pc].probe, cfg.probes, min(cfg.probe_len, cfg.seq_len + 1), cfg.seed, pc
        )
    probe_checks = set()
    if probe_step is not None:
        probe_checks = {probe_step + (2**i if i >= 0 else 0) for i in range(-1, 20)}

    result: dict = {
        "config": dataclasses.asdict(cfg),
        "model": {"spec": cfg.model, "parameters": n_params, "vocab_size": vocab},
        "tokenizer": {"spec": cfg.tokenizer, "vocab_size": tok.vocab_size},
        "corpora": {
            n: {"train_tokens": corp[n].n_train, "val_tokens": int(corp[n].val.shape[0])} for n in names
        },
        "phases": [
            {"phase": k, "corpora": p, "start_step": s, "steps": n}
            for k, (p, s, n) in enumerate(zip(phases, sched.starts, sched.phase_steps, strict=True))
        ],
        "eval": [],
        "phase_end": [],
        "train": [],
        "probes": [],
        "world_size": world,
        "device": str(device),
        "versions": environment(),
    }

    def evaluate_all() -> dict[str, float]:
        module.eval()
        with kernel():
            out = {n: domain_loss(module, windows[n], 32, rank, world) for n in names}
        module.train()
        return out

    def probe_record(step: int) -> None:
        module.eval()
        with kernel():
            rec = probe_set.evaluate(module)
        module.train()
        result["probes"].append(
            {"step": step, "since_exposure": step - probe_step, "corpus": probe_set.corpus, **rec}
        )

    use_amp = device.type == "cuda"

    def update(x: torch.Tensor, lr: float) -> torch.Tensor:
        for g in opt.param_groups:
            g["lr"] = lr
        x = x.to(device, non_blocking=True)
        with _autocast(device) if use_amp else _null(), kernel():
            logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    total_updates = sum(sched.phase_steps) + sum(len(b) for b in sched.branches)
    # the run store, the loggers and the progress (a bar on a terminal, plain lines elsewhere): main process only
    rec = LMRecorder(out_dir if main_proc else None, finite_json(dataclasses.asdict(cfg)), cfg.loggers, total_updates,
                     cfg.progress, resume=resume)
    rec.note(threads=torch.get_num_threads(), world_size=world)
    every = cfg.checkpoint_every

    def fail(what: str) -> None:
        """Stop the run: keep the results so far (valid JSON, status failed) and say so in one line."""
        message = f"{what}: lower --lr (now {cfg.lr:g}); results so far are in {out_dir / 'result.json'}"
        rec.failed(message)
        rec.close()
        if main_proc:
            failed = {**result, "status": "failed", "error": message}
            write_json_atomic(finite_json(failed), out_dir / "result.json", indent=1)
            if cfg.json_path:
                write_json_atomic(finite_json(failed), Path(cfg.json_path), indent=1)
        raise LifelongError(message)

    def checkpoint(phase: int, step: int, branch_step: int | None, main_branch: tuple | None) -> None:
        """The resume checkpoint: training continues at update `step` of `phase` (or at update `branch_step` of
        its decayed branch, `main_branch` being the pre-decay model and optimizer)."""
        mine = {"rng": resume_state.capture_rng(device), "loss_sum": loss_sum.detach().cpu(), "loss_n": loss_n}
        ranks = [mine]
        if world > 1:
            ranks = [None] * world
            torch.distributed.all_gather_object(ranks, mine)
        if not main_proc:
            return
        resume_state.save_state({
            "config": json.dumps(finite_json(dataclasses.asdict(cfg))),
            "model": module.state_dict(),
            "optimizer": opt.state_dict(),
            "main_branch": None if main_branch is None else {"model": main_branch[0], "optimizer": main_branch[1]},
            "position": {"phase": phase, "step": step, "branch_step": branch_step, "t": t, "done": done},
            "ranks": ranks,
            "result": json.dumps(result),
            "probe_baseline": None if probe_set is None or probe_set.baseline is None else list(probe_set.baseline),
            "boundaries": list(rec.boundaries),
            "train_seconds": train_seconds,
            "train_tokens": train_tokens,
            "wall_seconds": time.perf_counter() - wall0,
            "threads": torch.get_num_threads(),
            "world_size": world,
            "corpora": {n: sources[n].fingerprint for n in names},
        }, out_dir)

    try:
        done, t = 0, 0  # updates taken (decay branches included: the progress count), main-branch updates
        train_seconds, train_tokens = 0.0, 0
        loss_sum, loss_n = torch.zeros((), device=device), 0
        start_phase, start_step, branch_start, main_saved = 0, 0, None, None
        state = resume_state.load_state(out_dir) if resume else None
        if state is None and main_proc:
            resume_state.remove_state(out_dir)  # a fresh start (or a resume with no checkpoint yet)
        if state is not None:
            resume_state.check_state(state, finite_json(dataclasses.asdict(cfg)), world, out_dir)
            resume_state.check_corpora(state, {n: sources[n].fingerprint for n in names}, out_dir)
            module.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if state["main_branch"] is not None:
                main_saved = (state["main_branch"]["model"], state["main_branch"]["optimizer"])
            pos = state["position"]
            start_phase, start_step, branch_start = pos["phase"], pos["step"], pos["branch_step"]
            t, done = pos["t"], pos["done"]
            result.clear()
            result.update(json.loads(state["result"]))
            mine = state["ranks"][rank]
            resume_state.restore_rng(mine["rng"], device)
            loss_sum, loss_n = mine["loss_sum"].to(device), mine["loss_n"]
            train_seconds, train_tokens = state["train_seconds"], state["train_tokens"]
            wall0 -= state["wall_seconds"]
            if probe_set is not None and state["probe_baseline"] is not None:
                probe_set.baseline = tuple(state["probe_baseline"])
            rec.rewind(t, state["boundaries"], len(result["phase_end"]), done)
            module.train()
        else:
            if resume:
                rec.rewind(0, [], 0, 0)
            module.train()
            result["eval"].append({"step": 0, "phase": 0, "loss": evaluate_all()})
            rec.evaluation(0, result["eval"][-1]["loss"])
        for k in range(start_phase, len(phases)):
            phase = phases[k]
            current = [corp[n].train for n in phase]
            past_names = [n for p in phases[:k] for n in p if n not in phase]
            past = [corp[n].train for n in dict.fromkeys(past_names)]
            sampler = MixtureSampler(current, past, cfg.replay, cfg.batch_size, cfg.seq_len, cfg.seed, k)
            n_steps = sched.phase_steps[k]
            branch = sched.branch(k)
            in_branch = k == start_phase and branch_start is not None
            first = n_steps if in_branch else start_step if k == start_phase else 0
            t0 = time.perf_counter()
            for i in range(first, n_steps):
                lr = sched.main(t)  # t updates done so far: this is the update at global step t
                t += 1
                if probe_set is not None and t == probe_step:
                    sync()
                    train_seconds += time.perf_counter() - t0
                    probe_record(t - 1)  # just before the exposure
                    probe_set.baseline = probe_set.last
                    x = torch.cat([probe_set.probes[rank::world]])
                    loss = update(x, lr)
                    probe_record(t)
                    t0 = time.perf_counter()
                else:
                    loss = update(sampler.batch(i, rows), lr)
                    train_tokens += cfg.batch_size * cfg.seq_len
                loss_sum += loss
                loss_n += 1
                done += 1
                rec.tick(done)
                if t % cfg.log_every == 0 or i == n_steps - 1:
                    avg = float(loss_sum) / loss_n
                    if not math.isfinite(avg):
                        fail(f"training loss became {avg} by update {t} (phase {k + 1})")
                    if world > 1:
                        avg_t = torch.tensor([avg], device=device)
                        torch.distributed.all_reduce(avg_t)
                        avg = float(avg_t) / world
                    result["train"].append({"step": t, "phase": k, "loss": avg, "lr": lr})
                    rec.train(t, avg, lr, k)
                    loss_sum, loss_n = torch.zeros((), device=device), 0
                at_end = i == n_steps - 1
                probe_due = probe_set is not None and t in probe_checks and t != probe_step
                if t % cfg.eval_every == 0 or at_end or probe_due:
                    sync()
                    train_seconds += time.perf_counter() - t0
                    if t % cfg.eval_every == 0 or at_end:
                        result["eval"].append({"step": t, "phase": k, "loss": evaluate_all()})
                        rec.evaluation(t, result["eval"][-1]["loss"])
                        bad = [n for n, v in result["eval"][-1]["loss"].items() if not math.isfinite(v)]
                        if bad:
                            fail(f"held-out loss on {', '.join(bad)} became non-finite at update {t}")
                    if probe_set is not None and t > probe_step:
                        probe_record(t)
                    t0 = time.perf_counter()
                if every and done % every == 0 and not (at_end and branch is None):  # (a phase end follows)
                    sync()
                    train_seconds += time.perf_counter() - t0
                    checkpoint(k, i + 1, None, None)
                    t0 = time.perf_counter()

            # the deployable checkpoint of this phase: a decayed branch off the main branch, or the main branch
            kind = "main"
            if branch is not None:
                if in_branch:
                    saved, j0 = main_saved, branch_start
                else:
                    saved = (
                        {n: v.detach().clone() for n, v in module.state_dict().items()},
                        copy.deepcopy(opt.state_dict()),
                    )
                    j0 = 0
                t0 = time.perf_counter()
                for j in range(j0, len(branch)):
                    update(sampler.batch(n_steps + j, rows), branch[j])
                    train_tokens += cfg.batch_size * cfg.seq_len
                    done += 1
                    rec.tick(done)
                    if every and done % every == 0 and j < len(branch) - 1:
                        sync()
                        train_seconds += time.perf_counter() - t0
                        checkpoint(k, n_steps, j + 1, saved)
                        t0 = time.perf_counter()
                sync()
                train_seconds += time.perf_counter() - t0
                kind = "decayed"
            deploy = evaluate_all()
            entry = {
                "phase": k,
                "step": t,
                "deployable": kind,
                "loss": deploy,
                "perplexity": {n: math.exp(min(v, 50.0)) for n, v in deploy.items()},
            }
            if probe_set is not None and t >= probe_step:
                module.eval()
                entry["probes"] = probe_set.evaluate(module)
                module.train()
            if cfg.save_checkpoints and main_proc:
                ck = out_dir / "checkpoints" / f"phase{k + 1}-{'+'.join(phase)}"
                _save_checkpoint(
                    module,
                    ck,
                    {
                        "phase": k,
                        "step": t,
                        "deployable": kind,
                        "tokenizer": cfg.tokenizer,
                        "corpora": phase,
                        "loss": deploy,
                    },
                )
                entry["checkpoint"] = str(ck)
            result["phase_end"].append(entry)
            rec.phase_end(t, k, deploy)
            if branch is not None:  # continue from the pre-decay state (the main branch)
                module.load_state_dict(saved[0])
                opt.load_state_dict(saved[1])
            if every:
                checkpoint(k + 1, 0, None, None)

        result["summary"] = summarize(result, phases)
        result["train_tokens"] = train_tokens
        result["train_seconds"] = train_seconds
        result["tokens_per_second"] = train_tokens / train_seconds if train_seconds > 0 else float("nan")
        result["wall_seconds"] = time.perf_counter() - wall0
        result["status"] = "finished"
        if main_proc:
            write_json_atomic(finite_json(result), out_dir / "result.json", indent=1)
            if cfg.json_path:
                write_json_atomic(finite_json(result), Path(cfg.json_path), indent=1)
            if cfg.plot:
                from lifelong.lm.plots import plot_run

                plot_run(result, out_dir / "loss.png")
        rec.finished(result)
        rec.close()
        if main_proc:
            resume_state.remove_state(out_dir)  # a finished run is not resumed; its checkpoint only takes space
    except BaseException as err:
        if rec.store is not None:  # not already recorded by fail()
            first = (str(err).splitlines() or [type(err).__name__])[0][:300]
            rec.failed(first if not isinstance(err, KeyboardInterrupt) else None)
        rec.close()
        raise
    result["out_dir"] = str(out_dir)
    if own_group:  # every rank reaches the end before any leaves the group (gloo aborts a rank left alone)
        _barrier(world)
        torch.distributed.destroy_process_group()
    return result


def resume_lm(run_dir: str | os.PathLike, threads: int | None = None, progress: bool = True,
              json_path: str | None = None, loggers: list[str] | None = None) -> dict:
    """Finish the interrupted `lifelong lm` run in `run_dir` from its last resume checkpoint, with its stored
    settings; the numbers equal an uninterrupted run's. `threads` defaults to the thread count the run used
    (another count gives the same numbers only within float tolerance on CPU)."""
    from lifelong.tracking.store import RunStore

    run_dir = Path(run_dir)
    store = RunStore.open(run_dir)
    try:
        meta = store.checked_meta()
    finally:
        store.close()
    if meta.get("kind") != KIND:
        raise LifelongError(f"{run_dir} holds a classification run, not a language-model run: resume it with "
                            f"lifelong resume {run_dir}")
    if meta.get("status") == "finished":
        raise LifelongError(f"run {run_dir} already finished; nothing to resume (its result: "
                            f"{run_dir / 'result.json'})")
    fields = {f.name for f in dataclasses.fields(LMConfig)}
    stored = meta["config"]
    unknown = sorted(set(stored) - fields)
    if unknown:
        raise LifelongError(f"run {run_dir} was written by another version of lifelong (unknown setting "
                            f"'{unknown[0]}'); it cannot be resumed by this one")
    cfg = LMConfig(**stored)
    stored_threads = meta.get("threads")
    cfg = dataclasses.replace(
        cfg,
        out_dir=str(run_dir),
        threads=threads or (stored_threads if isinstance(stored_threads, int) else None) or cfg.threads,
        progress=progress,
        json_path=json_path if json_path is not None else cfg.json_path,
        loggers=list(loggers) if loggers is not None else cfg.loggers,
    )
    return run_lm(cfg, resume=True)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def summarize(result: dict, phases: list[list[str]]) -> dict:
    """Per domain: loss of the deployable checkpoint after the last phase that trained on it, final loss, and
    forgetting = final - after-own-phase (positive: forgotten)."""
    ends = result["phase_end"]
    final = ends[-1]["loss"]
    own: dict[str, float] = {}
    for k, p in enumerate(phases):
        for n in p:
            own[n] = ends[k]["loss"][n]
    return {
        "final_loss": final,
        "loss_after_own_phase": own,
        "forgetting": {n: final[n] - own[n] for n in own},
        "mean_final_loss": float(np.mean(list(final.values()))),
    }
