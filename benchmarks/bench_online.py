"""Online streams and long streams: the engine's overhead and whether the per-step cost stays flat.

    python benchmarks/bench_online.py            # one thread; prints the figures and ratios

(a) The engine's online loop (ER, batch 10, reservoir of 500, 10 replayed samples, online_iter 1, prequential
    accuracy, seen-label head, no anytime evaluation) on an online class-incremental Fashion-MNIST stream (5
    segments of 2,000 samples) against a bare loop doing the same work: the same MLP, prequential prediction of
    each incoming batch, the masked cross-entropy, reservoir replay, one SGD step per batch, and the same
    evaluations at segment ends. Alternating runs, medians.
(b) Per-step training cost of the first and last 50 tasks of a 500-task SCoLe stream (2 classes, 100 samples per
    task, naive) and of the first and last 5 experiences of a 50-experience SCoLe stream (1,000 samples each) with
    ER: the median time between consecutive steps inside a task (steps that follow an evaluation are left out).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from lifelong.data import load_dataset
from lifelong.data.recurring import scole
from lifelong.data.scenarios import class_incremental
from lifelong.models.backbones import make_model
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine

B, REPLAY, MEMORY, PER_SEGMENT, REPEATS = 10, 10, 500, 2000, 3


def online_stream(data):
    s = class_incremental(data, 5)
    g = torch.Generator().manual_seed(0)
    for e in s:
        pick = torch.randperm(len(e.train_idx), generator=g)[:PER_SEGMENT]
        e.train_idx = e.train_idx[pick]
    s.online = True
    return s


def engine_run(data) -> float:
    cfg = RunConfig(scenario="split-fashion-mnist", strategy="er", batch_size=B, eval_every_samples=0,
                    checkpoint_every=0, threads=1, device="cpu",
                    hparams={"buffer_size": MEMORY, "replay_batch_size": REPLAY})
    engine = Engine(cfg, stream=online_stream(data))
    started = time.perf_counter()
    engine.run()
    return time.perf_counter() - started


def bare_run(data) -> float:
    stream = online_stream(data)
    torch.manual_seed(0)
    model = make_model("mlp", data.shape, data.num_classes, hidden=[256, 256])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
    seen = torch.zeros(data.num_classes, dtype=torch.bool)
    mem_x = torch.zeros(MEMORY, data.train_x.shape[1], dtype=data.train_x.dtype)
    mem_y = torch.zeros(MEMORY, dtype=torch.long)
    g = torch.Generator().manual_seed(1)
    count = 0
    hits = torch.zeros((), dtype=torch.long)

    def evaluate():
        model.eval()
        with torch.inference_mode():
            for e in stream:
                logits = model(data.prepare(data.test_x[e.test_idx])).masked_fill(~seen, float("-inf"))
                int((logits.argmax(1) == data.test_y[e.test_idx]).sum())
        model.train()

    started = time.perf_counter()
    evaluate()
    for e in stream:
        for b in range(0, e.num_train, B):
            idx = e.train_idx[b:b + B]
            raw, y = data.train_x.index_select(0, idx), data.train_y.index_select(0, idx)
            model.eval()
            with torch.no_grad():
                pred = model(data.prepare(raw)).masked_fill(~seen, float("-inf")).argmax(1)
                hits += ((pred == y) & seen[y]).sum()
            model.train()
            seen[y] = True
            n = min(count, MEMORY)
            if n:
                pick = torch.randint(n, (REPLAY,), generator=g)
                raw_all, y_all = torch.cat([raw, mem_x[pick]]), torch.cat([y, mem_y[pick]])
            else:
                raw_all, y_all = raw, y
            loss = F.cross_entropy(model(data.prepare(raw_all)).masked_fill(~seen, float("-inf")), y_all)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
            for i in range(len(idx)):
                slot = count if count < MEMORY else int(torch.randint(count + 1, (1,), generator=g))
                if slot < MEMORY:
                    mem_x[slot], mem_y[slot] = raw[i], y[i]
                count += 1
        evaluate()
    evaluate()
    return time.perf_counter() - started


def step_costs(stream, strategy: str, first: int, last: int, batch: int) -> tuple[float, float, int]:
    """Median seconds between consecutive steps inside the first `first` and the last `last` experiences."""
    cfg = RunConfig(scenario="split-fashion-mnist", strategy=strategy, batch_size=batch, checkpoint_every=0,
                    threads=1, device="cpu")
    stamps: list[float] = []
    engine = Engine(cfg, stream=stream, on_step=lambda g, total, loss, acc: stamps.append(time.perf_counter()))
    engine.run()
    bounds = engine.boundaries  # global step at each experience's end
    starts = [0, *bounds[:-1]]

    def gaps(experiences) -> list[float]:
        out = []
        for k in experiences:
            out += [stamps[s] - stamps[s - 1] for s in range(starts[k] + 1, bounds[k])]
        return out

    n = len(bounds)
    return statistics.median(gaps(range(first))), statistics.median(gaps(range(n - last, n))), n


def main() -> None:
    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist")
    engine_times, bare_times = [], []
    for _ in range(REPEATS):
        engine_times.append(engine_run(data))
        bare_times.append(bare_run(data))
    e, b = statistics.median(engine_times), statistics.median(bare_times)
    steps = 5 * PER_SEGMENT // B
    print(f"(a) online ER, batch {B}, {steps} incoming batches: engine {e:.2f} s, bare loop {b:.2f} s, "
          f"ratio {e / b:.2f} ({1e3 * (e - b) / steps:+.3f} ms per step)")
    first, last, n = step_costs(scole(data, 500, samples=100), "naive", 50, 50, 32)
    print(f"(b) SCoLe, {n} tasks, naive: per-step {1e3 * first:.3f} ms (first 50) vs {1e3 * last:.3f} ms "
          f"(last 50), ratio {last / first:.2f}")
    first, last, n = step_costs(scole(data, 50, samples=1000), "er", 5, 5, 32)
    print(f"(b) SCoLe, {n} experiences, ER: per-step {1e3 * first:.3f} ms (first 5) vs {1e3 * last:.3f} ms "
          f"(last 5), ratio {last / first:.2f}")


if __name__ == "__main__":
    main()
