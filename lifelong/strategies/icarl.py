"""iCaRL (Rebuffi et al. 2017): herding exemplars, distillation with sigmoid outputs, nearest-mean-of-exemplars.

    UpdateRepresentation (each step, data D = new batch + a batch of exemplars):
        q_i^y = sigmoid(old model(x_i))_y for the old classes y (the model frozen at the last experience's end)
        target_i^y = [y == y_i] for the new classes y, q_i^y for the old ones
        loss = sum_y BCE(sigmoid(f(x_i))_y, target_i^y) over the seen classes, averaged over the rows
    end of experience: m = K / (classes seen); ReduceExemplarSet(m) for old classes; ConstructExemplarSet(m)
        by herding on L2-normalised features for the new classes (`lifelong.strategies.exemplars`)
    classify: y* = argmin_y || phi(x) - mu_y ||, mu_y the normalised mean of the normalised features of the
        exemplars of y, phi the normalised penultimate features of the current model

Loss: the paper's (and Mammoth's) sigmoid BCE with the old model's sigmoid outputs as old-class targets; PyCIL
instead uses softmax CE plus softmax KD at T=2, which is not what the paper describes. Exemplar rows get the
old model's targets on old classes and 0 on new classes, as in the paper. The BCE is summed over classes as in
the paper's box (Mammoth averages over classes too: a 1/classes smaller step at the same learning rate; so do
the authors' own Theano and TensorFlow scripts, srebuffi/iCaRL main_cifar_100_theano.py, averaging over all 100
outputs, unseen classes with target 0 included, at lr 2.0 and weight decay 1e-5: their step is about lr/100 of
this sum's per class). The authors' class means also average each exemplar's features with those of its
horizontally flipped copy; here they do not (flips are not an augmentation of every dataset).

Deviations: the paper trains on the union of the new data and the exemplars shuffled together; here each step
takes the engine's new batch plus `replay_batch_size` exemplars drawn uniformly. Class means are computed
with the current model whenever a prediction follows a training step (cached until the next step). Before
the first experience ends the memory is empty and the model's logits over the seen classes are used; in a
continual evaluation mid-experience the current classes have no exemplars yet and get no score (as in the
paper, where exemplars of new classes exist only once their experience ends). Herding never picks a sample
twice (see exemplars.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.analytic.features import penultimate
from lifelong.data.stream import Experience
from lifelong.strategies.base import Batch, Outputs, register
from lifelong.strategies.exemplars import ExemplarStrategy, class_means, features_of


@register
class ICaRL(ExemplarStrategy):
    name = "icarl"
    family = "prototype"
    description = "iCaRL: herding exemplars (500 in all), sigmoid distillation, nearest-mean-of-exemplars prediction"

    def __init__(self, **hp: Any) -> None:
        super().__init__(**hp)
        self.means: Tensor | None = None  # class means of the exemplars under the current weights (a cache)

    def loss(self, batch: Batch, out: Outputs) -> Tensor:
        _, logits, y = self.rows(batch, out)
        seen = self.seen
        target = torch.zeros_like(logits)
        target[torch.arange(len(y), device=y.device), y] = 1.0
        old = self.old
        if self.teacher is not None and old:
            with torch.no_grad():
                q = torch.sigmoid(self.ctx.forward(torch.cat([batch[n].x for n in self.own_segments(batch)]),
                                                   self.teacher))
            target[:, old] = q[:, old]
        cols = torch.as_tensor(seen, device=logits.device)
        bce = F.binary_cross_entropy_with_logits(logits[:, cols], target[:, cols], reduction="sum")
        return bce / len(y)

    def after_step(self, batch: Batch, out: Outputs) -> None:
        self.means = None

    def end_experience(self, exp: Experience) -> None:
        super().end_experience(exp)
        self.means = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.means = None

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        stored = self.memory.classes
        if not stored:
            return self.mask_unseen(model(x))
        if self.means is None:
            feats = features_of(model, self.ctx.prepare, self.memory.raw)
            self.means = class_means(feats, self.memory.y.to(feats.device), stored)
        phi = F.normalize(penultimate(model, x).float(), dim=1)
        scores = torch.full((len(x), self.ctx.stream.num_classes), float("-inf"), device=phi.device)
        scores[:, stored] = -torch.cdist(phi, self.means).pow(2)
        return scores
