"""Time one `add()` of 32 samples to a full replay buffer: reservoir vs class-balanced (CBRS), one thread.

Each buffer is first filled to capacity; then the timed adds offer a class-incremental stream of 28x28 uint8
images (two new classes every 20 steps, 50 classes in all by default), so CBRS runs both its branches (a class that is
not yet full evicts from the largest, a full class replaces within itself). Repeats alternate the two buffers
(reservoir, class-balanced, reservoir, ...) so both see the same machine load; prints medians.
    OMP_NUM_THREADS=1 python benchmarks/bench_buffers.py [--repeats 7] [--steps 200] [--classes 50] [--impl PATH]
`--impl` times another copy of lifelong/strategies/buffers.py (e.g. an older version) instead of the installed one.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from types import ModuleType

import torch

BATCH = 32


def load_impl(path: str | None) -> ModuleType:
    if path is None:
        from lifelong.strategies import buffers
        return buffers
    spec = importlib.util.spec_from_file_location("buffers_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stream(steps: int, offset: int, classes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` batches of (uint8 image, label): two classes per 20 steps, cycling through `classes` classes."""
    g = torch.Generator().manual_seed(offset)
    out = []
    for t in range(offset, offset + steps):
        pair = (t // 20) % (classes // 2)
        y = 2 * pair + torch.randint(2, (BATCH,), generator=g)
        out.append((torch.randint(256, (BATCH, 1, 28, 28), dtype=torch.uint8, generator=g), y))
    return out


def time_adds(cls: type, capacity: int, steps: int, classes: int, seed: int) -> float:
    """Milliseconds per add() of one batch, on a buffer already filled to capacity."""
    buf = cls(capacity, seed=seed)
    warm = stream(capacity // BATCH + 1, 0, classes)
    for raw, y in warm:
        buf.add(raw=raw, y=y)
    batches = stream(steps, len(warm), classes)
    t = time.perf_counter()
    for raw, y in batches:
        buf.add(raw=raw, y=y)
    return (time.perf_counter() - t) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--capacities", type=int, nargs="+", default=[500, 5000])
    ap.add_argument("--classes", type=int, default=50, help="classes in the stream (an even number)")
    ap.add_argument("--impl", default=None, help="path of a buffers.py to time instead of the installed one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    impl = load_impl(args.impl)
    kinds = {"reservoir": impl.ReservoirBuffer, "class-balanced": impl.ClassBalancedBuffer}
    print(f"ms per add() of {BATCH} samples to a full buffer, median of {args.repeats} "
          f"(each {args.steps} adds, {args.classes} classes), {torch.get_num_threads()} thread")
    print(f"{'capacity':>9} {'reservoir':>10} {'class-bal.':>10} {'ratio':>7}")
    for capacity in args.capacities:
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(args.repeats):
            for name, cls in kinds.items():
                times[name].append(time_adds(cls, capacity, args.steps, args.classes, seed=r))
        res, cb = (statistics.median(times[k]) for k in kinds)
        print(f"{capacity:>9} {res:>10.3f} {cb:>10.3f} {cb / res:>7.1f}")


if __name__ == "__main__":
    main()
