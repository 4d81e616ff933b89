"""Datasets as in-memory tensors, adapters, and scenarios that turn them into streams of experiences."""

from lifelong.data.datasets import (
    DATASETS,
    ArrayDataset,
    from_hf_dataset,
    from_tensors,
    from_torch_dataset,
    load_dataset,
    register_dataset,
)
from lifelong.data.scenarios import make_stream, scenario_names
from lifelong.data.stream import Experience, Stream

__all__ = ["DATASETS", "ArrayDataset", "Experience", "Stream", "from_hf_dataset", "from_tensors",
           "from_torch_dataset", "load_dataset", "make_stream", "register_dataset", "scenario_names"]
