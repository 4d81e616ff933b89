"""Frozen feature pipeline: any nn.Module as extractor, features computed once and cached on disk.

The cache key is a hash of the extractor (class + every parameter/buffer) and of the data, so a sweep over
analytic methods or hyperparameters re-uses features, and a changed backbone never gets stale ones.
The base phase of ACIL-style learners (backprop on the first experiences, then frozen) is the engine's own SGD
steps: see `base_experiences` in lifelong/strategies/analytic.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lifelong.data.download import derived_cache_dir
from lifelong.errors import LifelongError
from lifelong.tracking.files import save_torch_atomic


def default_cache_dir() -> Path:
    return derived_cache_dir("features")


def tensor_hash(t: torch.Tensor) -> str:
    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256(b"texts|")
    for s in texts:
        h.update(s.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def module_hash(module: nn.Module) -> str:
    """Hash of a module's class and every tensor of its state dict (weights and buffers)."""
    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}|".encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor_hash(t).encode())
    return h.hexdigest()


class FeatureCache:
    """Directory of `<key>.pt` feature tensors; `hits`/`misses` count lookups of this instance."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        p = self.path(key)
        if p.exists():
            try:
                out = torch.load(p, weights_only=True)
                self.hits += 1
                return out
            except Exception:  # corrupt file: recompute below
                pass
        self.misses += 1
        out = compute()
        try:
            save_torch_atomic(out, p)
        except OSError:  # read-only cache dir: still return the features
            pass
        return out


@torch.no_grad()
def _run(extractor: nn.Module | Callable, data: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    if isinstance(extractor, nn.Module):
        was = extractor.training
        extractor.eval()
    outs = []
    for s in range(0, len(data), batch_size):
        xb = data[s : s + batch_size].to(device)
        if xb.dtype == torch.uint8:
            xb = xb.float() / 255.0
        outs.append(extractor(xb).reshape(len(xb), -1).float().cpu())
    if isinstance(extractor, nn.Module):
        extractor.train(was)
    return torch.cat(outs) if outs else torch.zeros(0, 0)


def extract_features(
    extractor: nn.Module,
    data: torch.Tensor,
    *,
    cache: FeatureCache | None = None,
    batch_size: int = 512,
    device: str = "cpu",
    extractor_key: str | None = None,
) -> torch.Tensor:
    """Features of `data` (uint8 scaled to [0, 1]) from the frozen `extractor`, cached by content."""
    if not isinstance(data, torch.Tensor):
        data = torch.as_tensor(np.asarray(data))
    if cache is None:
        return _run(extractor, data, batch_size, device)
    ek = extractor_key or module_hash(extractor)
    key = hashlib.sha256(f"{ek}|{tensor_hash(data)}".encode()).hexdigest()[:32]
    return cache.get_or_compute(key, lambda: _run(extractor, data, batch_size, device))


# --- features of a model inside a run (strategies and `lifelong unlearn` compute them the same way) ----------

FEATURE_SOURCES = ("backbone", "input")
FEATURE_CHUNK = 1024  # rows per forward pass; the same chunks at training and at unlearning give the same bits


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last `nn.Linear` (in registration order): the classification head of every built-in model."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not found:
        raise LifelongError(f"{type(model).__name__} has no nn.Linear layer to take features in front of")
    return found[-1]


@torch.no_grad()
def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last Linear layer for prepared inputs `x`: the model minus its head.

    Read with a forward pre-hook, so it works for any model whose head is its last registered Linear (MLP,
    CNN, ResNet: whatever the forward does before the head, e.g. pooling, is included)."""
    seen: list[torch.Tensor] = []
    handle = last_linear(model).register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[-1].reshape(len(x), -1)


@torch.no_grad()
def model_features(model: nn.Module, x: torch.Tensor, source: str) -> torch.Tensor:
    """Features of prepared inputs `x` (float32 on x's device): `backbone` = the model minus its last Linear
    layer, `input` = the flattened inputs themselves."""
    if source == "input":
        return x.reshape(len(x), -1).float()
    if source != "backbone":
        raise LifelongError(f"feature source {source!r} is unknown; valid: {', '.join(FEATURE_SOURCES)}")
    return penultimate(model, x).float()


def sample_ids(stream: Any, exp: Any, idx: torch.Tensor) -> list:
    """Ledger ids of training samples `idx` of `exp`: their dataset indices (ints) when every experience of
    the stream indexes one dataset with disjoint samples and no input map (class splits), else
    "<experience>:<index>" strings (domain shifts show the same index once per experience)."""
    data = stream[0].data
    plain = all(e.data is data and e.input_map is None for e in stream)
    if plain:
        total = sum(len(e.train_idx) for e in stream)
        plain = len(torch.unique(torch.cat([e.train_idx.cpu() for e in stream]))) == total
    values = idx.cpu().tolist()
    return values if plain else [f"{exp.index}:{i}" for i in values]


@torch.no_grad()
def experience_features(model: nn.Module, stream: Any, exp: Any, prepare: Callable[[torch.Tensor], torch.Tensor],
                        source: str, chunk: int = FEATURE_CHUNK) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(features on the CPU, labels, ledger ids) of every training sample of `exp`, in `train_idx` order,
    computed `chunk` rows at a time with the model in eval mode (its mode is restored)."""
    was = model.training
    model.eval()
    try:
        idx = exp.train_idx
        parts = [model_features(model, prepare(exp.raw(idx[s:s + chunk])), source).cpu()
                 for s in range(0, len(idx), chunk)]
    finally:
        model.train(was)
    feats = torch.cat(parts) if parts else torch.zeros(0, 0)
    return feats, exp.labels(idx).cpu(), sample_ids(stream, exp, idx)
