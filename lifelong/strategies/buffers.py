"""Replay buffers holding samples in their compact stored form (uint8 images stay uint8).

ReservoirBuffer keeps a uniform sample of everything offered (Vitter's algorithm R), vectorised over a
batch; ClassBalancedBuffer keeps classes equally represented (CBRS, Chrysakis & Moens 2020).
Optional per-sample extras (e.g. DER++'s logits) are stored beside the inputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lifelong.errors import LifelongError


class ReservoirBuffer:
    """A fixed-capacity uniform sample of a stream of (raw input, label, extras...)."""

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        if capacity < 1:
            raise LifelongError(f"buffer_size={capacity} is out of range: allowed [1, inf]")
        self.capacity = capacity
        self.generator = generator
        self.seen = 0
        self.size = 0
        self.store: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self.size

    def allocate(self, items: dict[str, Tensor]) -> None:
        self.store = {k: v.new_zeros((self.capacity, *v.shape[1:])) for k, v in items.items()}

    def slots_for(self, n: int, labels: Tensor) -> Tensor:
        """Slot per offered sample (-1: not kept), with algorithm R's sequential semantics."""
        count = self.seen + torch.arange(n)
        draw = (torch.rand(n, generator=self.generator) * (count + 1)).long()
        slots = torch.where(count < self.capacity, count, draw)
        return torch.where(slots < self.capacity, slots, torch.full_like(slots, -1))

    def add(self, **items: Tensor) -> None:
        """Offer a batch of samples; all tensors share the first dimension."""
        n = len(next(iter(items.values())))
        if not self.store:
            self.allocate(items)
        slots = self.slots_for(n, items["y"])
        # When two samples of one batch draw the same slot, the later one wins, as if offered one by one.
        later = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
        overwritten = ((slots[:, None] == slots[None, :]) & later).any(1)
        keep = (slots >= 0) & ~overwritten
        dest = slots[keep].to(next(iter(self.store.values())).device)
        src = keep.to(dest.device)
        for k, v in items.items():
            self.store[k][dest] = v[src]
        self.seen += n
        self.size = min(self.capacity, self.seen)

    def sample(self, k: int) -> dict[str, Tensor]:
        """k stored samples drawn uniformly without replacement (fewer if the buffer holds fewer)."""
        pick = torch.randperm(self.size, generator=self.generator)[:k]
        pick = pick.to(next(iter(self.store.values())).device)
        return {name: v[pick] for name, v in self.store.items()}

    def nbytes(self) -> int:
        return sum(v.element_size() * v.nelement() for v in self.store.values())

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "size": self.size, "store": self.store}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.size, self.store = state["seen"], state["size"], state["store"]


class ClassBalancedBuffer(ReservoirBuffer):
    """Class-balanced reservoir (CBRS): when full, a new sample of a non-largest class evicts a random
    sample of the currently largest class; a sample of a largest class replaces one of its own class
    with probability (stored of that class) / (seen of that class)."""

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        super().__init__(capacity, generator)
        self.class_seen: dict[int, int] = {}

    def slots_for(self, n: int, labels: Tensor) -> Tensor:
        stored = self.store["y"][: self.size].tolist() if self.size else []
        slots = []
        for c in labels.tolist():
            self.class_seen[c] = self.class_seen.get(c, 0) + 1
            if len(stored) < self.capacity:
                slots.append(len(stored))
                stored.append(c)
                continue
            counts: dict[int, int] = {}
            for s in stored:
                counts[s] = counts.get(s, 0) + 1
            largest = max(counts.values())
            if counts.get(c, 0) < largest:
                big = [k for k, v in counts.items() if v == largest]
                victim_class = big[int(torch.randint(len(big), (1,), generator=self.generator))]
                where = [i for i, s in enumerate(stored) if s == victim_class]
            else:
                if torch.rand(1, generator=self.generator).item() >= counts[c] / self.class_seen[c]:
                    slots.append(-1)
                    continue
                where = [i for i, s in enumerate(stored) if s == c]
            slot = where[int(torch.randint(len(where), (1,), generator=self.generator))]
            stored[slot] = c
            slots.append(slot)
        return torch.tensor(slots, dtype=torch.long)

    def add(self, **items: Tensor) -> None:
        super().add(**items)
        self.size = min(self.capacity, self.seen)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "class_seen": dict(self.class_seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.class_seen = dict(state["class_seen"])


BUFFERS = {"reservoir": ReservoirBuffer, "class-balanced": ClassBalancedBuffer}


def make_buffer(kind: str, capacity: int, generator: torch.Generator) -> ReservoirBuffer:
    return BUFFERS[kind](capacity, generator)
