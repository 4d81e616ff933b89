"""Reference points: joint training on everything at once (upper bound) and cumulative re-training."""

from __future__ import annotations

from lifelong.data.stream import Stream, merge
from lifelong.strategies.base import Strategy, register


@register
class Joint(Strategy):
    """Train once on the union of all experiences: the non-continual upper bound."""

    name = "joint"
    description = "train on all experiences at once (non-continual upper bound)"
    replaces_stream = True
    family = "reference"

    def adapt_stream(self, stream: Stream) -> Stream:
        return Stream(stream.name + "/joint", [merge(list(stream))], stream.num_classes,
                      task_aware=stream.task_aware, info=stream.info)


@register
class Cumulative(Strategy):
    """At experience i, train on the union of experiences 0..i (re-training with all data so far)."""

    name = "cumulative"
    description = "at each experience, train on all data seen so far"
    replaces_stream = True
    family = "reference"

    def adapt_stream(self, stream: Stream) -> Stream:
        exps = [merge(list(stream)[: i + 1], index=i) for i in range(len(stream))]
        return Stream(stream.name + "/cumulative", exps, stream.num_classes, task_aware=stream.task_aware,
                      info=stream.info)
