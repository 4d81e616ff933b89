"""View-batch model (Kang et al., CVPR 2025, "Do Your Best and Get Enough Rest for Continual Learning";
specification: methods.md section 8; authors' code: hankyul2/ViewBatchModel, `ViewBatchReplay` in
datasets/utils/continual_dataset.py, the view-batch SSL in models/icarl.py and the per-view augmentation in
utils/training.py).

    every step: B = the new batch, R = a reservoir draw of replay_batch_size samples (ER)
        each sample of B and R enters the step `repeats` (r) times: the sample itself (the anchor) and r - 1
            independently augmented views, all scored by the cross-entropy
        view-batch SSL (one-to-many): for each sample, with p_a = softmax(f(anchor)) held fixed,
            L_ssl = mean over all views v of KL(p_a || softmax(f(v)))
        L = CE(all rows) + ssl_weight * L_ssl; SGD step; then add B to the reservoir

Mapping of the paper's sampler: the authors repeat every index r times consecutively in one shuffled sequence
(`repeat_interleave(perm, r)`) and read one slice of length N per epoch, so a sample's r views share a batch and
it then rests for about r epochs. The engine here fixes the data order (every sample once per epoch) and the
batch size, so the r views are added to the step instead. With --batch-size B/r (and the same number of epochs)
each step holds B rows, a sample's r views are adjacent and it returns one epoch (r * N / B steps) later: the
paper's schedule and compute exactly, the r-epoch block being one engine epoch. With the same batch size a step
costs r times the rows.

Augmentation of a view: images (inputs of shape (C, H, W)): a random translation by up to `pad` pixels (the
uncovered border takes the value of a blank stored pixel) and a horizontal flip with probability 1/2, applied
to the prepared inputs in one vectorised gather (Mammoth's RandomCrop(padding) + RandomHorizontalFlip, the
authors' weak augmentation). Non-image data (vectors): the authors' own progressive noise (their `prog_aug=1`):
view k of r - 1 gets x + U[0, 1) * noise * k / (r - 1). augment=none keeps the views identical to the anchor.
All draws use ctx.generator.

Deviations:
- the anchor is the un-augmented sample (the library trains without augmentation); the authors' anchor is the
  first, weakly augmented view and their other views get strong augmentation (AutoAugment/RandAugment: not
  implemented, a separate ablation row of their Table 6);
- the authors find a sample's views as runs of equal labels in the batch (which merges neighbouring samples of
  one class); here the views are grouped by construction;
- their KL is F.kl_div's default 'mean' reduction (divided by the number of classes as well) and starts after
  epoch 5 of 50; here it is the true KL per view, from the first step. Their weight 1.0 equals ssl_weight =
  1 / (classes seen) here;
- the SSL softmax is over the whole head (the authors': the classes seen so far);
- the authors' runs use 4 repeats (`--aug-repeat 4`); the default here is 2 (4 measured within seed noise on
  split-fashion-mnist, audit 2026-12-02).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.strategies.base import NEW, Batch, Outputs, Segment, register
from lifelong.strategies.replay import BUFFER_PARAMS, ReplayBase

AUGMENTS = ("auto", "crop-flip", "noise", "none")


def translate_flip(x: Tensor, shape: tuple[int, int, int], shift: Tensor, flip: Tensor, blank: Tensor) -> Tensor:
    """Images `x` (N, C*H*W) moved by `shift` (N, 2: rows, columns) pixels and mirrored where `flip` (N,) is
    True; pixels moved in from outside take `blank` (C*H*W,)."""
    c, h, w = shape
    n = len(x)
    rows = torch.arange(h, device=x.device).unsqueeze(0) - shift[:, :1]  # (N, H): source row of each row
    cols = torch.arange(w, device=x.device).unsqueeze(0).expand(n, w)
    cols = torch.where(flip.unsqueeze(1), w - 1 - cols, cols) - shift[:, 1:]  # (N, W)
    valid = ((rows >= 0) & (rows < h)).unsqueeze(2) & ((cols >= 0) & (cols < w)).unsqueeze(1)  # (N, H, W)
    index = (rows.clamp(0, h - 1).unsqueeze(2) * w + cols.clamp(0, w - 1).unsqueeze(1)).reshape(n, 1, h * w)
    moved = x.reshape(n, c, h * w).gather(2, index.expand(n, c, h * w))
    blank = blank.reshape(1, c, h * w).expand(n, c, h * w)
    return torch.where(valid.reshape(n, 1, h * w), moved, blank).reshape(n, c * h * w)


def one_to_many_kl(anchor_logits: Tensor, view_logits: Tensor, repeats: int) -> Tensor:
    """Mean over views of KL(p_anchor || p_view), p = softmax, the anchor held fixed. `view_logits` holds the
    repeats - 1 views of every anchor row, sample-major (views of anchor i at rows i*(repeats-1) ...)."""
    p = F.softmax(anchor_logits.detach(), dim=1).repeat_interleave(repeats - 1, dim=0)
    log_p = torch.log(p.clamp_min(1e-30))
    return (p * (log_p - F.log_softmax(view_logits, dim=1))).sum(1).mean()


@register
class ViewBatch(ReplayBase):
    name = "view-batch"
    task_free = True
    description = "view-batch replay: r augmented views of every sample in one step, plus one-to-many KL between views"
    params = {
        **BUFFER_PARAMS,
        "repeats": Param(2, "views of each sample per step, the sample itself included (r; 1: ER)", low=1),
        "ssl_weight": Param(0.1, "weight of the view-batch SSL term (one-to-many KL)", low=0.0),
        "augment": Param("auto", "view augmentation: auto (images: crop-flip, vectors: noise), crop-flip, noise, "
                         "none", choices=AUGMENTS),
        "pad": Param(2, "crop-flip: largest translation in pixels", low=0),
        "noise": Param(0.2, "noise: amplitude of the uniform noise of the last view", low=0.0),
    }

    def setup(self, ctx) -> None:
        super().setup(ctx)
        data = ctx.stream[0].data
        self.shape = tuple(data.input_shape)
        kind = self.hp["augment"]
        if kind == "auto":
            kind = "crop-flip" if len(self.shape) == 3 else "noise"
        if kind == "crop-flip" and len(self.shape) != 3:
            raise LifelongError(f"view-batch: augment=crop-flip needs image inputs (channels, height, width), the "
                                f"data has inputs of shape {self.shape}: use augment=noise")
        self.kind = kind
        self._blank: Tensor | None = None

    def blank(self, raw: Tensor) -> Tensor:
        """A blank stored input, prepared: the value of pixels moved in from outside the image."""
        if self._blank is None or self._blank.device != raw.device:
            self._blank = self.ctx.prepare(raw.new_zeros((1, raw.shape[1])))[0]
        return self._blank

    def views(self, x: Tensor, raw: Tensor) -> Tensor:
        """repeats - 1 augmented views of each row of `x` (prepared inputs), sample-major."""
        r = self.hp["repeats"]
        v = x.repeat_interleave(r - 1, dim=0)
        g, n = self.ctx.generator, len(v)
        if self.kind == "crop-flip":
            p = self.hp["pad"]
            shift = torch.randint(-p, p + 1, (n, 2), generator=g).to(x.device)
            flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
            return translate_flip(v, self.shape, shift, flip, self.blank(raw))  # type: ignore[arg-type]
        if self.kind == "noise":
            level = torch.arange(1, r, dtype=x.dtype).repeat(len(x)).to(x.device) / (r - 1)
            u = torch.rand(v.shape, generator=g).to(device=x.device, dtype=x.dtype)
            return v + u * (self.hp["noise"] * level).unsqueeze(1)
        return v

    def add_views(self, batch: Batch, name: str, seg: Segment) -> None:
        vy = seg.y.repeat_interleave(self.hp["repeats"] - 1)
        views = Segment(self.views(seg.x, seg.raw), vy, task=self.ctx.task_of(vy), scored=True)
        batch.add(name, views)

    def training_batch(self, batch: Batch) -> Batch:
        old = self.replay()
        if old is not None:
            batch.add(self.name, self.ctx.segment(old["raw"], old["y"], scored=True))
        if self.hp["repeats"] > 1:
            self.add_views(batch, f"{self.name}.views", batch.new)
            if old is not None:
                self.add_views(batch, f"{self.name}.replay_views", batch[self.name])
        return batch

    def penalty(self, batch: Batch, out: Outputs) -> Tensor | None:
        r, w = self.hp["repeats"], self.hp["ssl_weight"]
        if r == 1 or w == 0:
            return None
        pairs = [(NEW, f"{self.name}.views")]
        if self.name in batch:
            pairs.append((self.name, f"{self.name}.replay_views"))
        counts = [len(batch[a]) for a, _ in pairs]
        terms = [one_to_many_kl(out[a], out[v], r) for a, v in pairs]
        return w * sum(t * c for t, c in zip(terms, counts, strict=True)) / math.fsum(counts)

    def observe(self, batch: Batch, out: Outputs) -> None:
        self.memory.add(raw=batch.new.raw, y=batch.new.y)
