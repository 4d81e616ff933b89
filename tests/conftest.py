import pytest
import torch

from lifelong.training.config import RunConfig


@pytest.fixture
def digits_cfg():
    """A tiny, fast configuration on scikit-learn's digits (5 experiences x 2 classes)."""
    def make(**changes) -> RunConfig:
        base = {"scenario": "split-digits", "hidden": "32", "lr": 0.05, "batch_size": 16, "epochs": 2,
                "checkpoint_every": 7, "threads": 1}
        return RunConfig.from_dict({**base, **changes})
    return make


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)
