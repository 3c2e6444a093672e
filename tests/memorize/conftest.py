"""Memorisation tests train many tiny networks: one torch thread avoids thread synchronisation
dominating small matrix products on a shared CPU (the thread count is restored afterwards)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")  # module: set up before the module-scoped fixtures that train
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
