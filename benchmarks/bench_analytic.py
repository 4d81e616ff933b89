"""Analytic learning benchmark (one command, one thread, synthetic frozen features).

  python benchmarks/bench_analytic.py [--buffer 1024 --dim 256 --n-per-exp 2000 --repeats 5]

Prints, as medians of alternating repeats measured in this run:
  1. closed-form absorption of one experience by ACIL vs one SGD epoch of a linear head on the same features;
  2. an ACU unlearning request (a few samples, and a whole class) vs retraining ACIL from scratch on the
     retained data: time and peak extra resident memory (Linux VmHWM, reset via /proc/self/clear_refs; the
     script re-executes itself with MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave the resident set and
     each measurement starts from the live memory only).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lifelong.analytic.acil import ACIL  # noqa: E402
from lifelong.analytic.base import human_bytes  # noqa: E402


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def peak_extra_memory(fn) -> tuple[float, int | None]:
    """(seconds, peak resident bytes above the level before the call) of fn()."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter
        base = _status("VmRSS")
    except OSError:
        base = None
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return dt, (_status("VmHWM") - base) if base is not None else None


def clone(m: ACIL) -> ACIL:
    return ACIL.from_state_dict({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in m.state_dict().items()})


def sgd_epoch(x: torch.Tensor, y: torch.Tensor, classes: int, batch: int) -> None:
    head = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    order = torch.randperm(len(y))
    for s in range(0, len(y), batch):
        i = order[s : s + batch]
        loss = torch.nn.functional.cross_entropy(head(x[i]), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=256, help="frozen feature dimension")
    p.add_argument("--buffer", type=int, default=1024, help="ACIL buffer size d_B")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--experiences", type=int, default=5)
    p.add_argument("--n-per-exp", type=int, default=2000)
    p.add_argument("--forget", type=int, default=100, help="samples in the unlearning request")
    p.add_argument("--batch", type=int, default=64, help="SGD batch size")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n = a.experiences * a.n_per_exp
    y = torch.arange(n) % a.classes
    centers = torch.randn(a.classes, a.dim)
    x = centers[y] + torch.randn(n, a.dim)  # float32 frozen features
    exp_of = (torch.arange(n) * a.experiences) // n
    ids = torch.arange(n)
    print(
        f"features {n} x {a.dim}, buffer {a.buffer}, {a.experiences} experiences of {a.n_per_exp}, "
        f"{a.classes} classes, torch {torch.__version__}, 1 thread, {a.repeats} alternating repeats"
    )

    # 1. absorb one experience vs one SGD epoch on the same features
    first = exp_of == 0
    base = ACIL(a.dim, buffer_size=a.buffer).fit_increment(x[first], y[first], ids[first])
    nxt = exp_of == 1
    xe, ye, ie = x[nxt], y[nxt], ids[nxt]
    xb = base.expand(xe).float()  # the buffer features ACIL's ridge classifier sees
    t_abs, t_sgd, t_sgdb = [], [], []
    for _ in range(a.repeats):
        m = clone(base)
        t0 = time.perf_counter()
        m.fit_increment(xe, ye, ie)
        t_abs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sgd_epoch(xe, ye, a.classes, a.batch)
        t_sgd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sgd_epoch(xb, ye, a.classes, a.batch)
        t_sgdb.append(time.perf_counter() - t0)
    ma, ms, mb = (statistics.median(t) for t in (t_abs, t_sgd, t_sgdb))
    print(f"\n[absorb] ACIL closed-form absorb of one experience ({len(ye)} samples): {ma * 1e3:.1f} ms")
    print(f"[absorb] one SGD epoch, linear head, batch {a.batch}, same {a.dim}-d features: {ms * 1e3:.1f} ms")
    print(f"[absorb] one SGD epoch, linear head on the {a.buffer}-d buffer features:   {mb * 1e3:.1f} ms")
    print(f"[absorb] ratio absorb / SGD epoch = {ma / ms:.2f} (frozen features), {ma / mb:.2f} (buffer features)")

    # 2. unlearning request vs retraining from scratch on the retained data
    full = ACIL(a.dim, buffer_size=a.buffer).fit_increment(x, y, ids)
    print(f"\nmodel state (R, W, buffer): {human_bytes(full.state_nbytes)}")
    g = torch.Generator().manual_seed(1)
    forget = torch.randperm(n, generator=g)[: a.forget]
    requests = {
        f"{a.forget} samples": forget,
        f"class 0 ({int((y == 0).sum())} samples)": (y == 0).nonzero().flatten(),
    }
    for name, S in requests.items():
        keep = torch.ones(n, dtype=torch.bool)
        keep[S] = False
        t_un, t_re, mem_un, mem_re = [], [], [], []
        for _ in range(a.repeats):
            m = clone(full)
            dt, mem = peak_extra_memory(lambda m=m, S=S: m.unlearn(x[S], y[S], ids[S]))
            t_un.append(dt)
            mem_un.append(mem)
            unlearned = m
            holder = {}

            def retrain(keep=keep, holder=holder):
                holder["m"] = ACIL(a.dim, buffer_size=a.buffer).fit_increment(x[keep], y[keep], ids[keep])

            dt, mem = peak_extra_memory(retrain)
            t_re.append(dt)
            mem_re.append(mem)
        err = float((unlearned.W - holder["m"].W).norm() / holder["m"].W.norm())
        mu, mr = statistics.median(t_un), statistics.median(t_re)
        print(
            f"\n[unlearn {name}] unlearn {mu * 1e3:.1f} ms vs retrain on {int(keep.sum())} retained "
            f"samples {mr * 1e3:.1f} ms: ratio {mu / mr:.3f} (speed-up x{mr / mu:.1f}); "
            f"rel. diff of W {err:.1e}"
        )
        if None not in mem_un + mem_re:
            pu, pr = statistics.median(mem_un), statistics.median(mem_re)
            print(
                f"[unlearn {name}] peak extra memory: unlearn {human_bytes(pu)} vs retrain "
                f"{human_bytes(pr)} (ratio {pu / max(pr, 1):.2f}); data needed: "
                f"{human_bytes(len(S) * a.dim * 4)} (forgotten samples) vs "
                f"{human_bytes(int(keep.sum()) * a.dim * 4)} (all retained samples)"
            )


if __name__ == "__main__":
    main()
