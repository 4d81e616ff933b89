"""Shared pieces of the analytic (closed-form) learners: input checks, sample ledger, memory checks."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from lifelong.errors import LifelongError
from lifelong.params import resolve

DTYPE = torch.float64


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo, else total physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1 << 62


def check_square_state_fits(name: str, size: int, matrices: int, available: int | None = None) -> None:
    """Refuse a `size` x `size` float64 state (times `matrices` incl. update temporaries) that cannot fit."""
    need = matrices * size * size * 8
    avail = available_memory_bytes() if available is None else available
    if need > avail:
        raise LifelongError(
            f"{name}={size} needs {human_bytes(need)} of memory ({matrices} float64 {size}x{size} matrices: "
            f"state + update temporaries) but only {human_bytes(avail)} is available; lower {name}"
        )


def as_features(features: Any, dim: int | None, what: str = "features") -> torch.Tensor:
    """A 2-D float64 tensor; a wrong feature dimension is a user error."""
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if x.dim() == 1 and dim is not None and x.numel() == dim:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise LifelongError(f"{what} must be a 2-D array (samples x dimension), got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise LifelongError(f"{what} have dimension {x.shape[1]} but this model was built for dimension {dim}")
    x = x.detach().to("cpu", DTYPE)
    if not torch.isfinite(x).all():
        raise LifelongError(f"{what} contain NaN or infinite values")
    return x


def as_labels(labels: Any, n: int) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).reshape(-1)
    if y.numel() != n:
        raise LifelongError(f"got {y.numel()} labels for {n} samples")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise LifelongError("labels must be integers (class indices)")
    y = y.detach().to("cpu", torch.int64)
    if n and int(y.min()) < 0:
        raise LifelongError(f"labels must be non-negative class indices, got {int(y.min())}")
    return y


def row_digests(x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """A short content hash of each (float64 feature row, label): identifies a sample without storing it."""
    arr = np.ascontiguousarray(x.numpy())
    labels = y.tolist()
    return [
        hashlib.blake2b(arr[i].tobytes() + labels[i].to_bytes(8, "little"), digest_size=10).hexdigest()
        for i in range(arr.shape[0])
    ]


def _key(v: Any) -> Hashable:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (int, str)):
        return v
    raise LifelongError(f"sample ids must be integers or strings, got {type(v).__name__}")


class SampleLedger:
    """What a model has learned: sample id -> (label, content digest, times absorbed).

    Unlearning asks the ledger first, so samples the model never learned (or learned with other features or
    another label) are refused before any state changes. Without explicit ids the content digest is the id.
    """

    def __init__(self) -> None:
        self.entries: dict[Hashable, list] = {}  # id -> [label, digest, count]
        self.class_counts: Counter[int] = Counter()

    def __len__(self) -> int:
        return sum(self.class_counts.values())

    def keys_for(self, x: torch.Tensor, y: torch.Tensor, sample_ids: Sequence | None) -> tuple[list, list]:
        digests = row_digests(x, y)
        if sample_ids is None:
            return list(digests), digests
        ids = [_key(v) for v in (sample_ids.tolist() if hasattr(sample_ids, "tolist") else sample_ids)]
        if len(ids) != len(digests):
            raise LifelongError(f"got {len(ids)} sample ids for {len(digests)} samples")
        return ids, digests

    def check_add(self, ids: list, labels: list[int], digests: list[str]) -> None:
        """Refuse an id already learned, or given earlier in the same call, with other features or label (the
        ledger keeps one digest per id: the other sample could never be unlearned exactly)."""
        batch: dict[Hashable, tuple[int, str]] = {}
        for k, lab, dig in zip(ids, labels, digests, strict=True):
            e = self.entries.get(k)
            first = batch.setdefault(k, (lab, dig))
            if (e is not None and (e[0] != lab or e[1] != dig)) or first != (lab, dig):
                where = "was already learned" if e is not None and (e[0], e[1]) != (lab, dig) else \
                    "is given twice in this call"
                raise LifelongError(f"sample id {k!r} {where} with other features or label; ids must be unique")

    def add(self, ids: list, labels: list[int], digests: list[str]) -> None:
        for k, lab, dig in zip(ids, labels, digests, strict=True):
            e = self.entries.get(k)
            if e is None:
                self.entries[k] = [lab, dig, 1]
            else:
                e[2] += 1
            self.class_counts[lab] += 1

    def check_remove(self, ids: list, labels: list[int], digests: list[str]) -> None:
        """Raise (changing nothing) unless every given sample was learned, with these features and label."""
        wanted = Counter(ids)
        missing = [k for k in wanted if k not in self.entries]
        if missing:
            raise LifelongError(
                f"{len(missing)} of the {len(wanted)} given samples are not learned by this model "
                f"(never learned or already unlearned; "
                f"first: {missing[0]!r}); nothing was changed"
            )
        for k, lab, dig in zip(ids, labels, digests, strict=True):
            e = self.entries[k]
            if e[0] != lab:
                raise LifelongError(f"sample {k!r} was learned with label {e[0]}, not {lab}; nothing was changed")
            if e[1] != dig:
                raise LifelongError(
                    f"sample {k!r} was learned with different features than the ones given "
                    "(another feature extractor?); nothing was changed"
                )
        over = [k for k, c in wanted.items() if c > self.entries[k][2]]
        if over:
            raise LifelongError(
                f"sample {over[0]!r} is given {wanted[over[0]]} times but was learned "
                f"{self.entries[over[0]][2]} times; nothing was changed"
            )

    def remove(self, ids: list) -> None:
        for k in ids:
            e = self.entries[k]
            e[2] -= 1
            self.class_counts[e[0]] -= 1
            if e[2] == 0:
                del self.entries[k]
            if self.class_counts[e[0]] == 0:
                del self.class_counts[e[0]]

    def ids_of_classes(self, classes: Sequence[int]) -> dict[int, int]:
        return {c: self.class_counts.get(c, 0) for c in classes}

    def state_dict(self) -> dict:
        keys = list(self.entries)
        return {
            "ids": keys,
            "labels": torch.tensor([self.entries[k][0] for k in keys], dtype=torch.int64),
            "digests": [self.entries[k][1] for k in keys],
            "counts": torch.tensor([self.entries[k][2] for k in keys], dtype=torch.int64),
        }

    @classmethod
    def from_state_dict(cls, s: dict) -> SampleLedger:
        led = cls()
        for k, lab, dig, cnt in zip(s["ids"], s["labels"].tolist(), s["digests"], s["counts"].tolist(), strict=True):
            led.entries[k] = [lab, dig, cnt]
            led.class_counts[lab] += cnt
        return led


class AnalyticModel:
    """Common interface: fit_increment / predict / decision_function / unlearn / state_dict."""

    kind = "analytic"
    supports_unlearning = True
    PARAMS: dict = {}

    in_features: int
    ledger: SampleLedger

    def configure(self, in_features: int, params: dict[str, Any]) -> None:
        """Check and store the hyperparameters and the feature dimension (shared by every constructor)."""
        self.params = resolve(self.PARAMS, params, self.kind)
        if int(in_features) < 1:
            raise LifelongError(f"in_features must be >= 1, got {in_features}")
        self.in_features = int(in_features)

    def state_header(self) -> dict[str, Any]:
        """The fields every saved analytic model starts with."""
        return {"kind": self.kind, "format": 1, "in_features": self.in_features, "params": dict(self.params)}

    def begin_phase(self) -> AnalyticModel:
        """Mark the start of a phase (experience); its data may then come in several `fit_increment` calls.

        A no-op for learners whose result does not depend on the phase split (NMC, ACIL, G-ACIL); DS-AL
        overrides it. Lets callers feed every analytic learner the same way.
        """
        return self

    def end_phase(self) -> AnalyticModel:
        """Mark the end of the current phase (no-op unless the learner is phase-dependent)."""
        return self

    @property
    def classes_(self) -> list[int]:
        """Classes with at least one learned (and not unlearned) sample."""
        return sorted(self.ledger.class_counts)

    def predict(self, features: Any) -> torch.Tensor:
        scores = self.decision_function(features)
        if scores.shape[1] == 0:
            raise LifelongError("the model has not learned any class yet")
        return scores.argmax(1)

    def _mask_unlearned(self, scores: torch.Tensor) -> torch.Tensor:
        active = torch.zeros(scores.shape[1], dtype=torch.bool)
        for c in self.ledger.class_counts:
            if c < scores.shape[1]:
                active[c] = True
        return scores.masked_fill(~active, float("-inf"))

    def select_class_samples(
        self, classes: Sequence[int], features: Any, labels: Any, sample_ids: Sequence | None = None
    ):
        """Rows of (features, labels, ids) of `classes`, checked to cover all their learned samples."""
        x = as_features(features, self.in_features)
        y = as_labels(labels, x.shape[0])
        classes = [int(c) for c in classes]
        never = [c for c in classes if self.ledger.class_counts.get(c, 0) == 0]
        if never:
            raise LifelongError(
                f"class {never[0]} is not learned by this model (never learned or already unlearned; learned classes: "
                f"{','.join(map(str, self.classes_)) or 'none'}); nothing was changed"
            )
        mask = torch.zeros_like(y, dtype=torch.bool)
        for c in classes:
            mask |= y == c
        ids = None
        if sample_ids is not None:
            all_ids = list(sample_ids.tolist() if hasattr(sample_ids, "tolist") else sample_ids)
            ids = [all_ids[i] for i in mask.nonzero().flatten().tolist()]
        xs, ys = x[mask], y[mask]
        keys, _ = self.ledger.keys_for(xs, ys, ids)
        learned = [k for k in dict.fromkeys(keys) if k in self.ledger.entries]
        # repeat each learned sample as many times as it was absorbed
        found = Counter()
        for k in learned:
            found[self.ledger.entries[k][0]] += self.ledger.entries[k][2]
        for c in classes:
            if found[c] != self.ledger.class_counts[c]:
                raise LifelongError(
                    f"class {c}: the given data holds {found[c]} of its {self.ledger.class_counts[c]} "
                    "learned "
                    "samples; exact class unlearning needs all of them; nothing was changed"
                )
        rows, out_ids = [], []
        pos = {k: i for i, k in enumerate(keys)}
        for k in learned:
            rows += [pos[k]] * self.ledger.entries[k][2]
            out_ids += [k] * self.ledger.entries[k][2]
        idx = torch.tensor(rows, dtype=torch.int64)
        return xs[idx], ys[idx], out_ids

    def unlearn_classes(self, classes: Sequence[int], features: Any, labels: Any, sample_ids: Sequence | None = None):
        """Forget every learned sample of `classes`; the data must contain all of them (others ignored)."""
        if not self.supports_unlearning:
            raise LifelongError(f"{self.kind} does not support exact unlearning")
        xs, ys, ids = self.select_class_samples(classes, features, labels, sample_ids)
        return self.unlearn(xs, ys, ids)
