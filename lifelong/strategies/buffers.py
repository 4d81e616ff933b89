"""Replay buffers holding samples in their compact stored form (uint8 images stay uint8).

ReservoirBuffer keeps a uniform sample of everything offered (Vitter's algorithm R); ClassBalancedBuffer
keeps classes equally represented (CBRS, Chrysakis & Moens 2020). Optional per-sample extras (DER++'s
logits) are stored beside the inputs. Decisions use a seeded Python RNG: per-sample choices on small
batches cost far less as plain arithmetic than as tensor operations, and its state is checkpointed. The
slots chosen for a batch are then written with one index write per stored tensor; no decision costs time
proportional to the capacity (benchmarks/bench_buffers.py times both buffers).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lifelong.errors import LifelongError


def index_tensor(values: list[int], device: torch.device) -> Tensor:
    """`values` as a long tensor on `device`. To a GPU through pinned memory without blocking: a tensor made
    from a Python list directly on a GPU is a blocking copy, after which torch waits for every kernel queued
    before it, so each replay step would stall the host. (The GPU branch is not yet measured on a GPU.)"""
    index = torch.tensor(values, dtype=torch.long)
    if device.type == "cuda":
        return index.pin_memory().to(device, non_blocking=True)
    return index.to(device)


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

    def slots_for(self, labels: Sequence[int] | Tensor) -> list[int]:
        """Slot per offered sample (-1: not kept), offered one by one (algorithm R). Only the count of `labels`
        is used: a tensor of labels on a GPU is never read back to the host."""
        n = len(labels)
        free = max(0, min(n, self.capacity - self.seen))  # while not full: the next slots, no random draw
        slots = list(range(self.seen, self.seen + free))
        for count in range(self.seen + free, self.seen + n):
            slot = self.rng.randrange(count + 1)
            slots.append(slot if slot < self.capacity else -1)
        return slots

    def add(self, **items: Tensor) -> None:
        """Offer a batch of samples; all tensors share the first dimension; `y` holds the labels."""
        n = len(items["y"])
        if not self.store:
            self.store = {k: v.new_zeros((self.capacity, *v.shape[1:])) for k, v in items.items()}
        chosen: dict[int, int] = {}
        for i, slot in enumerate(self.slots_for(items["y"])):
            if slot >= 0:
                chosen[slot] = i  # a later sample drawing the same slot overwrites, as if offered one by one
        self.seen += n
        self.size = min(self.capacity, self.size + sum(1 for s in chosen if s >= self.size))
        if chosen:
            device = items["y"].device
            dest, src = index_tensor(list(chosen), device), index_tensor(list(chosen.values()), device)
            for k, v in items.items():
                self.store[k][dest] = v[src]

    def draw(self, k: int) -> list[int]:
        """Slots of k stored samples drawn uniformly without replacement (fewer if the buffer holds fewer)."""
        return self.rng.sample(range(self.size), min(k, self.size))

    def take(self, slots: list[int]) -> dict[str, Tensor]:
        """The stored tensors at `slots`, one gather per stored tensor (several draws can share one)."""
        pick = index_tensor(slots, self.store["y"].device)
        return {name: v.index_select(0, pick) for name, v in self.store.items()}

    def sample(self, k: int) -> dict[str, Tensor]:
        """k stored samples drawn uniformly without replacement (fewer if the buffer holds fewer)."""
        return self.take(self.draw(k))

    def nbytes(self) -> int:
        return sum(v.element_size() * v.nelement() for v in self.store.values())

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "size": self.size, "store": self.store, "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.size, self.store = state["seen"], state["size"], state["store"]
        self.rng.setstate(state["rng"])


class ClassBalancedBuffer(ReservoirBuffer):
    """Class-balancing reservoir sampling (CBRS; Chrysakis & Moens 2020, Algorithm 1).

    While the memory is not filled every sample is stored. Afterwards a class is *largest* when no class has
    more stored samples, and *full* once it has been a largest class at some step since the memory filled
    (the flag is never cleared; counting the filling steps too would mark the first class offered full at
    once, and it could then never grow past what it held when the memory filled). A sample of a class that
    is not full overwrites a stored sample drawn uniformly from all the samples of the largest class(es); a
    sample of a full class c replaces a random stored sample of c with probability m_c / n_c (m_c stored,
    n_c seen of c, this one included) and is dropped otherwise. As in the paper, a full class may stay below
    the largest: it is not refilled by evictions, only the classes that never reached the top are.

    Cost per offered sample: O(1) for a full class, O(classes) for one that is not; never O(capacity). Each
    class keeps the list of its slots (swap-remove on eviction), so a victim is one index into a list.
    """

    def __init__(self, capacity: int, seed: int) -> None:
        super().__init__(capacity, seed)
        self.class_seen: dict[int, int] = {}
        self.full: set[int] = set()
        self.slot_class: list[int] = []  # class stored in each used slot
        self.position: list[int] = []  # index of each used slot in its class's slot list
        self.class_slots: dict[int, list[int]] = {}  # slots of each stored class (no empty lists)

    def _assign(self, slot: int, c: int) -> None:
        """Record that `slot` (the next free one, or a used one being overwritten) now holds class `c`."""
        if slot == len(self.slot_class):
            self.slot_class.append(c)
            self.position.append(0)
        else:
            old = self.class_slots[self.slot_class[slot]]
            last = old.pop()
            if last != slot:
                old[self.position[slot]] = last
                self.position[last] = self.position[slot]
            if not old:
                del self.class_slots[self.slot_class[slot]]
            self.slot_class[slot] = c
        mine = self.class_slots.setdefault(c, [])
        self.position[slot] = len(mine)
        mine.append(slot)

    def _largest(self) -> tuple[list[int], int]:
        """The largest classes (sorted) and their stored count."""
        top = max(len(s) for s in self.class_slots.values())
        return sorted(c for c, s in self.class_slots.items() if len(s) == top), top

    def slots_for(self, labels: Sequence[int] | Tensor) -> list[int]:
        slots = []
        for c in labels.tolist() if isinstance(labels, Tensor) else labels:
            n_c = self.class_seen[c] = self.class_seen.get(c, 0) + 1
            used = len(self.slot_class)
            if used < self.capacity:
                self._assign(used, c)
                if used + 1 == self.capacity:
                    self.full.update(self._largest()[0])
                slots.append(used)
            elif c not in self.full:
                largest, top = self._largest()
                r = self.rng.randrange(len(largest) * top)  # uniform over every instance of the largest classes
                slot = self.class_slots[largest[r // top]][r % top]
                self._assign(slot, c)
                if len(self.class_slots[c]) == top:  # c joins (or, alone, becomes) the largest
                    self.full.add(c)
                elif len(largest) == 1:  # the one largest class lost a sample: the top is now one lower
                    self.full.update(k for k, v in self.class_slots.items() if len(v) == top - 1)
                slots.append(slot)
            else:
                mine = self.class_slots.get(c, [])
                if self.rng.random() < len(mine) / n_c:
                    slots.append(mine[self.rng.randrange(len(mine))])
                else:
                    slots.append(-1)
        return slots

    def state_dict(self) -> dict[str, Any]:
        order = [s for slots in self.class_slots.values() for s in slots]
        return {**super().state_dict(), "class_seen": dict(self.class_seen), "full": sorted(self.full),
                "slot_class": torch.tensor(self.slot_class, dtype=torch.long),
                "class_order": torch.tensor(order, dtype=torch.long)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.class_seen = dict(state["class_seen"])
        self.slot_class = torch.as_tensor(state["slot_class"], dtype=torch.long).tolist()
        self.position = [0] * len(self.slot_class)
        self.class_slots = {}
        for slot in torch.as_tensor(state.get("class_order", range(len(self.slot_class))), dtype=torch.long).tolist():
            mine = self.class_slots.setdefault(self.slot_class[slot], [])
            self.position[slot] = len(mine)
            mine.append(slot)
        if "full" in state:
            self.full = set(state["full"])
        else:  # a checkpoint of the former rule, which kept no flags: the largest classes are full
            self.full = set(self._largest()[0]) if len(self.slot_class) == self.capacity else set()


BUFFERS = {"reservoir": ReservoirBuffer, "class-balanced": ClassBalancedBuffer}


def make_buffer(kind: str, capacity: int, seed: int) -> ReservoirBuffer:
    """A buffer of the named policy ("reservoir" or "class-balanced")."""
    if kind not in BUFFERS:
        raise LifelongError(f"buffer={kind!r} is not a memory policy: choose from {', '.join(BUFFERS)}")
    return BUFFERS[kind](capacity, seed)
