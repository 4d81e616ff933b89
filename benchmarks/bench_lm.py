"""Throughput of `lifelong lm` vs a bare Hugging Face training loop (same model, batch, sequence length).

Both loops: a tiny Llama built from the same config, AdamW (lr 3e-3, betas 0.9/0.95), gradient clipping at
1.0,
an LR set every step, random windows of the same token array (fortunes-en, byte-level). `lifelong lm` reports
tokens/s over its update steps (its evaluations are excluded by its own timer); the bare loop is timed over
the
same number of updates. The two alternate A/B for several rounds in one process, with torch.set_num_threads
pinned; the ratio of medians is printed (target >= 0.95).

    python benchmarks/bench_lm.py --threads 2 --rounds 5 --steps 60
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lifelong, not an installed one


def bare_hf_loop(train: np.ndarray, vocab: int, steps: int, batch: int, seq_len: int, seed: int) -> float:
    from transformers import AutoModelForCausalLM

    from lifelong.lm.models import MODEL_PRESETS

    torch.manual_seed(seed)
    config = MODEL_PRESETS.get("tiny-llama")(vocab, 1024)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(np.asarray(train, dtype=np.int64))
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        ix = torch.from_numpy(rng.integers(0, data.numel() - seq_len, batch))
        x = torch.stack([data[i : i + seq_len] for i in ix.tolist()])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    return steps * batch * seq_len / (time.perf_counter() - t0)


def lifelong_lm(steps: int, batch: int, seq_len: int, seed: int, cache: str, out_root: str,
                kernel: str = "auto") -> float:
    from lifelong.lm.train import LMConfig, run_lm

    r = run_lm(
        LMConfig(
            corpora=["fortunes-en"],
            steps_per_phase=steps,
            batch_size=batch,
            seq_len=seq_len,
            eval_every=10**8,
            eval_windows=4,
            seed=seed,
            cache_dir=cache,
            out_dir=tempfile.mkdtemp(dir=out_root),  # a fresh directory per run (an LM run dir is never reused)
            linear_kernel=kernel,
            progress=False,
            save_checkpoints=False,
            plot=False,
            schedule="cosine",
        )
    )
    return r["tokens_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--json", default=None)
    ap.add_argument("--linear-kernel", default="auto", choices=("auto", "torch"),
                    help="lifelong lm's kernel for the linear layers (lifelong.training.kernels) [auto]")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from lifelong.lm.corpora import resolve_corpus, tokenize_corpus
    from lifelong.lm.tokenizers import ByteTokenizer

    cache = tempfile.mkdtemp(prefix="bench-lm-cache-")
    out = tempfile.mkdtemp(prefix="bench-lm-out-")
    tok = ByteTokenizer()
    train = np.asarray(tokenize_corpus(resolve_corpus("fortunes-en"), tok, cache).train)
    lifelong_lm(5, a.batch_size, a.seq_len, 0, cache, out, a.linear_kernel)  # warm up both paths (imports, allocator)
    bare_hf_loop(train, tok.vocab_size, 5, a.batch_size, a.seq_len, 0)
    A, B = [], []
    for r in range(a.rounds):
        A.append(lifelong_lm(a.steps, a.batch_size, a.seq_len, r, cache, out, a.linear_kernel))
        B.append(bare_hf_loop(train, tok.vocab_size, a.steps, a.batch_size, a.seq_len, r))
        print(f"round {r}: lifelong lm {A[-1]:.0f} tok/s, bare HF loop {B[-1]:.0f} tok/s", flush=True)
    res = {
        "threads": a.threads,
        "batch_size": a.batch_size,
        "seq_len": a.seq_len,
        "steps": a.steps,
        "lifelong_lm_tokens_per_second": A,
        "bare_hf_tokens_per_second": B,
        "median_lifelong": statistics.median(A),
        "median_bare": statistics.median(B),
        "ratio": statistics.median(A) / statistics.median(B),
    }
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, list)}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
