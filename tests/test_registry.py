"""Registry entries carry their own help text: `lifelong list` reads it from the registries."""

from __future__ import annotations

import pytest

from lifelong.data.datasets import DATASETS
from lifelong.errors import LifelongError
from lifelong.models.backbones import MODELS
from lifelong.registry import Registry
from lifelong.strategies import STRATEGIES


def test_help_given_described_or_docstring():
    reg: Registry[object] = Registry("thing")

    class Described:
        description = "from the description attribute"

    def documented() -> None:
        """First docstring line.

        More."""

    reg.add("given", object(), help="given at registration")
    reg.add("described", Described)
    reg.register("documented")(documented)
    reg.add("bare", lambda: None)
    assert [reg.help(n) for n in reg] == ["", "from the description attribute", "First docstring line.",
                                          "given at registration"]  # fmt: skip
    with pytest.raises(LifelongError, match="Did you mean 'given'"):
        reg.help("gven")


def test_builtin_registries_describe_every_entry():
    for reg in (DATASETS, MODELS, STRATEGIES):
        assert all(reg.help(name) for name in reg), reg.kind
    assert MODELS.help("resnet18").startswith("reduced ResNet-18")
    assert STRATEGIES.help("er") == STRATEGIES.get("er").description


def test_a_strategy_defined_again_replaces_itself_and_a_taken_or_inherited_name_is_one_line():
    from lifelong.errors import LifelongError
    from lifelong.strategies import STRATEGIES, Strategy, register

    def define():  # a notebook cell run twice: the same module and name
        @register
        class CellStrategy(Strategy):
            name = "test-cell-strategy"
        return CellStrategy

    try:
        first, second = define(), define()
        assert first is not second and STRATEGIES.get("test-cell-strategy") is second
    finally:  # other tests list every registered strategy
        STRATEGIES._items.pop("test-cell-strategy", None)
        STRATEGIES._help.pop("test-cell-strategy", None)
    with pytest.raises(LifelongError, match="'er' is already registered"):
        @register
        class Mine(Strategy):
            name = "er"
    with pytest.raises(LifelongError, match="NoName needs a name of its own"):
        @register
        class NoName(Strategy):
            pass


def test_a_strategy_that_cannot_be_combined_says_why_in_its_own_terms():
    from lifelong.errors import LifelongError
    from lifelong.strategies import make_strategy

    with pytest.raises(LifelongError, match="hat: its per-task unit masks gate the whole network"):
        make_strategy("hat+packnet", {})  # it said 'its loss and memory cover every row of the step'
    with pytest.raises(LifelongError, match="scr: its loss and memory cover every row of the step"):
        make_strategy("scr+er", {})
