"""OnPro, online prototype learning (Wei, Ye, Zhang, Jiang, Zhang, Lu, Zhang; ICCV 2023, "Online Prototype
Learning for Online Continual Learning"; specification: methods.md section 14.2; authors' code
weilllllls/OnPro, train.py, modules/OPE.py and modules/APF.py, read for this file).

    each step: new batch (x, y); memory batch (x_m, y_m) drawn from a reservoir; a second view of each
    (random augmentation); z = normalise(projection(h(.))) on the backbone features h
        L_ins = SupCon(z of x and its view) + SupCon(z of x_m and its view)       (instance-wise contrast)
        L_OPE = OPE(new batch's online prototypes) + OPE(memory batch's online prototypes), where the online
                prototype of class c in view v is the batch mean of z over class c, and
                OPE = mean over the 2K prototypes u of -log(exp(u.u+/t) / sum_{v != u} exp(u.v/t))
        APF: class means of the memory batch (mean of the two views' online prototypes); class pairs are picked
             with probability softmax(1/distance) (the closest, most confusable pairs most often) for a
             (1 - mixup_base_rate) part of the replayed rows, the rest is mixed with random partners;
             x_mix = (1 - lam) x_a + lam x_b
        L_CE = CE(f(augment(x))) in the first experience;
               (1 - lam) CE(f(x_mix), y_a) + lam CE(f(x_mix), y_b) afterwards (the new batch is learned through
               the memory, which holds it once it has been stored)
        L = L_CE + L_ins + L_OPE;  then the new batch is offered to the reservoir
    predict: the model's linear head (as the authors' `test_model`)

The library's default of one epoch per experience is the online protocol (each sample seen once); the
engine's batches (32) are larger than the paper's 10.

Deviations and choices:
- methods.md writes the OPE denominator over the other view only and sums over classes; the authors' `OPELoss`
  uses all 2K - 1 other prototypes of both views and averages, which is what is implemented;
- the rotation-based extra classes of OCM's instance loss (16 "oop" rotations) and its projection/feature
  cross term are left out: the instance loss here is SupCon on the projections of the two views
  (temperature `ins_temperature`), at a fraction of the cost;
- augmentation: random resized crop (scale 0.3-1) + horizontal flip by one affine resampling, no colour/grey
  jitter (grey images), drawn from a private checkpointed generator;
- APF's random-partner part draws lam uniformly in [mixup_lower, mixup_upper] with probability mixup_p
  (kornia's RandomMixUpV2 as configured by the authors); the confusable-pair part draws lam ~ Beta(alpha,
  alpha) with probability mixup_p; pairs are drawn with replacement from softmax(1/d) (the authors round the
  expected counts), and the rows of each class from the whole memory, as in the code;
- the memory is the library's reservoir of 500 samples (the paper uses 0.1k-5k);
- the projection head is a two-layer MLP (the authors': one linear layer), the instance loss on memory uses the
  unmixed batch (the authors': the APF-mixed one), 32 replayed rows (the authors': min(64, 7 x classes seen)),
  and the run's optimizer (the authors': Adam, lr 5e-4, weight decay 1e-4); the linear head measured within
  seed noise (audit 2026-12-02).
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.data.stream import Experience
from lifelong.params import Param
from lifelong.strategies.base import NEW, Batch, Outputs, Segment, register
from lifelong.strategies.prototypes import (
    EPS,
    FeatureTap,
    Prototyped,
    augment,
    generator_from,
    ope_loss,
    supcon_loss,
    wrap,
)
from lifelong.strategies.replay import BUFFER_PARAMS, ReplayBase


def pair_probabilities(means: Tensor) -> tuple[Tensor, Tensor]:
    """All class pairs (i < j) of the rows of `means` and APF's probability of each: softmax(1 / distance)."""
    k = len(means)
    i, j = torch.triu_indices(k, k, offset=1, device=means.device)
    d = (means[i] - means[j]).norm(dim=1).clamp_min(EPS)
    return torch.stack([i, j], 1), F.softmax(1.0 / d, dim=0)


@register
class OnPro(ReplayBase):
    name = "onpro"
    task_free = True
    family = "prototype"
    composable = False
    description = "online prototype learning: prototype equilibrium + adaptive prototypical feedback (mixup)"
    params = {
        **BUFFER_PARAMS,
        "proto_temperature": Param(0.5, "temperature of the prototype equilibrium loss", low=0.0, low_open=True),
        "ins_temperature": Param(0.07, "temperature of the instance-wise contrastive loss", low=0.0,
                                 low_open=True),
        "mixup_base_rate": Param(0.75, "share of replayed rows mixed with a random partner", low=0.0, high=1.0),
        "mixup_p": Param(0.6, "probability that a mixup is applied", low=0.0, high=1.0),
        "mixup_alpha": Param(0.4, "Beta(alpha, alpha) of the confusable-pair mixup", low=0.0, low_open=True),
        "mixup_lower": Param(0.0, "lower bound of the random-partner mixup weight", low=0.0, high=1.0),
        "mixup_upper": Param(0.6, "upper bound of the random-partner mixup weight", low=0.0, high=1.0),
        "proj_dim": Param(128, "width of the projection space", low=1),
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        self.gen = generator_from(ctx.generator)
        self.rng = random.Random(int(torch.randint(2**62, (1,), generator=self.gen)))
        self.tap = FeatureTap()
        self.means: tuple[Tensor, Tensor] | None = None  # (classes, class means) of the last memory batch

    def adapt_model(self, model: nn.Module, exp: Experience) -> nn.Module:
        model = wrap(model, self.gen, self.hp["proj_dim"], self.ctx.stream.num_classes, prototypes=False)
        self.tap.attach(model)
        return model

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.ctx.stream[0].data.input_shape)

    def view(self, x: Tensor) -> Tensor:
        return augment(x, self.shape, self.gen, scale=(0.3, 1.0))

    def mix(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """APF: the replayed rows mixed (x_mix, y_a, y_b, lam)."""
        n = len(y)
        base = int(n * self.hp["mixup_base_rate"]) if self.means is not None else n
        partner = torch.randperm(base, generator=self.gen).to(y.device)
        on = (torch.rand(base, generator=self.gen) < self.hp["mixup_p"]).to(x.dtype)
        lo, hi = self.hp["mixup_lower"], self.hp["mixup_upper"]
        lam = (lo + (hi - lo) * torch.rand(base, generator=self.gen).to(x.dtype)) * on
        xs, ya, yb, lams = [x[:base]], [y[:base]], [y[:base][partner]], [lam.to(x.device)]
        xs[0] = (1 - lams[0].unsqueeze(1)) * x[:base] + lams[0].unsqueeze(1) * x[:base][partner]
        rest = n - base
        if rest > 0 and self.means is not None and len(self.means[0]) > 1:
            classes, means = self.means
            pairs, prob = pair_probabilities(means)
            pick = pairs[torch.multinomial(prob.cpu(), rest, replacement=True, generator=self.gen).to(pairs.device)]
            ca, cb = classes[pick[:, 0]], classes[pick[:, 1]]
            xa, xb = self.rows_of(ca), self.rows_of(cb)
            use = self.rng.random() <= self.hp["mixup_p"]
            beta = torch.tensor([self.rng.betavariate(self.hp["mixup_alpha"], self.hp["mixup_alpha"]) if use
                                 else 0.0 for _ in range(rest)], dtype=x.dtype, device=x.device)
            xs.append((1 - beta.unsqueeze(1)) * xa + beta.unsqueeze(1) * xb)
            ya.append(ca.to(y.device))
            yb.append(cb.to(y.device))
            lams.append(beta)
        elif rest > 0:
            xs.append(x[base:])
            ya.append(y[base:])
            yb.append(y[base:])
            lams.append(torch.zeros(rest, dtype=x.dtype, device=x.device))
        return torch.cat(xs), torch.cat(ya), torch.cat(yb), torch.cat(lams)

    def rows_of(self, classes: Tensor) -> Tensor:
        """One prepared memory row of each requested class, drawn uniformly among the memory's rows of it."""
        store = self.memory.store
        y = store["y"][:len(self.memory)]
        order = torch.argsort(y, stable=True)
        counts = torch.bincount(y, minlength=int(classes.max()) + 1)
        offsets = torch.cumsum(counts, 0) - counts
        c = classes.to(y.device)
        u = torch.rand(len(c), generator=self.gen).to(y.device)
        pick = order[offsets[c] + (u * counts[c]).long().clamp_max(counts[c] - 1)]
        return self.ctx.prepare(store["raw"].index_select(0, pick))

    def training_batch(self, batch: Batch) -> Batch:
        new = batch.new
        batch.add(f"{self.name}.view", Segment(self.view(new.x), new.y, task=new.task))
        old = self.replay()
        if old is not None:
            x_m = self.ctx.prepare(old["raw"])
            y_m = old["y"]
            batch.add(f"{self.name}.mem", Segment(x_m, y_m, task=self.ctx.task_of(y_m)))
            batch.add(f"{self.name}.memview", Segment(self.view(x_m), y_m, task=self.ctx.task_of(y_m)))
            if batch.experience > 0:
                xm, ya, yb, lam = self.mix(x_m, y_m)
                batch.add(f"{self.name}.mix", Segment(self.view(xm), ya, task=self.ctx.task_of(ya),
                                                      extras={"y2": yb, "lam": lam}))
        return batch

    def loss(self, batch: Batch, out: Outputs) -> Tensor:
        model: Prototyped = self.ctx.model  # type: ignore[assignment]
        self.tap.attach(model)
        h = self.tap.features(model, out.all, batch.x)

        def z_of(name: str) -> Tensor:
            return F.normalize(model.proj(h[out.slices[name]]), dim=1, eps=EPS)

        view = f"{self.name}.view"
        z, zv, y = z_of(NEW), z_of(view), batch.new.y
        t_ins, t_pro = self.hp["ins_temperature"], self.hp["proto_temperature"]
        loss = supcon_loss(torch.cat([z, zv]), torch.cat([y, y]), t_ins) + ope_loss(z, zv, y, t_pro)[0]
        mem = f"{self.name}.mem"
        if mem in batch:
            zm, zmv, ym = z_of(mem), z_of(f"{self.name}.memview"), batch[mem].y
            seen, means = ope_loss(zm, zmv, ym, t_pro)
            loss = loss + seen + supcon_loss(torch.cat([zm, zmv]), torch.cat([ym, ym]), t_ins)
            self.means = (torch.unique(ym, sorted=True), means.detach())
        mix = f"{self.name}.mix"
        if mix in batch:
            seg = batch[mix]
            logits = out[mix]
            lam = seg.extras["lam"]
            ce = ((1 - lam) * F.cross_entropy(logits, seg.y, reduction="none")
                  + lam * F.cross_entropy(logits, seg.extras["y2"], reduction="none")).mean()
        else:
            ce = self.ctx.cross_entropy(out[view], y)
        return loss + ce

    def after_step(self, batch: Batch, out: Outputs) -> None:
        self.tap.clear()

    def observe(self, batch: Batch, out: Outputs) -> None:
        self.memory.add(raw=batch.new.raw, y=batch.new.y)

    def state_dict(self) -> dict[str, Any]:
        means = None if self.means is None else list(self.means)
        return {**super().state_dict(), "gen": self.gen.get_state(), "rng": self.rng.getstate(), "means": means}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.gen.set_state(state["gen"])
        self.rng.setstate(state["rng"])
        self.means = None if state["means"] is None else (state["means"][0], state["means"][1])
