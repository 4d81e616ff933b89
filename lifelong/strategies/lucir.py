"""LUCIR (Hou et al. 2019): cosine normalisation, less-forget constraint and inter-class separation.

    head: logits = sigma * cos(w_c, f(x)), sigma learnable (the model's last Linear replaced once, at the
        first experience, by a cosine head over every class of the stream; unseen classes are masked)
    each later experience begins by imprinting the new classes' weights: w_c = normalised mean of the
        normalised features of class c under the current model
    each step (new batch + exemplars; C_o old classes, C_n new ones):
        L_ce  = CE(sigma * cos) over the seen classes
        L_dis = 1 - cos(f*(x), f(x)), f* the features of the model frozen at the last experience's end,
                weighted by lambda = lambda_base * sqrt(|C_o| / |C_n|)      (every row)
        L_mr  = mean over anchors x of an old class and its K hardest new classes k of
                max(0, m - cos(w_y, f(x)) + cos(w_k, f(x)))
        loss  = L_ce + lambda * L_dis + mr_weight * L_mr
    memory: 500 exemplars in all, herding on normalised features
    predict: the cosine head's logits over the seen classes (the paper's "CNN" classifier)

Authors' code read (hshustc/CVPR19_Incremental_Learning, class_incremental_cosine_imagenet.py and its
incremental_train_and_eval_MR_LF): lambda uses sqrt(old / new) (the code: lamda * sqrt(num_old_classes / nb_cl)),
the feature term is a cosine embedding loss against the old features, and the margin loss is the mean of
MarginRankingLoss over anchors x K with cosines before sigma; defaults lambda_base 5, K 2, m 0.5.

Deviations: the paper removes the last ReLU so that features can be negative; the built-in models keep theirs.
The head is one masked cosine layer over all classes instead of one that grows (same outputs on the seen
classes). Class-balanced finetuning (an optional last stage in the paper) is left out. Replay draws
`replay_batch_size` exemplars per step instead of mixing them into the epoch. The authors freeze the old classes'
cosine weights in every incremental phase (their fc1 parameter group has lr 0; class_incremental_cosine_cifar100.py
lines 327-331); here every seen class's row trains (restoring the old rows after each step changed nothing
measurable on split-digits, seeds 0-2: 94.4/94.8/94.6 against 93.7/95.3/94.2 %). New classes' weights are imprinted
as unit-norm mean features, the authors' as normalised means times the old weights' mean norm (the same outputs;
the step on a normalised weight scales with 1 / its norm). Memory: 500 exemplars in all, split evenly, where the
authors keep 20 per class (a memory that grows with the classes).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.analytic.features import last_linear, penultimate
from lifelong.data.stream import Experience
from lifelong.errors import LifelongError
from lifelong.models.heads import CosineLinear, cosine_head_for, replace_last_linear
from lifelong.params import Param
from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.exemplars import EXEMPLAR_PARAMS, ExemplarStrategy, class_means, features_of


def margin_ranking(cos: Tensor, y: Tensor, anchors: Tensor, new_classes: list[int], k: int, margin: float) -> Tensor:
    """LUCIR's L_mr: for each anchor row (a bool mask) and each of its k largest new-class cosines,
    max(0, margin - cos[y] + cos[new]), averaged over anchors x k (0 without anchors)."""
    if not bool(anchors.any()) or not new_classes:
        return cos.new_zeros(())
    c = cos[anchors]
    gt = c.gather(1, y[anchors].unsqueeze(1))
    cols = torch.as_tensor(new_classes, device=cos.device)
    hard = c[:, cols].topk(min(k, len(new_classes)), dim=1).values
    return F.relu(margin - gt + hard).mean()


@register
class LUCIR(ExemplarStrategy):
    name = "lucir"
    description = "LUCIR: cosine head, less-forget feature distillation, margin ranking on old classes, 500 exemplars"
    params = {
        **EXEMPLAR_PARAMS,
        "lambda_base": Param(5.0, "base weight of the less-forget (feature distillation) term", low=0.0),
        "margin": Param(0.5, "margin m of the ranking loss", low=0.0),
        "k": Param(2, "hard negative (new) classes per anchor", low=1),
        "mr_weight": Param(1.0, "weight of the margin ranking term", low=0.0),
    }

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.feats: Tensor | None = None  # input of the cosine head in the latest training forward

    def adapt_model(self, model: nn.Module, exp: Experience) -> nn.Module:
        if not isinstance(last_linear(model), CosineLinear):
            head = cosine_head_for(model)
            replace_last_linear(model, head)

            def capture(module: nn.Module, args: tuple[Tensor, ...]) -> None:
                # a plain function (deep copies of the model share it): only the live head in training records
                if module is head and module.training:
                    self.feats = args[0]
            head.register_forward_pre_hook(capture)
        return model

    def teacher_shell(self) -> nn.Module:
        shell = super().teacher_shell()
        if not isinstance(last_linear(shell), CosineLinear):
            replace_last_linear(shell, cosine_head_for(shell))
        return shell

    @property
    def head(self) -> CosineLinear:
        return last_linear(self.ctx.model)  # type: ignore[return-value]

    def begin_experience(self, exp: Experience) -> None:
        super().begin_experience(exp)
        if not self.old or not self.current:
            return
        labels = exp.labels(exp.train_idx)
        keep = torch.isin(labels, torch.as_tensor(self.current, device=labels.device))
        feats = features_of(self.ctx.model, self.ctx.prepare, exp.raw(exp.train_idx[keep]))
        means = class_means(feats, labels[keep].to(feats.device), self.current)
        with torch.no_grad():
            self.head.weight[self.current] = means.to(self.head.weight)

    def loss(self, batch: Batch, out: Outputs) -> Tensor:
        names, logits, y = self.rows(batch, out)
        captured, self.feats = self.feats, None
        seen, old = self.seen, self.old
        ce = F.cross_entropy(logits.masked_fill(~self.class_mask(seen, logits.device), float("-inf")), y)
        if self.teacher is None or not old:
            return ce
        if captured is None or len(captured) != len(out.all):
            raise LifelongError("lucir: the model's training forward did not pass through its cosine head once")
        feats = torch.cat([captured[out.slices[n]] for n in names])
        x = torch.cat([batch[n].x for n in names])
        with torch.no_grad():
            ref = penultimate(self.teacher, x)
        new = self.current or sorted(set(y.tolist()) - set(old))
        lam = self.hp["lambda_base"] * math.sqrt(len(old) / max(1, len(new)))
        dist = (1 - F.cosine_similarity(feats, ref, dim=1)).mean()
        anchors = torch.isin(y, torch.as_tensor(old, device=y.device))
        mr = margin_ranking(self.head.cosine(feats), y, anchors, new, self.hp["k"], self.hp["margin"])
        return ce + lam * dist + self.hp["mr_weight"] * mr
