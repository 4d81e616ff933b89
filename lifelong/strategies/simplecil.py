"""SimpleCIL (Zhou et al., 2023): class prototypes of frozen features, cosine-similarity prediction."""

from __future__ import annotations

from lifelong.strategies.analytic import AnalyticStrategy, declared
from lifelong.strategies.base import register


@register
class SimpleCIL(AnalyticStrategy):
    """SimpleCIL (Zhou et al., "Revisiting class-incremental learning with pre-trained models", 2023).

    Algorithm (after the optional SGD base phase, which stands in for the pre-trained backbone; then frozen):
        for every experience: f = backbone(x) of its training samples (eval mode, no gradients)
        mu_c = mean of f over the samples of each class c           (the prototype replaces head row c)
        predict argmax_c cos(f(x), mu_c)                             (the authors' cosine classifier)
    No SGD after the base phase (`learns_by_sgd` False). Prototypes are the means of the unnormalised
    features, as in the authors' code; the cosine head's scale does not change the arg-max and is left out.
    APER's adapter (ADAM: fine-tuning a parameter-efficient module on the first experience and concatenating
    its features with the frozen model's) is not implemented: `base_experiences` trains the whole backbone
    by SGD instead, which is SimpleCIL with a backbone adapted on the first experience(s), not APER.
    A class seen in several experiences gets the mean over all its samples (the authors overwrite it).
    """

    name = "simplecil"
    kind = "simplecil"
    family = "prototype"
    description = "prototype classifier: class means of frozen features, cosine-similarity prediction"
    params = declared("simplecil")
