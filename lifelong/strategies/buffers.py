"""Replay buffers holding samples in their compact stored form (uint8 images stay uint8).

ReservoirBuffer keeps a uniform sample of everything offered (Vitter's algorithm R); ClassBalancedBuffer
keeps classes equally represented (CBRS, Chrysakis & Moens 2020). Optional per-sample extras (DER++'s
logits) are stored beside the inputs. Decisions use a seeded Python RNG: per-sample choices on small
batches cost far less as plain arithmetic than as tensor operations, and its state is checkpointed.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import Tensor

from lifelong.errors import LifelongError


class ReservoirBuffer:
    """A fixed-capacity uniform sample of a stream of (raw input, label, extras...)."""

    def __init__(self, capacity: int, seed: int) -> None:
        if capacity < 1:
            raise LifelongError(f"buffer_size={capacity} is out of range: allowed [1, inf]")
        self.capacity = capacity
        self.rng = random.Random(seed)
        self.seen = 0
        self.size = 0
        self.store: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self.size

    def slots_for(self, labels: list[int]) -> list[int]:
        """Slot per offered sample (-1: not kept), offered one by one (algorithm R)."""
        slots = []
        for i in range(len(labels)):
            count = self.seen + i
            slot = count if count < self.capacity else self.rng.randrange(count + 1)
            slots.append(slot if slot < self.capacity else -1)
        return slots

    def add(self, **items: Tensor) -> None:
        """Offer a batch of samples; all tensors share the first dimension; `y` holds the labels."""
        n = len(items["y"])
        if not self.store:
            self.store = {k: v.new_zeros((self.capacity, *v.shape[1:])) for k, v in items.items()}
        chosen: dict[int, int] = {}
        for i, slot in enumerate(self.slots_for(items["y"].tolist())):
            if slot >= 0:
                chosen[slot] = i  # a later sample drawing the same slot overwrites, as if offered one by one
        self.seen += n
        self.size = min(self.capacity, self.size + sum(1 for s in chosen if s >= self.size))
        if chosen:
            device = items["y"].device
            dest = torch.tensor(list(chosen), device=device)
            src = torch.tensor(list(chosen.values()), device=device)
            for k, v in items.items():
                self.store[k][dest] = v[src]

    def sample(self, k: int) -> dict[str, Tensor]:
        """k stored samples drawn uniformly without replacement (fewer if the buffer holds fewer)."""
        pick = torch.tensor(self.rng.sample(range(self.size), min(k, self.size)),
                            device=self.store["y"].device)
        return {name: v[pick] for name, v in self.store.items()}

    def nbytes(self) -> int:
        return sum(v.element_size() * v.nelement() for v in self.store.values())

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "size": self.size, "store": self.store, "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.size, self.store = state["seen"], state["size"], state["store"]
        self.rng.setstate(state["rng"])


class ClassBalancedBuffer(ReservoirBuffer):
    """Class-balanced reservoir (CBRS): when full, a sample of a class that is not among the largest evicts
    a random sample of a largest class; a sample of a largest class replaces a random one of its own class
    with probability (stored of that class) / (seen of that class)."""

    def __init__(self, capacity: int, seed: int) -> None:
        super().__init__(capacity, seed)
        self.class_seen: dict[int, int] = {}
        self.slot_class: list[int] = []

    def slots_for(self, labels: list[int]) -> list[int]:
        stored = self.slot_class
        slots = []
        for c in labels:
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
                victim = self.rng.choice(sorted(k for k, v in counts.items() if v == largest))
            elif self.rng.random() < counts[c] / self.class_seen[c]:
                victim = c
            else:
                slots.append(-1)
                continue
            slot = self.rng.choice([i for i, s in enumerate(stored) if s == victim])
            stored[slot] = c
            slots.append(slot)
        return slots

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "class_seen": dict(self.class_seen), "slot_class": list(self.slot_class)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.class_seen = dict(state["class_seen"])
        self.slot_class = list(state["slot_class"])


BUFFERS = {"reservoir": ReservoirBuffer, "class-balanced": ClassBalancedBuffer}


def make_buffer(kind: str, capacity: int, seed: int) -> ReservoirBuffer:
    return BUFFERS[kind](capacity, seed)
