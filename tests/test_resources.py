import sys

import pytest
import torch

from lifelong.tracking.resources import peak_rss_mb, reset_peak_rss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak-RSS reset is Linux-only")
def test_peak_rss_reset_forgets_an_earlier_peak():
    big = torch.ones(40_000_000)  # 160 MB touched
    high = peak_rss_mb()
    del big
    assert reset_peak_rss()
    assert peak_rss_mb() < high - 100
