"""Small shared helpers, against numpy as the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from foolkit.utils import median


@pytest.mark.parametrize("values", [[0.9744, 0.9852], [3.0, 1.0, 2.0, 10.0], [5.0], list(range(11))])
def test_median_is_numpys_the_mean_of_the_middle_pair(values):
    """(torch.median takes the lower middle value: retrain's median elite confidence of ten
    classes was biased down.)"""
    t = torch.tensor(values, dtype=torch.float32)
    assert median(t) == pytest.approx(float(np.median(np.array(values, dtype=np.float32))), rel=1e-7)
    assert math.isnan(median(torch.zeros(0)))
